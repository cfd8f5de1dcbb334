import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HttpRecorder } from '../../server/src/test-support/http-recorder.js';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { JOURNAL_FILE, type JournalEntry } from './commands/journal.js';
import { startAgent, stopAllAgents } from './test-support/agent-process.js';
import { ensureAgentBuilt, ensureBuilt } from './test-support/ensure-built.js';
import { createFakeNvidiaSmi, gpuLine } from './test-support/fake-nvidia-smi.js';
import { isAlive, waitFor } from './test-support/processes.js';
import { FAST_LIFECYCLE_ENV } from './test-support/server-admin.js';

/**
 * The whole hibernate-and-wake round trip with real processes: the built agent, the built server
 * with the Vast.ai provider pointed at a recording HTTP server, a real hibernate hook. The machine
 * being stopped is the agent process being killed; the machine booting again is a new agent
 * process with the same configuration, token and state dir.
 */
const SERVER_ROOT = fileURLToPath(new URL('../../server/', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'dumont-e2e-wake-'));
const servers: ServerProcess[] = [];
const recorders: HttpRecorder[] = [];
beforeAll(async () => {
  await ensureBuilt(SERVER_ROOT, join(SERVER_ROOT, 'dist', 'main.js'));
  await ensureAgentBuilt();
}, 180_000);
afterEach(async () => {
  await stopAllAgents();
  for (const s of servers.splice(0)) await s.stop();
  for (const r of recorders.splice(0)) await r.close();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Detail {
  status: string;
  heartbeat_count: number;
  last_heartbeat: string | null;
  provider: { name: string; instance_id: string; state: string | null; last_error: string | null };
}

async function call<T = any>(server: ServerProcess, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${server.adminKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as T };
}

async function admin<T = any>(server: ServerProcess, method: string, path: string, body?: unknown): Promise<T> {
  const res = await call<T>(server, method, path, body);
  if (res.status >= 300) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

const lines = (path: string) => (existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n').filter(Boolean) : []);

const INSTANCE = 6161;
const VAST_ID = '9876543';
const VAST_KEY = 'vast-e2e-key-0123456789abcdef';
/** Far longer than the test: a beat the new process sends cannot come from this quiet period ending. */
const QUIET_SECONDS = 600;

describe('agent + server + Vast.ai provider, end to end', () => {
  it('idle → hook → provider stop → hibernated; machine stopped; wake → provider start → the rebooted agent beats at once → active', async () => {
    const vast = await HttpRecorder.start();
    recorders.push(vast);
    const server = await startServerProcess({
      env: {
        DUMONT_PROVIDER: 'vast',
        DUMONT_VAST_API_URL: vast.url,
        DUMONT_VAST_API_KEY: VAST_KEY,
        DUMONT_OUTBOX_POLL_MS: '50',
        ...FAST_LIFECYCLE_ENV,
      },
    });
    servers.push(server);

    const dir = join(tmp, 'wake');
    mkdirSync(join(dir, 'jupyter'), { recursive: true });
    const smi = createFakeNvidiaSmi(join(dir, 'bin'));
    const stateDir = join(dir, 'state');
    const { agent_token } = await admin<{ agent_token: string }>(server, 'POST', '/api/v1/agent/instances', {
      instance_id: INSTANCE,
      hostname: 'vast-box',
      provider_instance_id: VAST_ID,
      price_per_hour: 2.5,
    });
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${agent_token}\n`);
    chmodSync(tokenFile, 0o600);

    const marker = join(dir, 'hibernate-marker');
    // The same command line both times: the rebooted machine starts the agent exactly as before.
    const agentArgs = [
      '--instance-id', String(INSTANCE), '--api-url', server.url, '--token-file', tokenFile,
      '--nvidia-smi', smi.path, '--state-dir', stateDir,
      '--utmp-file', join(dir, 'no-utmp'), '--jupyter-runtime-dir', join(dir, 'jupyter'),
      '--hibernate-hook', `echo "$DUMONT_COMMAND_ID" >> ${marker}; echo checkpoint saved`,
      '--hibernated-quiet-seconds', String(QUIET_SECONDS),
    ];
    const detail = () => admin<Detail>(server, 'GET', `/api/v1/agent/instances/${INSTANCE}`);
    const eventTypes = async () =>
      (await admin<{ events: Array<{ type: string }> }>(server, 'GET', `/api/v1/agent/instances/${INSTANCE}/events`)).events.map((e) => e.type).reverse();

    // The first stop is answered 429 with Retry-After: 1 (Vast.ai's rate limit), so the state between
    // the agent's confirmation and the provider's stop lasts long enough to be seen for sure.
    vast.replyOnce({ status: 429, headers: { 'content-type': 'application/json', 'retry-after': '1' }, body: '{"success": false, "msg": "slow down"}' });

    smi.set('gpus', { out: gpuLine(0, 0) });
    smi.set('apps', { out: '' });
    const first = await startAgent(agentArgs);

    // 1. Idle → the hook runs → the agent confirms → `hibernating`, provider stopping.
    const stopping = await waitFor('hibernating with the provider stopping', async () => {
      const d = await detail();
      return d.status === 'hibernating' && d.provider.state === 'stopping' && d.provider.last_error !== null ? d : undefined;
    }, 20_000, 20);
    expect(stopping.provider).toMatchObject({ name: 'vast', instance_id: VAST_ID, last_error: expect.stringContaining('HTTP 429') });
    const commands = await admin<{ commands: Array<{ id: string; type: string; state: string }> }>(server, 'GET', `/api/v1/agent/instances/${INSTANCE}/commands`);
    expect(commands.commands).toMatchObject([{ type: 'hibernate', state: 'succeeded' }]);
    expect(lines(marker)).toEqual([commands.commands[0]!.id]);
    await first.waitForLog('the quiet period', (l) => l.msg === 'hibernation confirmed by the server: no beats while the machine is stopped', 5000);
    expect(first.logs.find((l) => typeof l.quiet_ms === 'number')!.quiet_ms).toBe(QUIET_SECONDS * 1000);

    // 2. The retried stop reaches Vast.ai with the CLI's request → `hibernated`.
    await waitFor('hibernated', async () => (await detail()).status === 'hibernated', 10_000, 20);
    const stops = vast.requests.slice(0, 2);
    expect(vast.requests).toHaveLength(2);
    for (const r of stops) {
      expect(r.method).toBe('PUT');
      expect(r.path).toBe(`/api/v0/instances/${VAST_ID}/`);
      expect(r.headers.authorization).toBe(`Bearer ${VAST_KEY}`);
      expect(JSON.parse(r.body)).toEqual({ state: 'stopped' });
    }
    expect(stops[1]!.at - stops[0]!.at).toBeGreaterThanOrEqual(1000); // Retry-After honoured
    const hibernated = await detail();
    // (last_error keeps the 429 of the failed attempt until the next action is queued.)
    expect(hibernated.provider.state).toBe('stopped');

    // The agent stays quiet until the machine goes down: a beat now would count as a wake.
    const beatsWhenHibernated = hibernated.heartbeat_count;
    await new Promise((r) => setTimeout(r, 900)); // three beat intervals
    expect((await detail()).heartbeat_count).toBe(beatsWhenHibernated);
    expect((await detail()).status).toBe('hibernated');

    // 3. The machine is stopped: the agent dies with it, no goodbye.
    first.kill();
    await waitFor('the first agent to die', () => !isAlive(first.pid), 5000);
    const journal = JSON.parse(readFileSync(join(stateDir, JOURNAL_FILE), 'utf8')) as { entries: JournalEntry[] };
    // What survives the reboot: the executed hibernate command, its result acknowledged. Nothing in
    // it says "stay quiet" (the quiet period lived in the dead process's memory only).
    expect(journal.entries).toMatchObject([{ id: commands.commands[0]!.id, type: 'hibernate', state: 'done', status: 'succeeded', acked: true }]);
    expect(readdirSync(stateDir)).toEqual([JOURNAL_FILE]);

    // 4. Wake: 202, `waking`, Vast.ai asked to start the instance.
    const wake = await call(server, 'POST', `/api/v1/agent/instances/${INSTANCE}/wake`);
    expect(wake).toEqual({ status: 202, body: { success: true, instance_id: INSTANCE, status: 'waking' } });
    expect((await detail()).status).toBe('waking');
    const [start] = (await vast.waitFor(3, 5000)).slice(2);
    expect(start).toMatchObject({ method: 'PUT', path: `/api/v0/instances/${VAST_ID}/` });
    expect(start!.headers.authorization).toBe(`Bearer ${VAST_KEY}`);
    expect(JSON.parse(start!.body)).toEqual({ state: 'running' });
    const started = await waitFor('provider running', async () => {
      const d = await detail();
      return d.provider.state === 'running' ? d : undefined;
    }, 5000, 20);
    // Started by the provider, but no sign of life yet: still waking until the agent beats.
    expect(started.status).toBe('waking');
    expect(started.heartbeat_count).toBe(beatsWhenHibernated);

    // 5. The machine booted: a new agent process, same flags, token and state dir. Someone is at work.
    smi.set('gpus', { out: gpuLine(0, 85) });
    smi.set('apps', { out: '4242, 20000, GPU-00000000-0000-0000-0000-000000000000\n' });
    const bootAt = Date.now();
    const second = await startAgent(agentArgs);
    const woke = await waitFor('the first beat of the rebooted agent', async () => {
      const d = await detail();
      return d.heartbeat_count > beatsWhenHibernated ? d : undefined;
    }, 10_000, 20);
    const firstBeatMs = Date.parse(woke.last_heartbeat!) - bootAt;
    console.info(`rebooted agent: first beat recorded ${firstBeatMs} ms after the process was spawned (quiet period ${QUIET_SECONDS} s)`);
    // Node's start-up and one collection: a couple of seconds at most on a loaded box, not 600 s.
    expect(firstBeatMs).toBeLessThan(3000);
    expect(second.logs.find((l) => l.msg === 'dumont-agent starting')).toMatchObject({ pending_results: 0 });
    expect(second.logs.filter((l) => l.level === 'warn' || l.level === 'error')).toEqual([]);

    const active = await waitFor('active', async () => {
      const d = await detail();
      return d.status === 'active' ? d : undefined;
    }, 5000, 20);
    expect(active.provider).toMatchObject({ state: 'running', last_error: null });
    // It keeps beating at the server's interval.
    await waitFor('more beats', async () => (await detail()).heartbeat_count >= active.heartbeat_count + 2, 5000, 50);

    const types = await eventTypes();
    const tail = types.slice(types.indexOf('command_succeeded'));
    expect(tail).toEqual([
      'command_succeeded',
      'provider_stop_requested',
      'provider_stop_failed',
      'provider_stop_requested',
      'provider_stopped',
      'hibernated',
      'wake_requested',
      'provider_start_requested',
      'provider_started',
      'woke',
    ]);
    expect(lines(marker)).toHaveLength(1); // the hook never ran again
    expect(vast.requests).toHaveLength(3);
    expect(server.output()).not.toContain(VAST_KEY);
  }, 40_000);
});
