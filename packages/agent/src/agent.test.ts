import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { HeartbeatRequest } from '@dumont/protocol';
import { startAgent, stopAllAgents } from './test-support/agent-process.js';
import { createFakeNvidiaSmi, gpuLine, type FakeNvidiaSmi } from './test-support/fake-nvidia-smi.js';
import { nvidiaSmiFixture } from './test-support/fixtures.js';
import { isAlive, killIfMatches, pidsWhere, waitFor } from './test-support/processes.js';
import { heartbeatSchemaErrors } from './test-support/schema.js';
import { okReply, startStubApi, type Received, type StubApi } from './test-support/stub-api.js';
import { opensslAvailable, selfSignedCert } from './test-support/tls-cert.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-agent-'));
const apis: StubApi[] = [];
const fakes: FakeNvidiaSmi[] = [];
afterEach(async () => {
  await stopAllAgents();
  // A fake nvidia-smi still hanging when its agent was killed runs in its own process group.
  for (const smi of fakes.splice(0)) for (const call of smi.calls()) killIfMatches(Number(call.split(' ')[0]), (c) => c.includes(smi.path), { group: true });
  for (const api of apis.splice(0)) await api.close();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const TOKEN = 'agent-token-for-tests-0123456789';
let n = 0;
function workspace() {
  const dir = join(tmp, `ws-${n++}`);
  mkdirSync(join(dir, 'jupyter'), { recursive: true });
  const smi = createFakeNvidiaSmi(join(dir, 'bin'));
  fakes.push(smi);
  smi.set('gpus', { out: gpuLine(0, 85) + gpuLine(1, 0) });
  smi.set('apps', { out: '4242, 1000, GPU-00000000-0000-0000-0000-000000000000\n' });
  return { dir, smi, state: join(dir, 'state'), marker: join(dir, 'marker') };
}
async function stub(reply?: Parameters<typeof startStubApi>[0]) {
  const api = await startStubApi(reply);
  apis.push(api);
  return api;
}
/** Flags that keep a test agent fast and away from this machine's sessions and Jupyter servers. */
const quiet = (ws: ReturnType<typeof workspace>) => [
  '--state-dir', ws.state, '--utmp-file', join(ws.dir, 'no-utmp'), '--jupyter-runtime-dir', join(ws.dir, 'jupyter'),
  '--max-backoff-seconds', '0.5', '--request-timeout-seconds', '2', '--nvidia-smi-timeout-seconds', '5',
];
const beats = (api: StubApi) => api.received.filter((r) => r.url === '/api/v1/agent/status').map((r) => r.body as HeartbeatRequest);
const lines = (path: string) => (existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n').filter(Boolean) : []);

describe('dumont-agent run', () => {
  it('works as the seed writes it: --instance-id and --api-url, nvidia-smi from PATH', async () => {
    const ws = workspace();
    const api = await stub(() => okReply({ next_heartbeat_in: 0.2 }));
    const agent = await startAgent(['--instance-id', '456789', '--api-url', api.url], {
      DUMONT_AGENT_TOKEN: TOKEN,
      PATH: `${ws.smi.dir}:${process.env.PATH}`,
      HOME: ws.dir,
      STATE_DIRECTORY: ws.state, // what systemd's StateDirectory= sets; keeps the test out of /var/lib
    });
    await waitFor('two beats', () => beats(api).length >= 2);
    const first = api.received[0]!;
    expect(first.method).toBe('POST');
    expect(first.headers.authorization).toBe(`Bearer ${TOKEN}`);
    const body = beats(api)[0]!;
    expect(heartbeatSchemaErrors(body)).toEqual([]);
    expect(body).toMatchObject({
      instance_id: 456789,
      gpu_metrics: { utilization_percent: 85, memory_used_mb: 2048, memory_total_mb: 163118, temperature_celsius: 45, power_watts: 241 },
      process_count: 1,
      agent_version: '0.1.0',
      command_results: [],
      running_commands: [],
    });
    // A GPU at 85 % is a figure for the server to judge, not "activity now" (only a keystroke on this
    // host's own terminals could be, and none lands in the same millisecond).
    expect(body.last_activity).not.toBe(body.timestamp);
    expect(body.gpus).toHaveLength(2);
    agent.kill();
    expect(agent.logs.find((l) => l.msg === 'dumont-agent starting')).toMatchObject({ instance_id: 456789, token_source: 'DUMONT_AGENT_TOKEN', state_dir: ws.state });
    expect(JSON.stringify(agent.logs)).not.toContain(TOKEN);
  });

  it.skipIf(!opensslAvailable())('talks https, trusting a private CA given with NODE_EXTRA_CA_CERTS', async () => {
    const ws = workspace();
    const cert = selfSignedCert(ws.dir);
    const api = await startStubApi(() => okReply({ next_heartbeat_in: 0.2 }), cert);
    apis.push(api);
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws)], { DUMONT_AGENT_TOKEN: TOKEN, NODE_EXTRA_CA_CERTS: cert.certPath });
    await waitFor('a beat over https', () => beats(api).length >= 1);
    expect(api.url.startsWith('https://')).toBe(true);
    expect(beats(api)[0]!.instance_id).toBe(7);
  });

  it('never logs the token, even when the server echoes it back', async () => {
    const ws = workspace();
    const api = await stub(() => ({ status: 401, body: { error: 'unauthorized', message: `token ${TOKEN} is not valid` } }));
    const agent = await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws)], { DUMONT_AGENT_TOKEN: TOKEN });
    const warning = await agent.waitForLog('the 401 warning', (l) => typeof l.msg === 'string' && l.msg.includes('HTTP 401'));
    expect(warning.msg).toContain('[redacted]');
    expect(JSON.stringify(agent.logs)).not.toContain(TOKEN);
  });

  it('reports a failed driver as a collector error with unknown metrics, logged once, and keeps beating', async () => {
    const ws = workspace();
    ws.smi.set('gpus', { out: nvidiaSmiFixture('errors/err-driver-not-loaded-lyulyul-shine-cluster-50.txt'), exit: 9 });
    const api = await stub(() => okReply({ next_heartbeat_in: 0.1 }));
    const agent = await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws)], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('three beats', () => beats(api).length >= 3);
    const body = beats(api)[2]!;
    expect(body.gpu_metrics).toEqual({ utilization_percent: null, memory_used_mb: null, memory_total_mb: null, temperature_celsius: null, power_watts: null });
    expect(body.process_count).toBeNull();
    expect(body).not.toHaveProperty('gpus');
    expect(body.collector_errors).toEqual([
      { collector: 'nvidia-smi', message: expect.stringMatching(/^the NVIDIA driver is not loaded or not answering; nvidia-smi exited with code 9: NVIDIA-SMI has failed/) },
    ]);
    expect(agent.logs.filter((l) => l.msg === 'collector failed')).toHaveLength(1);

    ws.smi.set('gpus', { out: gpuLine(0, 3) }); // the driver comes back
    await agent.waitForLog('recovery', (l) => l.msg === 'collector recovered');
    await waitFor('a beat with metrics', () => beats(api).at(-1)?.gpu_metrics?.utilization_percent === 3);
  });

  it('a hung nvidia-smi is killed at its timeout and does not hold up the beats', async () => {
    const ws = workspace();
    ws.smi.set('gpus', { out: gpuLine(0, 50), sleep: 30 });
    const api = await stub(() => okReply({ next_heartbeat_in: 0.1 }));
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--nvidia-smi-timeout-seconds', '0.3'], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('two beats', () => beats(api).length >= 2);
    expect(beats(api)[0]!.collector_errors).toEqual([{ collector: 'nvidia-smi', message: `nvidia-smi (${ws.smi.path}) timed out after 0.3 s and was killed` }]);
    const fakePids = ws.smi.calls().map((c) => Number(c.split(' ')[0]));
    await waitFor('every hung nvidia-smi to be gone', () => fakePids.every((p) => !isAlive(p)), 5000);
  });
});

