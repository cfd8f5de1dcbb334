import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createBeatCollector } from '../collect.js';
import { buildHeartbeat } from '../heartbeat/body.js';
import { createLogger } from '../log.js';
import { createFakeNvidiaSmi, gpuLine } from '../test-support/fake-nvidia-smi.js';
import { heartbeatSchemaErrors } from '../test-support/schema.js';
import { parseSignalHook, SignalHookRunner, type SignalHook } from './signal-hooks.js';

const dir = mkdtempSync(join(tmpdir(), 'dumont-signal-hooks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A real executable /bin/sh script; the hook command runs it. */
let scripts = 0;
const script = (body: string): string => {
  const path = join(dir, `hook-${scripts++}.sh`);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
};
const runOnce = (hooks: SignalHook[], timeoutMs = 2000, killGraceMs = 200) => new SignalHookRunner(hooks, { timeoutMs, killGraceMs }).run();
/** Running, not a zombie waiting for a reaper (in a container, PID 1 may be slow to reap orphans). */
const pidAlive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};
const waitFor = async (check: () => boolean, ms = 5000) => {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('SignalHookRunner', () => {
  it('exit 0 is active, exit 1 idle; the detail is the first line of stdout, trimmed', async () => {
    const reports = await runOnce([
      { key: 'slurm', command: script('printf "\\n  2 jobs running  \\nsecond line\\n"; exit 0') },
      { key: 'hub', command: script('echo "no kernels"; echo "noise" >&2; exit 1') },
      { key: 'quiet', command: 'exit 1' },
    ]);
    expect(reports).toEqual([
      { key: 'slurm', state: 'active', detail: '2 jobs running' },
      { key: 'hub', state: 'idle', detail: 'no kernels' },
      { key: 'quiet', state: 'idle', detail: '' },
    ]);
  });

  it('any other exit is unavailable, naming the code and the end of stderr', async () => {
    const [report] = await runOnce([{ key: 'broken', command: script('echo "squeue: cannot reach controller" >&2; exit 3') }]);
    expect(report).toEqual({ key: 'broken', state: 'unavailable', detail: 'exit 3: squeue: cannot reach controller' });
    const [bare] = await runOnce([{ key: 'bare', command: 'exit 2' }]);
    expect(bare).toEqual({ key: 'bare', state: 'unavailable', detail: 'exit 2' });
  });

  it('a missing command is unavailable (the shell says so)', async () => {
    const [report] = await runOnce([{ key: 'gone', command: join(dir, 'no-such-hook') }]);
    expect(report!.state).toBe('unavailable');
    expect(report!.detail).toMatch(/^exit 127: .*no-such-hook.*not found/);
  });

  it('a hook killed by a signal is unavailable', async () => {
    const [report] = await runOnce([{ key: 'self-kill', command: 'kill -9 $$' }]);
    expect(report).toEqual({ key: 'self-kill', state: 'unavailable', detail: 'killed by SIGKILL' });
  });

  it('a hook past the timeout is unavailable and its whole process group is killed', async () => {
    const pidFile = join(dir, 'sleeper.pid');
    const started = performance.now();
    const [report] = await runOnce([{ key: 'slow', command: script(`sleep 30 & echo $! > ${pidFile}; wait`) }], 300);
    expect(report).toEqual({ key: 'slow', state: 'unavailable', detail: 'timed out after 0.3 s' });
    expect(performance.now() - started).toBeLessThan(1500);
    const sleeper = Number(readFileSync(pidFile, 'utf8'));
    await waitFor(() => !pidAlive(sleeper));
  });

  it('answers at the timeout even when the hook ignores SIGTERM, and does not start it again while it lives', async () => {
    const pidFile = join(dir, 'stubborn.pid');
    const stubborn = script(`trap '' TERM; echo $$ > ${pidFile}; while :; do sleep 0.05; done`);
    // A long kill grace: the report must not wait for SIGKILL.
    // exec: the hook's own process is the one that ignores SIGTERM, not a shell in front of it.
    const runner = new SignalHookRunner([{ key: 'stubborn', command: `exec ${stubborn}` }], { timeoutMs: 300, killGraceMs: 1500 });
    const started = performance.now();
    expect(await runner.run()).toEqual([{ key: 'stubborn', state: 'unavailable', detail: 'timed out after 0.3 s' }]);
    expect(performance.now() - started).toBeLessThan(1000);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(pidAlive(pid)).toBe(true);
    rmSync(pidFile);

    const [again] = await runner.run();
    expect(again).toEqual({ key: 'stubborn', state: 'unavailable', detail: `still running since an earlier beat (pid ${pid})` });
    expect(existsSync(pidFile)).toBe(false);

    // SIGKILL after the grace ends it; then the hook runs again.
    await waitFor(() => !pidAlive(pid));
    await new Promise((r) => setTimeout(r, 50));
    expect((await runner.run())[0]!.detail).toBe('timed out after 0.3 s');
    expect(existsSync(pidFile)).toBe(true);
  });

  it('runs the hooks side by side, in the environment it is given', async () => {
    const started = performance.now();
    const reports = await new SignalHookRunner(
      [
        { key: 'a', command: 'sleep 0.4; echo "$DUMONT_SIGNAL_KEY $DUMONT_INSTANCE_ID"' },
        { key: 'b', command: 'sleep 0.4; echo "$DUMONT_SIGNAL_KEY"; exit 1' },
        { key: 'c', command: 'sleep 0.4; exit 0' },
      ],
      { timeoutMs: 3000, env: { DUMONT_INSTANCE_ID: '42' } },
    ).run();
    expect(performance.now() - started).toBeLessThan(1100);
    expect(reports).toEqual([
      { key: 'a', state: 'active', detail: 'a 42' },
      { key: 'b', state: 'idle', detail: 'b' },
      { key: 'c', state: 'active', detail: '' },
    ]);
  });

  it('cuts details to 256 characters, and the beat they go in is one the server accepts', async () => {
    const reports = await runOnce([
      { key: 'long', command: `printf '%0600d\\n' 0` },
      { key: 'long-err', command: `printf '%0600d\\n' 0 >&2; exit 4` },
      { key: 'uni', command: `printf 'é%.0s' $(seq 300)` },
    ]);
    for (const report of reports) expect([...report.detail!].length).toBeLessThanOrEqual(256);
    expect(reports[1]!.detail).toMatch(/^exit 4: …0+$/);
    const body = buildHeartbeat({
      instanceId: 1,
      hostname: 'h',
      now: Date.now(),
      agentVersion: '0.0.0',
      gpu: { gpus: null, processes: null, errors: [] },
      activity: { lastActivity: null, source: null, mark: 0, activeUsers: null, reasons: [] },
      commandResults: [],
      collectorErrors: [],
      runningCommands: [],
      activitySignals: reports,
    });
    expect(body.activity_signals).toHaveLength(3);
    expect(heartbeatSchemaErrors(body)).toEqual([]);
  });

  it('with no hooks, reports nothing', async () => {
    expect(await runOnce([])).toEqual([]);
  });
});

describe('parseSignalHook', () => {
  it('splits at the first "=", trimming both sides', () => {
    expect(parseSignalHook('slurm=squeue -h -u alice | grep -q .')).toEqual({ key: 'slurm', command: 'squeue -h -u alice | grep -q .' });
    expect(parseSignalHook(' jupyter-hub.v2 = test "$(curl -s x)" = busy ')).toEqual({ key: 'jupyter-hub.v2', command: 'test "$(curl -s x)" = busy' });
  });

  it('refuses keys the protocol refuses, and an empty command', () => {
    for (const bad of ['Slurm=x', '-a=x', '=x', 'a b=x', `${'k'.repeat(65)}=x`, 'a/b=x']) expect(() => parseSignalHook(bad), bad).toThrow(/--signal-hook key .* is not valid/);
    expect(() => parseSignalHook('slurm')).toThrow(/must be KEY=COMMAND/);
    expect(() => parseSignalHook('slurm=  ')).toThrow(/has no command/);
  });
});

describe('the beat collector', () => {
  it('puts the hooks’ results in the heartbeat body as activity_signals; none configured leaves it out', async () => {
    const root = join(dir, 'machine');
    const smi = createFakeNvidiaSmi(join(root, 'bin'));
    smi.set('gpus', { out: gpuLine(0, 0) });
    smi.set('apps', { out: '' });
    for (const sub of ['jupyter', 'proc', 'dev']) mkdirSync(join(root, sub), { recursive: true });
    const machine = { instanceId: 456789, nvidiaSmi: smi.path, nvidiaSmiTimeoutMs: 5000, utmpFile: join(root, 'no-utmp'), jupyterRuntimeDirs: [join(root, 'jupyter')] };
    const deps = { log: createLogger({ write: () => {} }), now: Date.now, env: {}, paths: { proc: join(root, 'proc'), dev: join(root, 'dev'), passwd: '/etc/passwd' } };

    const withHooks = createBeatCollector(
      { ...machine, signalHooks: [{ key: 'slurm', command: 'echo "1 job for $DUMONT_INSTANCE_ID"' }, { key: 'hub', command: 'sleep 5' }], signalTimeoutMs: 300 },
      deps,
    );
    const started = performance.now();
    const { body } = await withHooks.collect([]);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(body.activity_signals).toEqual([
      { key: 'slurm', state: 'active', detail: '1 job for 456789' },
      { key: 'hub', state: 'unavailable', detail: 'timed out after 0.3 s' },
    ]);
    expect(heartbeatSchemaErrors(body)).toEqual([]);

    const { body: plain } = await createBeatCollector(machine, deps).collect([]);
    expect(plain).not.toHaveProperty('activity_signals');
  });
});
