import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { HeartbeatRequest } from '@dumont/protocol';
import { recordFigure, scaled } from '../../server/src/test-support/reliability.js';
import { runAgent } from './agent.js';
import { parseCommandLine, resolveConfig } from './config.js';
import type { Clock } from './heartbeat/loop.js';
import { createLogger } from './log.js';
import { startAgent, stopAllAgents } from './test-support/agent-process.js';
import { createFakeNvidiaSmi, gpuLine, type FakeNvidiaSmi } from './test-support/fake-nvidia-smi.js';
import { nvidiaSmiFixture } from './test-support/fixtures.js';
import { killIfMatches, waitFor } from './test-support/processes.js';
import { heartbeatSchemaErrors } from './test-support/schema.js';
import { okReply, startStubApi, type Received, type Reply, type StubApi } from './test-support/stub-api.js';
import { makeUtmp } from './test-support/utmp-file.js';
import { Rng } from '../../simulator/src/prng.js';

/**
 * The agent under faults: nvidia-smi hanging, printing garbage, torn lines, driver errors, `[N/A]`;
 * the server down for an hour, answering 5xx, answering 429; a full state-dir disk; the wall clock
 * jumping. Each scenario checks that the agent keeps running, reports unknown as unknown (never 0 %),
 * recovers when the fault goes away, and refuses a hibernate command when a fresh reading is busy.
 *
 * The agent runs in this process with a clock the test moves (runAgent's injected clock): an hour of
 * outage takes no real hour, and a clock step is just a step. Everything else is real: the fake
 * nvidia-smi is an executable, the server a real HTTP server on loopback, hooks real shells. The full
 * disk needs a real process in its own mount namespace.
 */
const SUITE = 'Agent faults';
const TOKEN = 'agent-token-for-fault-tests-0123';
const tmp = mkdtempSync(join(tmpdir(), 'dumont-faults-'));
const figures = { scenarios: 0, beats: 0, unknownBeats: 0, zeroWhenUnknown: 0, recoveries: 0, refused: 0 };
const harnesses: Harness[] = [];
const apis: StubApi[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.stop();
  await stopAllAgents();
  for (const api of apis.splice(0)) await api.close();
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
  recordFigure({ suite: SUITE, figure: 'fault scenarios run', value: figures.scenarios });
  recordFigure({ suite: SUITE, figure: 'heartbeats sent', value: figures.beats });
  recordFigure({ suite: SUITE, figure: 'heartbeats sent while a GPU reading was unknown', value: figures.unknownBeats });
  recordFigure({ suite: SUITE, figure: 'heartbeats with a 0 % reading when the truth was unknown (must be 0)', value: figures.zeroWhenUnknown });
  recordFigure({ suite: SUITE, figure: 'recoveries after the fault went away', value: figures.recoveries });
  recordFigure({ suite: SUITE, figure: 'hibernate commands refused on a busy or unknown fresh reading', value: figures.refused });
});

/** Fault cycles per nvidia-smi scenario (fault, refusal, recovery). */
const CYCLES = scaled(1, 10);
/** Beats sent while each nvidia-smi fault lasts. */
const FAULT_BEATS = scaled(2, 20);

/**
 * Time travel: a sleep waits until the test moves the clock to its end. A step of the wall clock
 * (jump) leaves the pending sleeps as long as they were, as a real timer does.
 */
class TravelClock implements Clock {
  private sleepers: Array<{ at: number; wake: () => void }> = [];
  constructor(public t: number) {}
  now = () => this.t;
  sleep = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      if (signal.aborted) return resolve();
      const sleeper = {
        at: this.t + ms,
        wake: () => {
          this.sleepers = this.sleepers.filter((s) => s !== sleeper);
          signal.removeEventListener('abort', sleeper.wake);
          resolve();
        },
      };
      signal.addEventListener('abort', sleeper.wake, { once: true });
      this.sleepers.push(sleeper);
    });
  get asleep(): boolean {
    return this.sleepers.length > 0;
  }
  wakeNext(): void {
    const next = [...this.sleepers].sort((a, b) => a.at - b.at)[0];
    if (!next) return;
    this.t = Math.max(this.t, next.at);
    next.wake();
  }
  jump(ms: number): void {
    this.t += ms;
    for (const s of this.sleepers) s.at += ms;
  }
}

