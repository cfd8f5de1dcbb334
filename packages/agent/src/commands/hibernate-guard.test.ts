import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_IDLE_RULE, idleRuleOf, type GpuSample } from '@dumont/protocol';
import { createBeatCollector, type Reading } from '../collect.js';
import type { ActivityReport } from '../collectors/activity.js';
import { buildHeartbeat } from '../heartbeat/body.js';
import { createLogger } from '../log.js';
import { createFakeNvidiaSmi, gpuLine } from '../test-support/fake-nvidia-smi.js';
import { makeUtmp } from '../test-support/utmp-file.js';
import { BUSY_DURING_HOOK, describeRule, guardedHibernate, judgeReading } from './hibernate-guard.js';
import { runHook } from './hooks.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-guard-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const NOW = Date.parse('2024-12-20T15:30:00Z');
const quietActivity: ActivityReport = { lastActivity: NOW - 3_600_000, source: "input on alice's terminal pts/3", mark: 4, activeUsers: 1, reasons: [] };
const gpu = (index: number, util: number | null): GpuSample => ({ index, uuid: `GPU-${index}`, name: 'NVIDIA H100', utilization_percent: util });

/** A reading as the collector builds it, from given facts (the pure half of the guard). */
function reading(over: { gpus?: GpuSample[] | null; processes?: number; errors?: Array<{ collector: string; message: string }>; activity?: Partial<ActivityReport> } = {}): Reading {
  const activity = { ...quietActivity, ...over.activity };
  const gpus = over.gpus === undefined ? [gpu(0, 0), gpu(1, 0)] : over.gpus;
  const processes = Array.from({ length: over.processes ?? 0 }, (_, i) => ({ pid: 100 + i, used_memory_mb: 10, gpu_uuid: 'GPU-0' }));
  const errors = over.errors ?? [];
  const body = buildHeartbeat({
    instanceId: 1, hostname: 'h', now: NOW, agentVersion: '0.1.0',
    gpu: { gpus, processes: gpus ? processes : null, errors }, activity, commandResults: [], collectorErrors: errors, runningCommands: [],
  });
  return { body, activity };
}

describe('judgeReading (pure)', () => {
  const rule10 = idleRuleOf({ idle_utilization_percent: 10, ignore_gpu_processes: false });

  it('refuses a busy GPU by the server’s rule, naming the GPU and the rule', () => {
    expect(judgeReading(reading({ gpus: [gpu(0, 0), gpu(1, 95)] }), rule10, quietActivity)).toEqual({
      quiet: false,
      reason: 'GPU 1 at 95% utilization (server rule: below 10%)',
    });
  });

  it('applies the threshold the command carries, not one of its own', () => {
    const at7 = reading({ gpus: [gpu(0, 7)] });
    expect(judgeReading(at7, rule10, quietActivity)).toEqual({ quiet: true });
    // An operator's hibernate command with {} args: the protocol's defaults (5 %).
    expect(judgeReading(at7, idleRuleOf({}), quietActivity)).toMatchObject({ quiet: false, reason: 'GPU 0 at 7% utilization (server rule: below 5%)' });
  });

  it('refuses on GPU processes unless the rule ignores them', () => {
    expect(judgeReading(reading({ processes: 2 }), rule10, quietActivity)).toMatchObject({ quiet: false, reason: expect.stringMatching(/^2 GPU process\(es\) running/) });
    const ignoring = idleRuleOf({ idle_utilization_percent: 10, ignore_gpu_processes: true });
    expect(describeRule(ignoring)).toBe('server rule: below 10%, GPU processes ignored');
    expect(judgeReading(reading({ processes: 2 }), ignoring, quietActivity)).toEqual({ quiet: true });
  });

  it('refuses when anything is unknown: a collector error, a failed nvidia-smi', () => {
    const torn = reading({ errors: [{ collector: 'nvidia-smi', message: 'unexpected line' }] });
    expect(judgeReading(torn, DEFAULT_IDLE_RULE, quietActivity)).toMatchObject({ quiet: false, reason: expect.stringMatching(/^collector error \(nvidia-smi\)/) });
    const failed = reading({ gpus: null, errors: [{ collector: 'nvidia-smi', message: 'timed out' }] });
    expect(judgeReading(failed, DEFAULT_IDLE_RULE, quietActivity).quiet).toBe(false);
  });

  it('refuses when activity moved forward since the delivering beat, saying what it was', () => {
    const typed = reading({ activity: { lastActivity: NOW - 2000, mark: 5, source: "input on alice's terminal pts/3" } });
    expect(judgeReading(typed, DEFAULT_IDLE_RULE, quietActivity)).toEqual({
      quiet: false,
      reason: "new activity since the server decided: input on alice's terminal pts/3 (last_activity 2024-12-20T14:30:00.000Z → 2024-12-20T15:29:58.000Z)",
    });
    expect(judgeReading(reading(), DEFAULT_IDLE_RULE, quietActivity)).toEqual({ quiet: true });
    expect(judgeReading(typed, DEFAULT_IDLE_RULE, null)).toEqual({ quiet: true }); // no delivering beat to compare with
  });
});

