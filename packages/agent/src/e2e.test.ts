import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { startAgent, stopAllAgents, type AgentProcess } from './test-support/agent-process.js';
import { ensureBuilt } from './test-support/ensure-built.js';
import { createFakeNvidiaSmi, gpuLine } from './test-support/fake-nvidia-smi.js';
import { waitFor } from './test-support/processes.js';
import { admin, FAST_LIFECYCLE_ENV, registerInstance as register } from './test-support/server-admin.js';

/**
 * The real agent process against the real server process, in real time with fractional durations.
 * The only stand-in is nvidia-smi: a small script whose output the test sets.
 */
const SERVER_ROOT = fileURLToPath(new URL('../../server/', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'dumont-e2e-'));
const servers: ServerProcess[] = [];
beforeAll(async () => {
  await ensureBuilt(SERVER_ROOT, join(SERVER_ROOT, 'dist', 'main.js'));
}, 180_000);
afterEach(async () => {
  await stopAllAgents();
  for (const s of servers.splice(0)) await s.stop();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function workspace(name: string) {
  const dir = join(tmp, name);
  mkdirSync(join(dir, 'jupyter'), { recursive: true });
  return { dir, smi: createFakeNvidiaSmi(join(dir, 'bin')), state: join(dir, 'state') };
}

const lines = (path: string) => (existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n').filter(Boolean) : []);

describe('agent + server, end to end', () => {
  it('85 % → active; 0 % → idle, countdown, hibernate command, hook, result → hibernated', async () => {
    const server = await startServerProcess({
      env: {
        ...FAST_LIFECYCLE_ENV,
        DUMONT_HIBERNATION_WARNING_SECONDS: '3',
      },
    });
    servers.push(server);
    const ws = workspace('lifecycle');
    const tokenFile = await register(server, 4242, ws.dir);
    ws.smi.set('gpus', { out: gpuLine(0, 85) + gpuLine(1, 0) });
    ws.smi.set('apps', { out: '31337, 20000, GPU-00000000-0000-0000-0000-000000000000\n' });

    const proof = join(ws.dir, 'hibernate-proof');
    const warned = join(ws.dir, 'warned');
    // A real hibernate hook saves a checkpoint; this one leaves a proof that it ran, and for which command.
    const hibernateHook = `echo "$DUMONT_COMMAND_ID" > ${proof}; echo checkpoint saved`;
    const agent: AgentProcess = await startAgent([
      '--instance-id', '4242', '--api-url', server.url, '--token-file', tokenFile,
      '--nvidia-smi', ws.smi.path, '--state-dir', ws.state,
      '--utmp-file', join(ws.dir, 'no-utmp'), '--jupyter-runtime-dir', join(ws.dir, 'jupyter'),
      '--hibernate-hook', hibernateHook, '--warning-hook', `echo "$DUMONT_HIBERNATE_IN_SECONDS" >> ${warned}`,
    ]);

    const detail = (id = 4242) => admin(server, 'GET', `/api/v1/agent/instances/${id}`);
    const active = await waitFor('status active', async () => ((await detail()).status === 'active' ? detail() : undefined), 15_000, 50);
    expect(active.gpu_metrics.utilization_percent).toBe(85);
    expect(active.activity.process_count).toBe(1);
    expect(active.agent_version).toBe('0.1.0');
    expect(active.gpus).toHaveLength(2);

    ws.smi.set('gpus', { out: gpuLine(0, 0) + gpuLine(1, 0) });
    ws.smi.set('apps', { out: '' });
    const seen: string[] = [];
    await waitFor('status hibernated', async () => {
      const status = (await detail()).status as string;
      if (seen.at(-1) !== status) seen.push(status);
      return status === 'hibernated';
    }, 30_000, 25);
    expect(seen).toEqual(['active', 'idle', 'hibernating', 'hibernated']);

    // The countdown reached the agent, which warned on each beat and ran the warning hook once.
    const countdown = agent.logs.filter((l) => typeof l.hibernate_in_seconds === 'number').map((l) => l.hibernate_in_seconds as number);
    expect(countdown.length).toBeGreaterThan(1);
    expect(countdown[0]).toBeGreaterThan(0);
    expect(lines(warned)).toHaveLength(1);

    // Once the server has the result, the agent sends nothing that would wake the instance.
    await agent.waitForLog('quiet after hibernation', (l) => l.msg === 'hibernation confirmed by the server: no beats while the machine is stopped', 10_000);
    await new Promise((r) => setTimeout(r, 1500)); // five beat intervals
    expect(agent.child.exitCode).toBeNull();

    // The hook ran once, for the command the server issued, and its result is what the server stored.
    const events = (await admin<{ events: Array<{ type: string; data: Record<string, unknown> }> }>(server, 'GET', '/api/v1/agent/instances/4242/events')).events;
    const types = events.map((e) => e.type).reverse();
    expect(types).toEqual(['registered', 'online', 'idle_detected', 'hibernation_scheduled', 'command_issued', 'command_delivered', 'command_succeeded', 'hibernated']);
    const commands = await admin<{ commands: Array<{ id: string; type: string; state: string; detail: string }> }>(server, 'GET', '/api/v1/agent/instances/4242/commands');
    expect(commands.commands).toMatchObject([{ type: 'hibernate', state: 'succeeded', detail: expect.stringContaining('checkpoint saved') }]);
    expect(lines(proof)).toEqual([commands.commands[0]!.id]);
    expect((await detail()).status).toBe('hibernated');
    expect(server.output()).not.toContain(readFileSync(tokenFile, 'utf8').trim());
  }, 60_000);

  it('one idle rule: a GPU at 7 % under a server rule of 10 %, the agent at its defaults, goes idle and hibernates through the hook', async () => {
    // The agent used to count a GPU at or above its own 5 % as activity: 7 % kept last_activity at
    // "now" on every beat and the server, whose rule says 7 % is idle, never saw the instance idle.
    const server = await startServerProcess({
      env: {
        DUMONT_IDLE_UTILIZATION_PERCENT: '10',
        ...FAST_LIFECYCLE_ENV,
      },
    });
    servers.push(server);
    const ws = workspace('two-rules');
    const tokenFile = await register(server, 4343, ws.dir);
    ws.smi.set('gpus', { out: gpuLine(0, 7) + gpuLine(1, 7) });
    ws.smi.set('apps', { out: '' });
    const proof = join(ws.dir, 'hibernate-proof');
    // No --idle-utilization-percent: the agent's defaults. The other flags keep the test away from
    // this machine's own logins and Jupyter servers.
    await startAgent([
      '--instance-id', '4343', '--api-url', server.url, '--token-file', tokenFile,
      '--nvidia-smi', ws.smi.path, '--state-dir', ws.state,
      '--utmp-file', join(ws.dir, 'no-utmp'), '--jupyter-runtime-dir', join(ws.dir, 'jupyter'),
      '--hibernate-hook', `echo "$DUMONT_COMMAND_ID $DUMONT_COMMAND_ARGS" >> ${proof}; echo checkpoint saved`,
    ]);

    const detail = () => admin(server, 'GET', '/api/v1/agent/instances/4343');
    const seen: string[] = [];
    await waitFor('status hibernated', async () => {
      const status = (await detail()).status as string;
      if (seen.at(-1) !== status) seen.push(status);
      return status === 'hibernated';
    }, 30_000, 25);
    expect(seen).toContain('idle');
    const commands = await admin<{ commands: Array<{ id: string; type: string; state: string; detail: string }> }>(server, 'GET', '/api/v1/agent/instances/4343/commands');
    expect(commands.commands).toMatchObject([{ type: 'hibernate', state: 'succeeded', detail: expect.stringContaining('checkpoint saved') }]);
    // The hook ran once, for that command, and the command carried the server's rule.
    const [ran] = lines(proof);
    expect(lines(proof)).toHaveLength(1);
    expect(ran!.split(' ')[0]).toBe(commands.commands[0]!.id);
    expect(JSON.parse(ran!.slice(ran!.indexOf(' ') + 1))).toMatchObject({ idle_utilization_percent: 10 });
  }, 60_000);

  it('the server goes down for a while and comes back: the agent keeps retrying and resumes', async () => {
    const port = await freePort();
    const dataDir = join(tmp, 'server-data');
    mkdirSync(dataDir);
    const env = { DUMONT_PORT: String(port), DUMONT_HEARTBEAT_INTERVAL_SECONDS: '0.2', DUMONT_OFFLINE_AFTER_SECONDS: '30', DUMONT_SWEEP_INTERVAL_MS: '50' };
    const first = await startServerProcess({ env, dataDir });
    const ws = workspace('outage');
    const tokenFile = await register(first, 5151, ws.dir);
    ws.smi.set('gpus', { out: gpuLine(0, 60) });
    ws.smi.set('apps', { out: '' });
    const agent = await startAgent([
      '--instance-id', '5151', '--api-url', first.url, '--token-file', tokenFile, '--nvidia-smi', ws.smi.path, '--state-dir', ws.state,
      '--utmp-file', join(ws.dir, 'no-utmp'), '--jupyter-runtime-dir', join(ws.dir, 'jupyter'), '--max-backoff-seconds', '1',
    ]);
    await waitFor('status active', async () => (await admin(first, 'GET', '/api/v1/agent/instances/5151')).status === 'active', 15_000, 50);

    await first.stop(); // the API is down
    await agent.waitForLog('three failed beats', () => agent.logs.filter((l) => typeof l.attempt === 'number').length >= 3, 15_000);

    const second = await startServerProcess({ env: { ...env, DUMONT_ADMIN_KEY: first.adminKey }, dataDir });
    servers.push(second);
    await agent.waitForLog('the agent back', (l) => l.msg === 'heartbeat delivered again', 15_000);
    const before = (await admin(second, 'GET', '/api/v1/agent/instances/5151')).heartbeat_count as number;
    await waitFor('more beats', async () => (await admin(second, 'GET', '/api/v1/agent/instances/5151')).heartbeat_count > before + 2, 10_000, 50);
    const failures = agent.logs.filter((l) => typeof l.attempt === 'number');
    expect(failures.every((l) => (l.retry_in_ms as number) <= 1000)).toBe(true);
    expect(agent.child.exitCode).toBeNull();
  }, 60_000);
});