/** Deterministic jitter, so that a failure replays the same way (the simulator's seeded generator). */
function seeded(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.next();
}

const IDLE = gpuLine(0, 0) + gpuLine(1, 0);
const BUSY = gpuLine(0, 0) + gpuLine(1, 95);
const RULE_10 = { idle_utilization_percent: 10, ignore_gpu_processes: false };

interface Beat {
  body: HeartbeatRequest;
  /** A fault that leaves some GPU reading unknown was on when this beat was collected. */
  unknownTruth: boolean;
}

/** A small server: answers by `mode`, delivers commands until their result comes back. */
function fleetServer(clock: { now(): number } | null) {
  const beats: Beat[] = [];
  const open: Array<{ id: string; type: string; args: Record<string, unknown>; onDeliver?: () => void }> = [];
  const results = new Map<string, { status: string; detail: string | null }>();
  const state = { mode: 'ok' as 'ok' | '503' | '429', retryAfterSeconds: 120, unknownTruth: false };
  const reply = (req: Received): Reply => {
    if (req.url !== '/api/v1/agent/status') return { status: 404 };
    const body = req.body as HeartbeatRequest;
    beats.push({ body, unknownTruth: state.unknownTruth });
    figures.beats += 1;
    if (state.mode === '503') return { status: 503, body: { error: 'unavailable', message: 'restarting' } };
    if (state.mode === '429') return { status: 429, headers: { 'retry-after': String(state.retryAfterSeconds) }, body: { error: 'rate_limited', message: 'slow down' } };
    for (const r of body.command_results ?? []) results.set(r.id, { status: r.status, detail: r.detail ?? null });
    const due = open.filter((c) => !results.has(c.id));
    for (const c of due) {
      c.onDeliver?.();
      c.onDeliver = undefined;
    }
    const issuedAt = new Date(clock ? clock.now() : Date.now()).toISOString();
    return okReply({ next_heartbeat_in: clock ? 30 : 0.1, commands: due.map(({ id, type, args }) => ({ id, type, args, issued_at: issuedAt })) });
  };
  return { beats, open, results, state, reply };
}

/** The checks every beat of every scenario must pass. */
function checkBeat({ body, unknownTruth }: Beat): void {
  expect(heartbeatSchemaErrors(body)).toEqual([]);
  if (!unknownTruth) return;
  figures.unknownBeats += 1;
  const zero = body.gpu_metrics?.utilization_percent === 0;
  if (zero) figures.zeroWhenUnknown += 1;
  expect(body.gpu_metrics?.utilization_percent, 'the host aggregate while a GPU reading is unknown').toBeNull();
}

interface Harness {
  dir: string;
  smi: FakeNvidiaSmi;
  clock: TravelClock;
  api: StubApi;
  server: ReturnType<typeof fleetServer>;
  logs: Array<Record<string, unknown>>;
  marker: string;
  running(): boolean;
  /** Lets the agent beat (moving the clock from sleep to sleep) until `probe` holds. */
  until<T>(what: string, probe: () => T | undefined | null | false, maxBeats?: number): Promise<T>;
  /** Delivers a command and waits for its result. */
  command(id: string, type: string, args?: Record<string, unknown>, onDeliver?: () => void): Promise<{ status: string; detail: string | null }>;
  stop(): Promise<void>;
}

