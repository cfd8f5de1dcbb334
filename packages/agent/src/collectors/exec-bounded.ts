import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Runs a program with a deadline, the way a daemon that must never wedge has to: the child leads its
 * own process group so a timeout can take down everything it started (a hook's `sleep`, nvidia-smi's
 * helpers), SIGTERM first, SIGKILL after a grace, and the caller gets a typed outcome, never a throw.
 */
export interface BoundedOptions {
  timeoutMs: number;
  /** Between SIGTERM and SIGKILL, and again before giving up on a process that will not die. */
  killGraceMs?: number;
  /** Output kept per stream (or in all, with `mergeOutput`). */
  maxOutputBytes?: number;
  /** Over the limit, keep the first bytes (parsers) or the last ones (hook logs). */
  keep?: 'head' | 'tail';
  /** Interleave stdout and stderr into `stdout` in arrival order (hook output tails). */
  mergeOutput?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Abort = stop now: the process group is killed as on a timeout. */
  signal?: AbortSignal;
  /** Called once the child exists (its pid), and once it has exited (reaped), whatever the outcome. */
  onSpawn?: (child: ChildProcess) => void;
  onExit?: () => void;
}

interface Output {
  stdout: string;
  stderr: string;
  /** Some output was dropped over `maxOutputBytes`. */
  truncated: boolean;
  durationMs: number;
}

export type BoundedOutcome =
  | ({ kind: 'exited'; code: number | null; signal: NodeJS.Signals | null } & Output)
  /** `reaped` is false when even SIGKILL did not end it in time (a process stuck in the kernel). */
  | ({ kind: 'timeout'; timeoutMs: number; reaped: boolean; escalated: boolean } & Output)
  | ({ kind: 'aborted'; reaped: boolean; escalated: boolean } & Output)
  | { kind: 'spawn-failed'; errno: string; message: string };

export const DEFAULT_KILL_GRACE_MS = 2000;
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;

class Capture {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(
    private readonly max: number,
    private readonly keep: 'head' | 'tail',
  ) {}

  push(chunk: Buffer): void {
    if (this.keep === 'head') {
      const room = this.max - this.size;
      if (room <= 0) {
        this.truncated = true;
        return;
      }
      if (chunk.length > room) this.truncated = true;
      const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
      this.chunks.push(part);
      this.size += part.length;
      return;
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size > 2 * this.max) this.compact();
  }

  private compact(): void {
    const all = Buffer.concat(this.chunks);
    if (all.length > this.max) this.truncated = true;
    const kept = all.length > this.max ? all.subarray(all.length - this.max) : all;
    this.chunks = [kept];
    this.size = kept.length;
  }

  text(): string {
    if (this.keep === 'tail') this.compact();
    let text = Buffer.concat(this.chunks).toString('utf8');
    // A tail cut can start inside a multi-byte character; drop the replacement characters it leaves.
    if (this.keep === 'tail' && this.truncated) text = text.replace(/^\uFFFD+/, '');
    return text;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the whole group is already gone.
  }
}