describe('commands', () => {
  /** Delivers `commands` on every response until a beat reports their result, like the server. */
  function deliverUntilReported(commands: Array<{ id: string; type: string; args?: Record<string, unknown> }>, over: Record<string, unknown> = {}) {
    const reported = new Set<string>();
    return (req: Received) => {
      for (const r of (req.body as HeartbeatRequest).command_results ?? []) reported.add(r.id);
      const open = commands.filter((c) => !reported.has(c.id)).map((c) => ({ args: {}, issued_at: new Date().toISOString(), ...c }));
      return okReply({ next_heartbeat_in: 0.2, commands: open, ...over });
    };
  }
  /** The GPUs at rest: what a host the server is about to hibernate looks like. */
  const idle = (ws: ReturnType<typeof workspace>, util = 0) => {
    ws.smi.set('gpus', { out: gpuLine(0, util) + gpuLine(1, 0) });
    ws.smi.set('apps', { out: '' });
  };
  /** Results in beats the server accepted. */
  const results = (api: StubApi) =>
    api.received.filter((r) => r.status === 200).flatMap((r) => (r.body as HeartbeatRequest).command_results ?? []);

  it('runs the hibernate hook once and reports the result until the server has it', async () => {
    const ws = workspace();
    idle(ws);
    const api = await stub(deliverUntilReported([{ id: 'cmd-1', type: 'hibernate' }]));
    const hook = `echo "$DUMONT_COMMAND_ID" >> ${ws.marker}; echo checkpoint saved`;
    // A short quiet period after the confirmed hibernation, so that later beats show what they carry.
    const args = ['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--hibernate-hook', hook, '--hibernated-quiet-seconds', '0.2'];
    await startAgent(args, { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the result', () => results(api).length > 0);
    expect(results(api)[0]).toEqual({ id: 'cmd-1', status: 'succeeded', detail: 'hibernate hook exited with code 0\n--- output ---\ncheckpoint saved' });
    await waitFor('two more beats', () => beats(api).length >= beats(api).findIndex((b) => b.command_results?.length) + 3);
    expect(lines(ws.marker)).toEqual(['cmd-1']);
    expect(results(api)).toHaveLength(1); // acknowledged: not sent again
  });

  it('refuses a hibernate command when a fresh reading finds the machine busy; the hook never runs', async () => {
    const ws = workspace(); // GPU 0 at 85 %, one GPU process
    const api = await stub(deliverUntilReported([{ id: 'h-busy', type: 'hibernate' }]));
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--hibernate-hook', `echo ran >> ${ws.marker}`], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the result', () => results(api).length > 0);
    expect(results(api)[0]).toEqual({ id: 'h-busy', status: 'failed', detail: 'refused: GPU 0 at 85% utilization (server rule: below 5%); the hook was not run' });
    expect(lines(ws.marker)).toEqual([]);
  });

  it('judges by the rule the server sends: 7 % under a server rule of 10 % hibernates, the agent left at its defaults', async () => {
    const ws = workspace();
    idle(ws, 7);
    const api = await stub(deliverUntilReported([{ id: 'h-7', type: 'hibernate', args: { idle_utilization_percent: 10, ignore_gpu_processes: false } }]));
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--hibernate-hook', `echo ran >> ${ws.marker}`], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the result', () => results(api).length > 0);
    expect(results(api)[0]).toMatchObject({ id: 'h-7', status: 'succeeded' });
    expect(lines(ws.marker)).toEqual(['ran']);
    expect(beats(api).every((b) => b.last_activity === null)).toBe(true); // 7 % was never "activity"
  });

  it('a machine that became busy during the hook is reported failed, not hibernated', async () => {
    const ws = workspace();
    idle(ws);
    const api = await stub(deliverUntilReported([{ id: 'h-late', type: 'hibernate' }]));
    // While the checkpoint is saved, someone starts a job on GPU 1.
    const busy = join(ws.dir, 'busy.out');
    writeFileSync(busy, gpuLine(0, 0) + gpuLine(1, 93));
    const hook = `cp ${busy} ${join(ws.smi.dir, 'gpus.out')}; echo checkpoint saved`;
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--hibernate-hook', hook], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the result', () => results(api).length > 0);
    expect(results(api)[0]).toEqual({
      id: 'h-late',
      status: 'failed',
      detail: 'the machine became busy during the hook; not hibernating: GPU 1 at 93% utilization (server rule: below 5%)\nhibernate hook exited with code 0\n--- output ---\ncheckpoint saved',
    });
  });

  it('names the running hook in every beat while it runs (running_commands), and no longer once it is done', async () => {
    const ws = workspace();
    idle(ws);
    const api = await stub(deliverUntilReported([{ id: 'h-slow', type: 'hibernate' }], { next_heartbeat_in: 0.1 }));
    const hook = `echo started >> ${ws.marker}; sleep 1.2`;
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--hibernate-hook', hook, '--hibernated-quiet-seconds', '0.2'], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the result and a beat after it', () => beats(api).findIndex((b) => b.command_results?.length) >= 0 && beats(api).length > beats(api).findIndex((b) => b.command_results?.length) + 1, 15_000);
    const running = beats(api).map((b) => b.running_commands);
    const withResult = beats(api).findIndex((b) => b.command_results?.length);
    expect(running.filter((r) => r?.includes('h-slow')).length).toBeGreaterThanOrEqual(2);
    expect(running.slice(withResult)).toEqual(running.slice(withResult).map(() => []));
    for (const body of beats(api)) expect(heartbeatSchemaErrors(body)).toEqual([]);
  });

  it('reports an unknown command and an unconfigured hook as failed', async () => {
    const ws = workspace();
    const api = await stub(deliverUntilReported([{ id: 'u1', type: 'teleport' }, { id: 's1', type: 'snapshot' }]));
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws)], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('both results', () => results(api).length >= 2);
    expect(results(api).map((r) => [r.id, r.status])).toEqual([['u1', 'failed'], ['s1', 'failed']]);
    expect(results(api)[1]!.detail).toMatch(/no snapshot hook is configured/);
  });

  it('never runs a command twice across a crash: the restarted agent reports it interrupted', async () => {
    const ws = workspace();
    const api = await stub(deliverUntilReported([{ id: 'cmd-crash', type: 'snapshot' }]));
    const hook = `echo run >> ${ws.marker}; sleep 30`;
    const args = ['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--snapshot-hook', hook];
    const first = await startAgent(args, { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the hook to start', () => lines(ws.marker).length === 1);
    first.kill(); // SIGKILL: no chance to record anything
    await first.exited;
    // The crash left the hook running in its own process group: end the group, as a reboot would.
    for (const pid of pidsWhere((c) => c.includes(hook))) killIfMatches(pid, (c) => c.includes(hook), { group: true });

    await startAgent(args, { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the interrupted result', () => results(api).length > 0);
    expect(results(api)[0]).toMatchObject({ id: 'cmd-crash', status: 'failed', detail: expect.stringMatching(/^interrupted:/) });
    expect(lines(ws.marker)).toEqual(['run']);
  });

  it('on SIGTERM lets a running hook finish, sends its result, and exits 0', async () => {
    const ws = workspace();
    const api = await stub(deliverUntilReported([{ id: 'snap', type: 'snapshot' }], { next_heartbeat_in: 30 }));
    const hook = `echo started >> ${ws.marker}; sleep 0.5; echo finished >> ${ws.marker}`;
    const agent = await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--snapshot-hook', hook], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the hook to start', () => lines(ws.marker).length === 1);
    process.kill(agent.pid, 'SIGTERM');
    expect(await agent.exited).toBe(0);
    expect(lines(ws.marker)).toEqual(['started', 'finished']);
    expect(results(api)).toEqual([{ id: 'snap', status: 'succeeded', detail: 'snapshot hook exited with code 0 (no output)' }]);
  });

  it('on SIGTERM abandons a hook that outlives the grace: killed, reported failed, exit 0', async () => {
    const ws = workspace();
    idle(ws);
    const api = await stub(deliverUntilReported([{ id: 'slow', type: 'hibernate' }], { next_heartbeat_in: 30 }));
    const hook = `echo started | tee -a ${ws.marker}; sleep 30`;
    const agent = await startAgent(
      ['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--hibernate-hook', hook, '--stop-grace-seconds', '0.3'],
      { DUMONT_AGENT_TOKEN: TOKEN },
    );
    await waitFor('the hook to start', () => lines(ws.marker).length === 1);
    process.kill(agent.pid, 'SIGTERM');
    expect(await agent.exited).toBe(0);
    expect(results(api)).toEqual([{ id: 'slow', status: 'failed', detail: 'hibernate hook abandoned: the agent is stopping; the hook was killed\n--- output ---\nstarted' }]);
    expect(pidsWhere((c) => c.includes(hook))).toEqual([]);
  });

  it('update installs with npm and exits non-zero; the next start reports the result', async () => {
    const ws = workspace();
    const npm = join(ws.dir, 'npm');
    writeFileSync(npm, `#!/bin/sh\necho "$*" >> ${ws.marker}\n`);
    chmodSync(npm, 0o755);
    // After delivering the command the API goes away, so the result cannot be flushed before the
    // exit: the next start must send it.
    let phase: 'deliver' | 'down' | 'up' = 'deliver';
    const reply = deliverUntilReported([{ id: 'up-1', type: 'update', args: { version: '0.2.0' } }]);
    const api = await stub((req) => {
      if (phase === 'down') return { status: 503, body: { error: 'unavailable', message: 'restarting' } };
      if (phase === 'deliver') phase = 'down';
      return reply(req);
    });
    const args = ['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--npm', npm];
    const first = await startAgent(args, { DUMONT_AGENT_TOKEN: TOKEN });
    expect(await first.exited).toBe(75);
    expect(lines(ws.marker)).toEqual(['install --global --no-audit --no-fund @dumont/agent@0.2.0']);
    expect(results(api)).toEqual([]); // the flush before exit was refused (503)
    expect(beats(api).at(-1)!.command_results).toHaveLength(1);
    phase = 'up';
    await startAgent(args, { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the result', () => results(api).length > 0);
    expect(results(api)[0]).toEqual({ id: 'up-1', status: 'succeeded', detail: 'installed @dumont/agent@0.2.0; restarting on it' });
    expect(lines(ws.marker)).toHaveLength(1);
  });

  it('warns with the countdown and runs the warning hook once per scheduled hibernation', async () => {
    const ws = workspace();
    const started = Date.now();
    const api = await stub(() => okReply({ next_heartbeat_in: 0.1, hibernate_in_seconds: Math.max(0, 60 - Math.round((Date.now() - started) / 1000)) }));
    const agent = await startAgent(
      ['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--warning-hook', `echo "$DUMONT_HIBERNATE_IN_SECONDS" >> ${ws.marker}`],
      { DUMONT_AGENT_TOKEN: TOKEN },
    );
    await waitFor('five countdown warnings', () => agent.logs.filter((l) => l.hibernate_in_seconds !== undefined).length >= 5);
    await waitFor('the warning hook', () => lines(ws.marker).length === 1);
    expect(Number(lines(ws.marker)[0])).toBeGreaterThan(55);
    expect(lines(ws.marker)).toHaveLength(1);
    expect(agent.logs.find((l) => l.hibernate_in_seconds !== undefined)).toMatchObject({ level: 'warn', msg: expect.stringMatching(/^hibernation in \d+ s$/) });
  });
});

describe('a dead API', () => {
  it('keeps retrying with jittered backoff while the API is down, and resumes when it is back', async () => {
    const ws = workspace();
    const api = await stub(() => okReply({ next_heartbeat_in: 0.2 }));
    await api.close(); // connections refused from the start
    const agent = await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws)], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('six failed attempts', () => agent.logs.filter((l) => l.attempt !== undefined).length >= 6, 20_000);
    const failures = agent.logs.filter((l) => l.attempt !== undefined);
    expect(failures.map((l) => l.attempt)).toEqual([1, 2, 3, 4, 5, 6].slice(0, failures.length));
    const delays = failures.map((l) => l.retry_in_ms as number);
    for (const [i, d] of delays.entries()) expect(d).toBeLessThanOrEqual(Math.min(500, 1000 * 2 ** i));
    expect(new Set(delays).size).toBeGreaterThan(1); // jittered, not a fixed schedule
    expect(isAlive(agent.pid)).toBe(true);

    await api.resume();
    await agent.waitForLog('recovery', (l) => l.msg === 'heartbeat delivered again', 10_000);
    await waitFor('regular beats again', () => beats(api).length >= 3);
  });

  it('honors 429 Retry-After', async () => {
    const ws = workspace();
    let limited = true;
    const api = await stub(() => (limited ? { status: 429, headers: { 'retry-after': '1' }, body: { error: 'rate_limited', message: 'slow down' } } : okReply({ next_heartbeat_in: 30 })));
    await startAgent(['--instance-id', '7', '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws)], { DUMONT_AGENT_TOKEN: TOKEN });
    await waitFor('the first attempt', () => api.received.length === 1);
    limited = false;
    await waitFor('the retry', () => api.received.length === 2, 10_000);
    expect(api.received[1]!.at - api.received[0]!.at).toBeGreaterThanOrEqual(1000);
  });

  it('a fleet that lost the API together does not come back together', async () => {
    const api = await stub(() => okReply({ next_heartbeat_in: 30 }));
    await api.close();
    const agents = await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        const ws = workspace();
        return { i, agent: await startAgent(['--instance-id', String(100 + i), '--api-url', api.url, '--nvidia-smi', ws.smi.path, ...quiet(ws), '--max-backoff-seconds', '2'], { DUMONT_AGENT_TOKEN: TOKEN }) };
      }),
    );
    await waitFor('every agent to be backing off', () => agents.every(({ agent }) => agent.logs.filter((l) => l.attempt !== undefined).length >= 4), 20_000);
    await api.resume();
    await waitFor('every agent back', () => new Set(beats(api).map((b) => b.instance_id)).size === 4, 15_000);
    const firstArrival = [100, 101, 102, 103].map((id) => api.received.find((r) => (r.body as HeartbeatRequest).instance_id === id)!.at);
    // Full jitter spreads the returns over the backoff window (up to 2 s here) instead of one instant.
    expect(Math.max(...firstArrival) - Math.min(...firstArrival)).toBeGreaterThan(50);
  });
});