let n = 0;
async function inProcessAgent(flags: string[] = [], opts: { utmp?: boolean } = {}): Promise<Harness> {
  const dir = join(tmp, `agent-${n++}`);
  for (const sub of ['jupyter', 'proc', 'dev/pts']) mkdirSync(join(dir, sub), { recursive: true });
  const smi = createFakeNvidiaSmi(join(dir, 'bin'));
  smi.set('gpus', { out: IDLE });
  smi.set('apps', { out: '' });
  const clock = new TravelClock(Date.now());
  const server = fleetServer(clock);
  const api = await startStubApi(server.reply);
  const marker = join(dir, 'hook-ran');
  // A login whose terminal the test can "type" on (utimes), when asked for; /proc is the real one
  // then, since utmp entries are checked against live pids.
  let utmpFile = join(dir, 'no-utmp');
  if (opts.utmp) {
    utmpFile = join(dir, 'utmp');
    writeFileSync(join(dir, 'dev', 'pts', '3'), '');
    utimesSync(join(dir, 'dev', 'pts', '3'), new Date(clock.t - 600_000), new Date(clock.t - 600_000));
    writeFileSync(utmpFile, makeUtmp([{ type: 7, pid: process.pid, user: 'alice', line: 'pts/3', host: '10.0.0.5' }]));
  }
  const config = resolveConfig(
    parseCommandLine([
      '--nvidia-smi', smi.path, '--state-dir', join(dir, 'state'), '--utmp-file', utmpFile, '--jupyter-runtime-dir', join(dir, 'jupyter'),
      '--nvidia-smi-timeout-seconds', '5', '--hibernate-hook', `echo "$DUMONT_COMMAND_ID" >> ${marker}; echo checkpoint saved`,
      '--snapshot-hook', 'echo snapshot taken', ...flags,
    ]).values,
    {},
  );
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger({ write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>), now: clock.now, level: 'debug' });
  const signals = new EventEmitter();
  let exited = false;
  const done = runAgent(
    { ...config, instanceId: 7, apiUrl: api.url, token: TOKEN },
    { log, env: {}, clock, random: seeded(n), signals, paths: { proc: opts.utmp ? '/proc' : join(dir, 'proc'), dev: join(dir, 'dev'), passwd: '/etc/passwd' } },
  ).finally(() => (exited = true));

  const h: Harness = {
    dir, smi, clock, api, server, logs, marker,
    running: () => !exited,
    async until(what, probe, maxBeats = 400) {
      for (let wakes = 0; ; wakes++) {
        await waitFor(`the agent to sleep (before ${what})`, () => clock.asleep || exited, 20_000, 2);
        const value = probe();
        if (value) return value;
        if (exited) throw new Error(`the agent exited while waiting for ${what}`);
        if (wakes >= maxBeats) throw new Error(`no ${what} after ${maxBeats} beats`);
        clock.wakeNext();
      }
    },
    async command(id, type, args = {}, onDeliver) {
      server.open.push({ id, type, args, onDeliver });
      return h.until(`the result of ${id}`, () => server.results.get(id));
    },
    async stop() {
      if (exited) return;
      signals.emit('SIGTERM');
      // Stopping may sleep too (the grace of a running command, a last beat): keep time moving.
      await waitFor('the agent to stop', () => {
        if (clock.asleep) clock.wakeNext();
        return exited;
      }, 20_000, 5);
      await done;
      await api.close();
      for (const call of smi.calls()) killIfMatches(Number(call.split(' ')[0]), (c) => c.includes(smi.path), { group: true });
    },
  };
  harnesses.push(h);
  return h;
}

/** After the fault: beats known and idle again, then a busy fresh reading refuses a hibernation. */
async function recoverAndRefuseBusy(h: Harness, id: string): Promise<void> {
  h.smi.set('gpus', { out: IDLE });
  h.server.state.unknownTruth = false;
  const from = h.server.beats.length;
  await h.until('a beat with known idle GPUs', () => h.server.beats.slice(from).some((b) => b.body.gpu_metrics?.utilization_percent === 0 && b.body.collector_errors?.length === 0));
  figures.recoveries += 1;
  // The beat that brings the command is idle; between it and the hook, GPU 1 gets busy.
  const result = await h.command(id, 'hibernate', RULE_10, () => h.smi.set('gpus', { out: BUSY }));
  expect(result).toEqual({ status: 'failed', detail: 'refused: GPU 1 at 95% utilization (server rule: below 10%); the hook was not run' });
  figures.refused += 1;
  h.smi.set('gpus', { out: IDLE });
}

const hookRuns = (h: Harness) => (existsSync(h.marker) ? readFileSync(h.marker, 'utf8').trim().split('\n') : []);
const TORN = `${gpuLine(0, 0)}1, GPU-10000000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 97, 1024, 815\n`;