export function runBounded(file: string, args: readonly string[], options: BoundedOptions): Promise<BoundedOutcome> {
  const grace = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  const keep = options.keep ?? 'head';
  const started = performance.now();

  return new Promise((resolve) => {
    if (options.signal?.aborted) {
      options.onExit?.();
      resolve({ kind: 'aborted', reaped: true, escalated: false, stdout: '', stderr: '', truncated: false, durationMs: 0 });
      return;
    }
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        detached: true, // own process group (setsid), so the whole tree can be signalled
        stdio: ['ignore', 'pipe', 'pipe'],
        env: options.env ?? process.env,
        cwd: options.cwd,
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      resolve({ kind: 'spawn-failed', errno: e.code ?? 'EUNKNOWN', message: e.message });
      return;
    }

    const out = new Capture(max, keep);
    const err = options.mergeOutput ? out : new Capture(max, keep);
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));

    let settled = false;
    let exited = false;
    let exitCode: number | null = null;
    let exitSignal: NodeJS.Signals | null = null;
    let stopping: 'timeout' | 'aborted' | null = null;
    let escalated = false;
    const timers: NodeJS.Timeout[] = [];

    const finish = (outcome: BoundedOutcome) => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      options.signal?.removeEventListener('abort', onAbort);
      // Streams still open here belong to a straggler that inherited them; stop listening.
      child.stdout?.destroy();
      child.stderr?.destroy();
      resolve(outcome);
    };
    const output = (): Output => ({
      stdout: out.text(),
      stderr: options.mergeOutput ? '' : err.text(),
      truncated: out.truncated || err.truncated,
      durationMs: Math.round(performance.now() - started),
    });
    const finishStopped = () => {
      const base = { ...output(), reaped: exited, escalated };
      finish(stopping === 'timeout' ? { kind: 'timeout', timeoutMs: options.timeoutMs, ...base } : { kind: 'aborted', ...base });
    };

    const stop = (why: 'timeout' | 'aborted') => {
      if (settled || stopping) return;
      stopping = why;
      const pid = child.pid;
      if (pid === undefined) return;
      killGroup(pid, 'SIGTERM');
      timers.push(
        setTimeout(() => {
          escalated = true;
          killGroup(pid, 'SIGKILL');
          // SIGKILL cannot interrupt a process blocked in the kernel (a wedged driver): stop waiting.
          timers.push(setTimeout(finishStopped, grace));
        }, grace),
      );
    };
    const onAbort = () => stop('aborted');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    timers.push(setTimeout(() => stop('timeout'), options.timeoutMs));

    // The pid exists as soon as spawn() returns (undefined when the program could not be started).
    if (child.pid !== undefined) options.onSpawn?.(child);
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (child.pid === undefined) {
        options.onExit?.();
        finish({ kind: 'spawn-failed', errno: e.code ?? 'EUNKNOWN', message: e.message });
      }
    });
    child.once('exit', (code, signal) => {
      exited = true;
      exitCode = code;
      exitSignal = signal;
      options.onExit?.();
      if (stopping) return; // 'close' or the SIGKILL timer reports it
      // A background grandchild may hold the pipes open forever; give it a moment to flush, no more.
      timers.push(setTimeout(() => finish({ kind: 'exited', code, signal, ...output() }), Math.min(grace, 500)));
    });
    child.once('close', () => {
      if (stopping) {
        finishStopped();
        return;
      }
      if (exited) finish({ kind: 'exited', code: exitCode, signal: exitSignal, ...output() });
    });
  });
}

/** The outcome as one line for logs and command details. */
export function describeOutcome(outcome: BoundedOutcome, what: string): string {
  switch (outcome.kind) {
    case 'exited':
      return outcome.signal ? `${what} was killed by ${outcome.signal}` : `${what} exited with code ${outcome.code}`;
    case 'timeout':
      return `${what} timed out after ${formatSeconds(outcome.timeoutMs)} and was killed${outcome.reaped ? '' : ' (it has not exited yet)'}`;
    case 'aborted':
      return `${what} was stopped${outcome.reaped ? '' : ' (it has not exited yet)'}`;
    case 'spawn-failed':
      return outcome.errno === 'ENOENT' ? `${what} not found` : `${what} could not be started: ${outcome.message}`;
  }
}

export function formatSeconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

export type GuardedOutcome = BoundedOutcome | { kind: 'busy'; pid: number | undefined };

/**
 * At most one child at a time. The slot is freed when the child has really exited, not when its
 * caller gave up on it: a wedged driver can leave nvidia-smi unkillable in the kernel, and starting
 * another one every beat would pile up stuck processes.
 */
export class SingleFlight {
  private runningPid: number | undefined | null = null;

  get busy(): boolean {
    return this.runningPid !== null;
  }

  run(file: string, args: readonly string[], options: BoundedOptions): Promise<GuardedOutcome> {
    if (this.runningPid !== null) return Promise.resolve({ kind: 'busy', pid: this.runningPid });
    this.runningPid = undefined;
    return runBounded(file, args, {
      ...options,
      onSpawn: (child) => {
        if (this.runningPid === undefined) this.runningPid = child.pid;
        options.onSpawn?.(child);
      },
      onExit: () => {
        this.runningPid = null;
        options.onExit?.();
      },
    });
  }
}
