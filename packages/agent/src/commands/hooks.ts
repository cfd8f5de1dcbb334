import { runBounded, describeOutcome, formatSeconds, type BoundedOutcome } from '../collectors/exec-bounded.js';

/**
 * Runs an operator's hook through `/bin/sh -c` in its own process group, with a deadline, and turns
 * what happened into a command result. Exit 0 is success, anything else failure; the last 4 KiB of
 * its output (stdout and stderr interleaved) go into the detail the server stores.
 */
export const HOOK_OUTPUT_TAIL_BYTES = 4096;

export interface HookRun {
  status: 'succeeded' | 'failed';
  detail: string;
  outcome: BoundedOutcome;
}

export interface HookOptions {
  timeoutMs: number;
  env: Record<string, string>;
  cwd?: string;
  signal?: AbortSignal;
  killGraceMs?: number;
}

export async function runHook(name: string, command: string, options: HookOptions): Promise<HookRun> {
  const outcome = await runBounded('/bin/sh', ['-c', command], {
    timeoutMs: options.timeoutMs,
    killGraceMs: options.killGraceMs,
    keep: 'tail',
    mergeOutput: true,
    maxOutputBytes: HOOK_OUTPUT_TAIL_BYTES,
    env: { ...process.env, ...options.env },
    cwd: options.cwd,
    signal: options.signal,
  });
  const what = `${name} hook`;
  const succeeded = outcome.kind === 'exited' && outcome.code === 0;
  let summary: string;
  if (outcome.kind === 'timeout') summary = `${what} timed out after ${formatSeconds(outcome.timeoutMs)} and was killed`;
  else if (outcome.kind === 'aborted') summary = `${what} abandoned: the agent is stopping; the hook was killed`;
  else summary = describeOutcome(outcome, what);
  let detail = summary;
  if (outcome.kind !== 'spawn-failed') {
    const text = outcome.stdout.trimEnd();
    detail += text === '' ? ' (no output)' : `\n--- output${outcome.truncated ? ' (last 4 KiB)' : ''} ---\n${text}`;
  }
  return { status: succeeded ? 'succeeded' : 'failed', detail, outcome };
}