const NVIDIA_SMI_FAULTS: Array<[name: string, fault: Parameters<FakeNvidiaSmi['set']>[1], error: RegExp | null]> = [
  ['hangs (killed at the timeout)', { out: IDLE, sleep: 30 }, /timed out after 0\.3 s and was killed/],
  ['prints garbage', { out: '\u0000\u00ff#!@ garbage ###\n\u001b[31mnot a table\n' }, /no GPU in nvidia-smi output/],
  ['prints a torn line for GPU 1 (at 97 %)', { out: TORN }, /unexpected line \(6 fields, expected 8\)/],
  ['driver not loaded (exit 9)', { out: nvidiaSmiFixture('errors/err-driver-not-loaded-lyulyul-shine-cluster-50.txt'), exit: 9 }, /NVIDIA driver is not loaded/],
  ['driver/library version mismatch (exit 18)', { out: nvidiaSmiFixture('errors/err-nvml-version-mismatch-570-tinygrad-ogkm-47.txt'), exit: 18 }, /versions differ/],
  ['a GPU is lost (exit 15)', { out: nvidiaSmiFixture('errors/err-gpu-lost-marian-nmt-251.txt'), exit: 15 }, /fell off the bus/],
  ['no devices found, exit 0', { out: 'No devices were found\n', exit: 0 }, /sees no GPU/],
  ['utilization [N/A]', { out: gpuLine(0, '[N/A]') + gpuLine(1, 0) }, null],
];

describe('nvidia-smi faults: unknown is never 0 %, the agent keeps beating and recovers', () => {
  it.each(NVIDIA_SMI_FAULTS)('%s', async (name, fault, error) => {
    figures.scenarios += 1;
    const h = await inProcessAgent(['--nvidia-smi-timeout-seconds', '0.3']);
    await h.until('an idle beat', () => h.server.beats.length >= 1);
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      h.smi.set('gpus', fault);
      h.server.state.unknownTruth = true;
      const from = h.server.beats.length;
      await h.until(`${FAULT_BEATS} beats under the fault`, () => h.server.beats.length >= from + FAULT_BEATS);
      for (const beat of h.server.beats.slice(from)) {
        if (error) expect(beat.body.collector_errors?.map((e) => e.message).join('\n')).toMatch(error);
      }
      // The server would not hibernate on these beats; should it still send the command, the agent's
      // own fresh reading is just as unknown.
      const refused = await h.command(`${name}-${cycle}-unknown`, 'hibernate', RULE_10);
      expect(refused.status).toBe('failed');
      expect(refused.detail).toMatch(/^refused: (collector error \(nvidia-smi\)|GPU utilization unknown)/);
      figures.refused += 1;
      await recoverAndRefuseBusy(h, `${name}-${cycle}-busy`);
    }
    expect(hookRuns(h)).toEqual([]);
    h.server.beats.forEach(checkBeat);
    expect(h.running()).toBe(true);
    if (error) expect(h.logs.some((l) => l.msg === 'collector recovered')).toBe(true);
  });
});