/** A real hibernate hook run, as the runner reports it. */
async function shell(command: string) {
  const { status, detail } = await runHook('hibernate', command, { timeoutMs: 10_000, env: {} });
  return { status, detail };
}

describe('guardedHibernate with the real collectors', () => {
  let n = 0;
  /** A machine: a fake nvidia-smi, a real utmp file with one live login on a tty the test can "type" on. */
  function machine() {
    const dir = join(tmp, `m-${n++}`);
    const dev = join(dir, 'dev');
    mkdirSync(join(dev, 'pts'), { recursive: true });
    mkdirSync(join(dir, 'jupyter'));
    const tty = join(dev, 'pts', '3');
    writeFileSync(tty, '');
    const typedAt = (t: number) => utimesSync(tty, new Date(t), new Date(t));
    typedAt(Date.now() - 3_600_000);
    const utmp = join(dir, 'utmp');
    writeFileSync(utmp, makeUtmp([{ type: 7, pid: process.pid, user: 'alice', line: 'pts/3', host: '10.0.0.5' }]));
    const smi = createFakeNvidiaSmi(join(dir, 'bin'));
    smi.set('gpus', { out: gpuLine(0, 0) + gpuLine(1, 0) });
    smi.set('apps', { out: '' });
    const collector = createBeatCollector(
      { instanceId: 1, nvidiaSmi: smi.path, nvidiaSmiTimeoutMs: 5000, utmpFile: utmp, jupyterRuntimeDirs: [join(dir, 'jupyter')] },
      { log: createLogger({ write: () => {} }), now: Date.now, env: {}, paths: { proc: '/proc', dev, passwd: '/etc/passwd' } },
    );
    const proof = join(dir, 'hook-ran');
    const hook = (script = '') => () => shell(`${script}echo ran > ${proof}; echo checkpoint saved`);
    return { dir, smi, tty, typedAt, collector, proof, hook, hookRan: () => existsSync(proof) };
  }
  const rule10 = idleRuleOf({ idle_utilization_percent: 10, ignore_gpu_processes: false });

  it('runs the hook when the fresh reading is as quiet as the beat the server decided on', async () => {
    const m = machine();
    const beat = await m.collector.collect([]);
    const outcome = await guardedHibernate({ rule: rule10, delivery: beat, sample: m.collector.sample, runHook: m.hook() });
    expect(outcome).toEqual({ status: 'succeeded', detail: 'hibernate hook exited with code 0\n--- output ---\ncheckpoint saved' });
    expect(m.hookRan()).toBe(true);
  });

  it('takes a fresh reading: a GPU busy since the delivering beat refuses the hook', async () => {
    const m = machine();
    const beat = await m.collector.collect([]); // idle: the server decided on this
    m.smi.set('gpus', { out: gpuLine(0, 0) + gpuLine(1, 95) });
    const outcome = await guardedHibernate({ rule: rule10, delivery: beat, sample: m.collector.sample, runHook: m.hook() });
    expect(outcome).toEqual({ status: 'failed', detail: 'refused: GPU 1 at 95% utilization (server rule: below 10%); the hook was not run' });
    expect(m.hookRan()).toBe(false);
  });

  it('refuses when someone typed since the delivering beat', async () => {
    const m = machine();
    const beat = await m.collector.collect([]);
    m.typedAt(Date.now() - 1000);
    const outcome = await guardedHibernate({ rule: rule10, delivery: beat, sample: m.collector.sample, runHook: m.hook() });
    expect(outcome.status).toBe('failed');
    expect(outcome.detail).toMatch(/^refused: new activity since the server decided: input on alice's terminal pts\/3 \(last_activity .* → .*\); the hook was not run$/);
    expect(m.hookRan()).toBe(false);
  });

  it('refuses when the fresh reading is unknown (nvidia-smi fails right then)', async () => {
    const m = machine();
    const beat = await m.collector.collect([]);
    m.smi.set('gpus', { out: 'NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver.\n', exit: 9 });
    const outcome = await guardedHibernate({ rule: rule10, delivery: beat, sample: m.collector.sample, runHook: m.hook() });
    expect(outcome.detail).toMatch(/^refused: collector error \(nvidia-smi\): its facts are unknown \(server rule: below 10%\)/);
    expect(m.hookRan()).toBe(false);
  });

  it('after a successful hook: a GPU that became busy during it means failed, not hibernated', async () => {
    const m = machine();
    const beat = await m.collector.collect([]);
    // Someone started a job while the checkpoint was being saved.
    const busy = join(m.dir, 'busy.out');
    writeFileSync(busy, gpuLine(0, 88) + gpuLine(1, 0));
    const startsJob = `cp ${busy} ${join(m.smi.dir, 'gpus.out')}; `;
    const outcome = await guardedHibernate({ rule: rule10, delivery: beat, sample: m.collector.sample, runHook: m.hook(startsJob) });
    expect(outcome).toEqual({
      status: 'failed',
      detail: `${BUSY_DURING_HOOK}: GPU 0 at 88% utilization (server rule: below 10%)\nhibernate hook exited with code 0\n--- output ---\ncheckpoint saved`,
    });
    expect(BUSY_DURING_HOOK).toBe('the machine became busy during the hook; not hibernating');
    expect(m.hookRan()).toBe(true);
  });

  it('after a successful hook: input during it means failed too', async () => {
    const m = machine();
    const beat = await m.collector.collect([]);
    const outcome = await guardedHibernate({ rule: rule10, delivery: beat, sample: m.collector.sample, runHook: m.hook(`touch -a ${m.tty}; `) });
    expect(outcome.status).toBe('failed');
    expect(outcome.detail).toMatch(new RegExp(`^${BUSY_DURING_HOOK}: new activity since the server decided: input on alice's terminal pts/3`));
  });

  it('a failed hook is reported as it is, with no second look', async () => {
    const m = machine();
    const beat = await m.collector.collect([]);
    const calls = () => m.smi.calls().length;
    const outcome = await guardedHibernate({
      rule: rule10, delivery: beat, sample: m.collector.sample,
      runHook: () => shell('echo disk full >&2; exit 3'),
    });
    expect(outcome).toEqual({ status: 'failed', detail: 'hibernate hook exited with code 3\n--- output ---\ndisk full' });
    expect(calls()).toBe(4); // the beat and the check before the hook, two queries each
  });

  it('a reading never overlaps another: a sample waits for a beat still reading a slow nvidia-smi', async () => {
    const m = machine();
    m.smi.set('gpus', { out: gpuLine(0, 0), sleep: 0.3 });
    const [beat, sample] = await Promise.all([m.collector.collect([]), m.collector.sample()]);
    expect(beat.body.collector_errors).toEqual([]);
    expect(sample.body.collector_errors).toEqual([]); // not "previous nvidia-smi has not exited yet"
    expect(readFileSync(join(m.smi.dir, 'calls.log'), 'utf8').trim().split('\n')).toHaveLength(4);
  });
});

describe('guardedHibernate, forced by an admin schedule', () => {
  const SCHEDULE = 'schedule: outside active hours (Europe/Berlin Mon-Fri 08:00-20:00)';
  const rule10 = idleRuleOf({ idle_utilization_percent: 10, ignore_gpu_processes: false });
  let n = 0;
  /** A machine whose GPU 1 is training (95 %) with a process on it, by the real collectors. */
  function busyMachine() {
    const dir = join(tmp, `forced-${n++}`);
    for (const sub of ['jupyter', 'proc', 'dev']) mkdirSync(join(dir, sub), { recursive: true });
    const smi = createFakeNvidiaSmi(join(dir, 'bin'));
    smi.set('gpus', { out: gpuLine(0, 0) + gpuLine(1, 95) });
    smi.set('apps', { out: '4242, 30000, GPU-10000000-0000-0000-0000-000000000000\n' });
    const collector = createBeatCollector(
      { instanceId: 1, nvidiaSmi: smi.path, nvidiaSmiTimeoutMs: 5000, utmpFile: join(dir, 'no-utmp'), jupyterRuntimeDirs: [join(dir, 'jupyter')] },
      { log: createLogger({ write: () => {} }), now: Date.now, env: {}, paths: { proc: join(dir, 'proc'), dev: join(dir, 'dev'), passwd: '/etc/passwd' } },
    );
    const proof = join(dir, 'hook-ran');
    return { dir, smi, collector, proof, hookRan: () => existsSync(proof) };
  }

  it('a busy machine without `forced` is refused as before', async () => {
    const m = busyMachine();
    const beat = await m.collector.collect([]);
    const outcome = await guardedHibernate({ rule: rule10, delivery: beat, sample: m.collector.sample, runHook: () => shell(`echo ran > ${m.proof}`), forced: null });
    expect(outcome).toEqual({ status: 'failed', detail: 'refused: GPU 1 at 95% utilization (server rule: below 10%); the hook was not run' });
    expect(m.hookRan()).toBe(false);
  });

  it('forced: the hook runs on the busy machine, succeeded, and the detail says why', async () => {
    const m = busyMachine();
    const beat = await m.collector.collect([]);
    const outcome = await guardedHibernate({
      rule: rule10, delivery: beat, sample: m.collector.sample,
      runHook: () => shell(`echo ran > ${m.proof}; echo checkpoint saved`),
      forced: { reason: SCHEDULE },
    });
    expect(outcome).toEqual({ status: 'succeeded', detail: `forced: ${SCHEDULE}\nhibernate hook exited with code 0\n--- output ---\ncheckpoint saved` });
    expect(m.hookRan()).toBe(true);
    expect(m.smi.calls()).toHaveLength(2); // the delivering beat only: no look before or after the hook
  });

  it('forced: no look after the hook either, and an unreadable machine does not stop it', async () => {
    const m = busyMachine();
    const beat = await m.collector.collect([]);
    m.smi.set('gpus', { out: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", exit: 9 });
    const outcome = await guardedHibernate({
      rule: rule10, delivery: beat, sample: m.collector.sample,
      runHook: () => shell(`echo ran > ${m.proof}; echo checkpoint saved`),
      forced: { reason: 'schedule: maximum uptime 72 h' },
    });
    expect(outcome.status).toBe('succeeded');
    expect(outcome.detail).toMatch(/^forced: schedule: maximum uptime 72 h\nhibernate hook exited with code 0/);
    expect(m.hookRan()).toBe(true);
  });

  it('forced: a failing hook still fails the command (the state was not saved)', async () => {
    const m = busyMachine();
    const beat = await m.collector.collect([]);
    const outcome = await guardedHibernate({
      rule: rule10, delivery: beat, sample: m.collector.sample,
      runHook: () => shell('echo disk full >&2; exit 3'),
      forced: { reason: SCHEDULE },
    });
    expect(outcome).toEqual({ status: 'failed', detail: `forced: ${SCHEDULE}\nhibernate hook exited with code 3\n--- output ---\ndisk full` });
  });
});
