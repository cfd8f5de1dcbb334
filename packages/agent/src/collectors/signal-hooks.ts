import type { ActivitySignalReport } from '@dumont/protocol';
import { SingleFlight, formatSeconds, type GuardedOutcome } from './exec-bounded.js';

/**
 * Signal hooks: site-specific commands (`squeue -h -u alice | grep -q .`) that tell the server whether
 * the machine is in use, reported in each beat as `activity_signals`. Exit 0 is active, exit 1 idle;
 * anything else is `unavailable`, which the server counts as activity, so a broken hook can keep a
 * machine up but never hibernate one that is used.
 */

/** The protocol's pattern for a report key; a key it refuses would get the whole beat refused. */
export const SIGNAL_KEY_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
/** The protocol's limit on reports per beat. */
export const MAX_SIGNAL_HOOKS = 16;
export const MAX_SIGNAL_DETAIL = 256;
export const DEFAULT_SIGNAL_TIMEOUT_MS = 5000;
/** A hook's answer is one line; more output than this is the hook misbehaving, not information. */
const MAX_HOOK_OUTPUT_BYTES = 16 * 1024;
const STDERR_TAIL_CHARS = 200;

export interface SignalHook {
  key: string;
  command: string;
}

/** `KEY=COMMAND` as given to --signal-hook; throws an Error whose message is for the operator. */
export function parseSignalHook(text: string): SignalHook {
  const eq = text.indexOf('=');
  if (eq === -1) throw new Error(`--signal-hook must be KEY=COMMAND, got ${JSON.stringify(text)}`);
  const key = text.slice(0, eq).trim();
  const command = text.slice(eq + 1).trim();
  if (!SIGNAL_KEY_PATTERN.test(key)) {
    throw new Error(
      `--signal-hook key ${JSON.stringify(key)} is not valid: 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  if (command === '') throw new Error(`--signal-hook ${key}= has no command`);
  return { key, command };
}

/** Cuts by code points, so the server's length rule (which counts them) and ours agree. */
function clip(text: string, max: number): string {
  const chars = [...text];
  return chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : text;
}

const firstLine = (text: string) => text.split('\n').map((line) => line.trim()).find((line) => line !== '') ?? '';
const lastLines = (text: string) => {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > STDERR_TAIL_CHARS ? `…${flat.slice(flat.length - STDERR_TAIL_CHARS)}` : flat;
};

/** One hook's outcome as a report; only a plain exit 0 or 1 is an answer. */
export function reportOf(key: string, outcome: GuardedOutcome | 'deadline', timeoutMs: number): ActivitySignalReport {
  const unavailable = (detail: string): ActivitySignalReport => ({ key, state: 'unavailable', detail: clip(detail, MAX_SIGNAL_DETAIL) });
  if (outcome === 'deadline') return unavailable(`timed out after ${formatSeconds(timeoutMs)}`);
  switch (outcome.kind) {
    case 'exited': {
      if (outcome.signal) return unavailable(`killed by ${outcome.signal}`);
      if (outcome.code === 0 || outcome.code === 1) {
        return { key, state: outcome.code === 0 ? 'active' : 'idle', detail: clip(firstLine(outcome.stdout), MAX_SIGNAL_DETAIL) };
      }
      const said = lastLines(outcome.stderr);
      return unavailable(`exit ${outcome.code}${said ? `: ${said}` : ''}`);
    }
    case 'timeout':
      return unavailable(`timed out after ${formatSeconds(outcome.timeoutMs)}`);
    case 'aborted':
      return unavailable('stopped');
    case 'spawn-failed':
      return unavailable(`could not start /bin/sh: ${outcome.message}`);
    case 'busy':
      return unavailable(`still running since an earlier beat${outcome.pid === undefined ? '' : ` (pid ${outcome.pid})`}`);
  }
}

export interface SignalHookOptions {
  timeoutMs: number;
  /** Added to the agent's environment, with DUMONT_SIGNAL_KEY. */
  env?: NodeJS.ProcessEnv;
  /** Between SIGTERM and SIGKILL of a hook that timed out. */
  killGraceMs?: number;
}

/**
 * Runs every hook side by side, once per beat, and answers within the timeout whatever the hooks do: a
 * hook that ignores SIGTERM is still being killed when its report (timed out) is already on its way.
 * Each key has one run at a time, so a hook that cannot be killed (stuck in the kernel) is reported as
 * still running instead of being started again on every beat.
 */
export class SignalHookRunner {
  private readonly flights = new Map<string, SingleFlight>();

  constructor(
    readonly hooks: readonly SignalHook[],
    private readonly options: SignalHookOptions,
  ) {
    for (const hook of hooks) this.flights.set(hook.key, new SingleFlight());
  }

  async run(): Promise<ActivitySignalReport[]> {
    const { timeoutMs } = this.options;
    return Promise.all(
      this.hooks.map(async (hook) => {
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<'deadline'>((resolve) => {
          timer = setTimeout(() => resolve('deadline'), timeoutMs);
        });
        const run = this.flights.get(hook.key)!.run('/bin/sh', ['-c', hook.command], {
          timeoutMs,
          killGraceMs: this.options.killGraceMs,
          maxOutputBytes: MAX_HOOK_OUTPUT_BYTES,
          env: { ...process.env, ...this.options.env, DUMONT_SIGNAL_KEY: hook.key },
        });
        try {
          return reportOf(hook.key, await Promise.race([run, deadline]), timeoutMs);
        } finally {
          clearTimeout(timer);
        }
      }),
    );
  }
}