describe('server faults (time-travelled)', () => {
  it('the server is down for an hour: the agent keeps trying, capped and jittered, and resumes', async () => {
    figures.scenarios += 1;
    const h = await inProcessAgent();
    await h.until('a first beat', () => h.server.beats.length >= 1);
    await h.api.close();
    const downAt = h.clock.t;
    const failures = () => h.logs.filter((l) => typeof l.attempt === 'number');
    await h.until('an hour of outage', () => h.clock.t >= downAt + scaled(1, 24) * 3_600_000, 10_000);
    const attempts = failures().map((l) => l.retry_in_ms as number);
    expect(attempts.length).toBeGreaterThan(10);
    expect(Math.max(...attempts)).toBeLessThanOrEqual(300_000); // --max-backoff-seconds
    expect(new Set(attempts).size).toBeGreaterThan(attempts.length / 2); // jittered, not a fixed rhythm
    expect(h.running()).toBe(true);

    await h.api.resume();
    await h.until('the agent back', () => h.logs.some((l) => l.msg === 'heartbeat delivered again'));
    figures.recoveries += 1;
    const back = h.server.beats.at(-1)!.body;
    expect(Date.parse(back.timestamp) - downAt).toBeGreaterThanOrEqual(3_600_000);
    await recoverAndRefuseBusy(h, 'after-outage');
    h.server.beats.forEach(checkBeat);
  });

  it('the server answers 503 for ten minutes: backoff, then a result made during the outage is delivered', async () => {
    figures.scenarios += 1;
    const h = await inProcessAgent();
    await h.until('a first beat', () => h.server.beats.length >= 1);
    // A command delivered just before the outage finishes during it; its result must survive it.
    h.server.open.push({ id: 'snap-1', type: 'snapshot', args: {}, onDeliver: () => (h.server.state.mode = '503') });
    const from = h.server.beats.length;
    const outageStart = h.clock.t;
    await h.until('ten minutes of 503', () => h.clock.t >= outageStart + 600_000);
    const during = h.server.beats.slice(from + 1);
    expect(during.length).toBeGreaterThan(3);
    expect(during.some((b) => b.body.command_results?.some((r) => r.id === 'snap-1'))).toBe(true);
    h.server.state.mode = 'ok';
    await h.until('the result delivered', () => h.server.results.get('snap-1'));
    expect(h.server.results.get('snap-1')).toEqual({ status: 'succeeded', detail: 'snapshot hook exited with code 0\n--- output ---\nsnapshot taken' });
    figures.recoveries += 1;
    await recoverAndRefuseBusy(h, 'after-503');
    h.server.beats.forEach(checkBeat);
  });

  it('the server answers 429 with Retry-After: the agent waits it out every time, then resumes its rhythm', async () => {
    figures.scenarios += 1;
    const h = await inProcessAgent();
    await h.until('a first beat', () => h.server.beats.length >= 1);
    h.server.state.mode = '429';
    const from = h.server.beats.length;
    await h.until('four limited beats', () => h.server.beats.length >= from + 4);
    const times = h.server.beats.slice(from).map((b) => Date.parse(b.body.timestamp));
    for (let i = 1; i < times.length; i++) {
      expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(120_000);
      expect(times[i]! - times[i - 1]!).toBeLessThanOrEqual(240_000);
    }
    h.server.state.mode = 'ok';
    await h.until('the agent back', () => h.logs.some((l) => l.msg === 'heartbeat delivered again'));
    const ok = h.server.beats.length;
    await h.until('two beats at the server’s interval', () => h.server.beats.length >= ok + 2);
    const [a, b] = h.server.beats.slice(ok).map((x) => Date.parse(x.body.timestamp));
    expect(b! - a!).toBeGreaterThanOrEqual(27_000);
    expect(b! - a!).toBeLessThanOrEqual(33_000);
    figures.recoveries += 1;
    await recoverAndRefuseBusy(h, 'after-429');
    h.server.beats.forEach(checkBeat);
  });
});

describe('the wall clock jumps', () => {
  it('forwards a day and back two: beats keep their rhythm, last_activity never lies ahead, hibernation judged right', async () => {
    figures.scenarios += 1;
    const h = await inProcessAgent([], { utmp: true });
    await h.until('two beats', () => h.server.beats.length >= 2);
    const DAY = 86_400_000;
    for (const step of [DAY, -2 * DAY]) {
      h.clock.jump(step);
      const from = h.server.beats.length;
      await h.until('three beats after the step', () => h.server.beats.length >= from + 3);
      const times = h.server.beats.slice(from).map((b) => Date.parse(b.body.timestamp));
      // Sleeps are timers, not wall-clock deadlines: no burst of beats, no day-long silence.
      for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeLessThanOrEqual(33_000);
    }
    for (const { body } of h.server.beats) {
      // The server reads a last_activity ahead of the beat as "active now", on every beat.
      expect(Date.parse(body.last_activity!)).toBeLessThanOrEqual(Date.parse(body.timestamp));
    }
    // The terminal was last used ten minutes before the steps: after them it is still at least that old.
    const last = h.server.beats.at(-1)!.body;
    expect(Date.parse(last.timestamp) - Date.parse(last.last_activity!)).toBeGreaterThan(600_000);
    figures.recoveries += 1;

    // No phantom activity from the steps: an idle machine hibernates; a busy one refuses.
    await recoverAndRefuseBusy(h, 'after-clock-steps');
    const idle = await h.command('hib-idle', 'hibernate', RULE_10);
    expect(idle).toMatchObject({ status: 'succeeded' });
    expect(hookRuns(h)).toEqual(['hib-idle']);
    h.server.beats.forEach(checkBeat);
  });
});

