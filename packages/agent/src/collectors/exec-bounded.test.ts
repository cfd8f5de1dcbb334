import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive, killIfMatches, waitFor } from '../test-support/processes.js';
import { SingleFlight, runBounded } from './exec-bounded.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-exec-'));
const strays: number[] = [];
afterAll(() => {
  for (const pid of strays) killIfMatches(pid, (cmdline) => cmdline === 'sleep\x0030\x00');
  rmSync(tmp, { recursive: true, force: true });
});

const sh = (script: string, options: Partial<Parameters<typeof runBounded>[2]> = {}) =>
  runBounded('/bin/sh', ['-c', script], { timeoutMs: 10_000, killGraceMs: 300, ...options });

describe('runBounded', () => {
  it('returns exit code, stdout and stderr', async () => {
    const outcome = await sh('echo out; echo err >&2; exit 3');
    expect(outcome).toMatchObject({ kind: 'exited', code: 3, signal: null, stdout: 'out\n', stderr: 'err\n', truncated: false });
  });

  it('reports a missing program as spawn-failed ENOENT, without throwing', async () => {
    const outcome = await runBounded(join(tmp, 'no-such-binary'), [], { timeoutMs: 1000 });
    expect(outcome).toMatchObject({ kind: 'spawn-failed', errno: 'ENOENT' });
  });

  it('on timeout kills the whole process group, not just the leader', async () => {
    const pidFile = join(tmp, 'bg.pid');
    const outcome = await sh(`sleep 30 & echo $! > ${pidFile}; echo started; sleep 30`, { timeoutMs: 300 });
    expect(outcome).toMatchObject({ kind: 'timeout', timeoutMs: 300, reaped: true, escalated: false, stdout: 'started\n' });
    const background = Number(readFileSync(pidFile, 'utf8'));
    strays.push(background);
    await waitFor('the background sleep to die', () => !isAlive(background), 3000);
  });

  it('escalates to SIGKILL when the group ignores SIGTERM', async () => {
    const outcome = await sh('trap "" TERM; sleep 30', { timeoutMs: 200 });
    expect(outcome).toMatchObject({ kind: 'timeout', reaped: true, escalated: true });
  });

  it('does not wait for a background child that keeps the pipes open after the leader exited', async () => {
    const outcome = await sh('sleep 30 & echo $!; echo done', { timeoutMs: 20_000 });
    expect(outcome.kind).toBe('exited');
    if (outcome.kind !== 'exited') return;
    const [pid, done] = outcome.stdout.trim().split('\n');
    strays.push(Number(pid));
    expect(outcome.code).toBe(0);
    expect(done).toBe('done');
  });

  it('keeps the head of oversized output for parsers, flagged as truncated', async () => {
    const outcome = await sh('seq 1 100000', { maxOutputBytes: 100 });
    expect(outcome).toMatchObject({ kind: 'exited', code: 0, truncated: true });
    const all = `${Array.from({ length: 100_000 }, (_, i) => i + 1).join('\n')}\n`;
    if (outcome.kind === 'exited') expect(outcome.stdout).toBe(all.slice(0, 100));
  });

  it('keeps the tail of merged stdout and stderr for hook logs', async () => {
    const outcome = await sh('echo first; seq 1 20000; echo last-line >&2', { maxOutputBytes: 64, keep: 'tail', mergeOutput: true });
    expect(outcome.kind).toBe('exited');
    if (outcome.kind !== 'exited') return;
    expect(outcome.truncated).toBe(true);
    expect(outcome.stdout.length).toBeLessThanOrEqual(64);
    expect(outcome.stdout.endsWith('last-line\n')).toBe(true);
    expect(outcome.stdout).not.toContain('first');
  });

  it('stops the group when the caller aborts', async () => {
    const controller = new AbortController();
    const running = sh('sleep 30', { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    expect(await running).toMatchObject({ kind: 'aborted', reaped: true });
  });
});

describe('SingleFlight', () => {
  it('never starts a second child while the first has not exited', async () => {
    const flight = new SingleFlight();
    const log = join(tmp, 'flight.log');
    const first = flight.run('/bin/sh', ['-c', `echo run >> ${log}; sleep 0.5`], { timeoutMs: 10_000 });
    await waitFor('the first child to start', () => existsSync(log));
    const second = await flight.run('/bin/sh', ['-c', `echo run >> ${log}`], { timeoutMs: 10_000 });
    expect(second.kind).toBe('busy');
    expect((await first).kind).toBe('exited');
    expect(flight.busy).toBe(false);
    expect((await flight.run('/bin/sh', ['-c', `echo run >> ${log}`], { timeoutMs: 10_000 })).kind).toBe('exited');
    expect(readFileSync(log, 'utf8')).toBe('run\nrun\n');
  });

  it('frees the slot after a missing program', async () => {
    const flight = new SingleFlight();
    expect((await flight.run(join(tmp, 'missing'), [], { timeoutMs: 1000 })).kind).toBe('spawn-failed');
    expect(flight.busy).toBe(false);
  });
});