/** Whether this kernel lets an unprivileged user mount a tmpfs in a user+mount namespace. */
function namespacesAllowed(): { ok: true } | { ok: false; why: string } {
  const probe = join(tmp, 'ns-probe');
  mkdirSync(probe, { recursive: true });
  const r = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', 'mount -t tmpfs -o size=32k tmpfs "$1" && echo mounted', 'sh', probe], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return { ok: false, why: `unshare cannot run: ${r.error.message}` };
  return r.stdout.includes('mounted') ? { ok: true } : { ok: false, why: `unshare refused (exit ${r.status}): ${r.stderr.trim()}` };
}
const namespaces = namespacesAllowed();
if (!namespaces.ok) console.warn(`[${SUITE}] the full-disk scenario is skipped: ${namespaces.why}`);

describe('a full state-dir disk (ENOSPC, a 32 KiB tmpfs in a user+mount namespace)', () => {
  it.skipIf(!namespaces.ok)('commands are refused (never run unrecorded), beats go on, and it recovers when space is freed', async () => {
    figures.scenarios += 1;
    const dir = join(tmp, 'enospc');
    const state = join(dir, 'state');
    mkdirSync(join(dir, 'jupyter'), { recursive: true });
    mkdirSync(state, { recursive: true });
    const smi = createFakeNvidiaSmi(join(dir, 'bin'));
    smi.set('gpus', { out: IDLE });
    smi.set('apps', { out: '' });
    const server = fleetServer(null);
    const api = await startStubApi(server.reply);
    apis.push(api);
    const freed = join(dir, 'free');
    // The agent's state dir is a tmpfs filled to the last byte. A helper in the namespace frees it when
    // the test says so: the test itself cannot see that mount.
    const inNamespace = [
      'mount -t tmpfs -o size=32k tmpfs "$STATE" || exit 97',
      'dd if=/dev/zero of="$STATE/fill" bs=1k count=64 2>/dev/null',
      '(while [ ! -e "$FREED" ]; do sleep 0.05; done; rm -f "$STATE/fill") &',
      'exec "$@"',
    ].join('\n');
    const agent = await startAgent(
      [
        '--instance-id', '7', '--api-url', api.url, '--nvidia-smi', smi.path, '--state-dir', state, '--utmp-file', join(dir, 'no-utmp'),
        '--jupyter-runtime-dir', join(dir, 'jupyter'), '--max-backoff-seconds', '0.5', '--hibernated-quiet-seconds', '0.2',
        '--snapshot-hook', 'echo snapshot taken', '--hibernate-hook', 'echo checkpoint saved',
      ],
      { DUMONT_AGENT_TOKEN: TOKEN, STATE: state, FREED: freed },
      (argv) => ['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c', inNamespace, 'sh', ...argv],
    );
    const result = (id: string) => waitFor(`the result of ${id}`, () => server.results.get(id), 15_000);

    server.open.push({ id: 'snap-full', type: 'snapshot', args: {} });
    expect(await result('snap-full')).toEqual({
      status: 'failed',
      detail: expect.stringMatching(/^not run: the agent cannot record command ids \(cannot write .*commands\.json: ENOSPC: no space left on device/),
    });
    const before = server.beats.length;
    await waitFor('more beats', () => server.beats.length >= before + 3);
    expect(agent.child.exitCode).toBeNull();

    writeFileSync(freed, '');
    const freedAt = server.beats.length;
    await waitFor('the helper to free the disk (a few beats)', () => server.beats.length >= freedAt + 3);
    server.open.push({ id: 'snap-freed', type: 'snapshot', args: {} });
    expect(await result('snap-freed')).toEqual({ status: 'succeeded', detail: 'snapshot hook exited with code 0\n--- output ---\nsnapshot taken' });
    figures.recoveries += 1;
    server.open.push({ id: 'hib-busy', type: 'hibernate', args: RULE_10, onDeliver: () => smi.set('gpus', { out: BUSY }) });
    expect(await result('hib-busy')).toEqual({ status: 'failed', detail: 'refused: GPU 1 at 95% utilization (server rule: below 10%); the hook was not run' });
    figures.refused += 1;
    server.beats.forEach(checkBeat);
  });
});
