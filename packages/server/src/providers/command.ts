import { spawn } from 'node:child_process';
import type { Provider, ProviderAction, ProviderOutcome } from './provider.js';

/** Enough of stderr to explain a failure; a chatty command cannot grow our memory past this. */
const STDERR_TAIL_BYTES = 4096;
const MESSAGE_CHARS = 300;
/** Between SIGTERM and SIGKILL: time for a cloud CLI to give up its request cleanly. */
const KILL_GRACE_MS = 2000;
/** After the command exits, how long a background child still holding stderr may delay the outcome. */
const STDERR_DRAIN_MS = 200;

/**
 * Reads a command from one environment variable: a JSON array of strings (`["aws","ec2",...]`), so an
 * argument may hold spaces, or else words split on whitespace. Never a shell: no quotes, no `$VAR`.
 */
export function parseCommandLine(value: string, variable: string): string[] {
  const trimmed = value.trim();
  if (trimmed === '') throw new Error(`${variable}: empty; expected a command such as ["aws","ec2","stop-instances"]`);
  let argv: string[];
  if (trimmed.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      throw new Error(`${variable}: starts with [ but is not a JSON array`);
    }
    if (!Array.isArray(parsed) || !parsed.every((word) => typeof word === 'string')) {
      throw new Error(`${variable}: must be a JSON array of strings`);
    }
    argv = parsed;
  } else {
    argv = trimmed.split(/\s+/);
  }
  if (argv.length === 0 || argv[0]!.trim() === '') throw new Error(`${variable}: the command (first word) is empty`);
  // spawn refuses NUL bytes anyway, but only at the first action; better to fail at boot.
  if (argv.some((word) => word.includes('\0'))) throw new Error(`${variable}: contains a NUL character`);
  return argv;
}

export interface CommandProviderOptions {
  stop: string[];
  /** null: instances can be hibernated, but waking one is left to the operator. */
  start: string[] | null;
  /** The environment the command inherits; the server's own by default. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Stops and starts machines with the operator's own command (a cloud CLI, a script), run without a
 * shell. It learns which machine from `DUMONT_*` variables, so nothing from an instance is ever parsed
 * as an argument.
 */
export function createCommandProvider(options: CommandProviderOptions): Provider {
  return {
    name: 'command',
    async execute(action: ProviderAction, timeoutMs: number): Promise<ProviderOutcome> {
      const argv = action.kind === 'stop' ? options.stop : options.start;
      if (argv === null) {
        return { ok: false, retryable: false, message: 'no start command configured (DUMONT_PROVIDER_START_COMMAND)' };
      }
      const env: NodeJS.ProcessEnv = {
        ...(options.env ?? process.env),
        DUMONT_INSTANCE_ID: String(action.instanceId),
        DUMONT_PROVIDER_INSTANCE_ID: action.providerInstanceId,
        DUMONT_HOSTNAME: action.hostname ?? '',
        DUMONT_ACTION: action.kind,
      };
      return runCommand(argv, env, timeoutMs);
    },
  };
}

function runCommand(argv: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ProviderOutcome> {
  return new Promise((resolve) => {
    const [file, ...args] = argv as [string, ...string[]];
    const stderr = new TailBuffer(STDERR_TAIL_BYTES);
    let settled = false;
    let timedOut = false;
    let exited = false;
    let timeoutTimer: NodeJS.Timeout | undefined;
    let drainTimer: NodeJS.Timeout | undefined;

    const settle = (outcome: ProviderOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timeoutTimer);
      clearTimeout(drainTimer);
      resolve(outcome);
    };

    let child: ReturnType<typeof spawn>;
    try {
      // detached: the command leads its own process group, so a timeout can end everything it started.
      child = spawn(file, args, { env, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (error) {
      settle(spawnFailure(file, error as NodeJS.ErrnoException));
      return;
    }

    child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (error: NodeJS.ErrnoException) => settle(spawnFailure(file, error)));

    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      const said = stderr.tail();
      if (timedOut) {
        settle({ ok: false, retryable: true, message: `timed out after ${seconds(timeoutMs)} s${said ? `: ${said}` : ''}` });
      } else if (code === 0) {
        settle({ ok: true });
      } else {
        const how = code !== null ? `exit ${code}` : `killed by ${signal ?? 'a signal'}`;
        settle({ ok: false, retryable: code === null || !isPermanentExit(code), message: `${how}${said ? `: ${said}` : ''}` });
      }
    };
    // 'close' waits for stderr to end, which a background child that inherited it can put off forever.
    child.on('close', finish);
    child.on('exit', (code, signal) => {
      exited = true;
      drainTimer = setTimeout(() => {
        child.stderr?.destroy();
        finish(code, signal);
      }, STDERR_DRAIN_MS);
    });

    timeoutTimer = setTimeout(() => {
      if (exited) return; // finished just in time; only its stderr is still being read
      timedOut = true;
      const group = child.pid;
      if (group === undefined) return; // never started: 'error' settles it
      signalGroup(group, 'SIGTERM');
      // Not cancelled when the leader exits: what it left behind in the group may ignore SIGTERM. The
      // group id is only free for reuse once the group is empty, and 2 s is far too short to cycle pids.
      setTimeout(() => {
        signalGroup(group, 'SIGKILL');
        settle({ ok: false, retryable: true, message: `timed out after ${seconds(timeoutMs)} s (killed)` });
      }, KILL_GRACE_MS);
    }, timeoutMs);
  });
}

function signalGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-group, signal);
  } catch {
    // ESRCH: the group is already gone, which is what we wanted.
  }
}

function spawnFailure(file: string, error: NodeJS.ErrnoException): ProviderOutcome {
  // A missing or non-executable command stays so until the operator fixes the configuration.
  if (error.code === 'ENOENT') return { ok: false, retryable: false, message: `${file}: not found` };
  if (error.code === 'EACCES') return { ok: false, retryable: false, message: `${file}: not executable` };
  // EAGAIN, ENOMEM, EMFILE: the host is short of something for now.
  return { ok: false, retryable: true, message: `${file}: ${error.code ?? error.message}` };
}

function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}

/** Keeps only the last `limit` bytes written to it. */
class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size > this.limit * 2) this.compact();
  }

  /** The end of what was written, on one line and at most MESSAGE_CHARS long. */
  tail(): string {
    this.compact();
    const flat = Buffer.concat(this.chunks).toString('utf8').replace(/\s+/g, ' ').trim();
    return flat.length > MESSAGE_CHARS ? `…${flat.slice(-MESSAGE_CHARS)}` : flat;
  }

  private compact(): void {
    const joined = Buffer.concat(this.chunks);
    // A copy, so the dropped head is not kept alive by a view into it.
    const kept = joined.length > this.limit ? Buffer.from(joined.subarray(joined.length - this.limit)) : joined;
    this.chunks = [kept];
    this.size = kept.length;
  }
}

/**
 * A script says "do not retry" with one of the sysexits.h codes for a usage, data, permission or
 * configuration error (64–78), except 75, EX_TEMPFAIL, which means "try again later". Any other
 * non-zero exit is retried.
 */
export function isPermanentExit(code: number): boolean {
  return code >= 64 && code <= 78 && code !== 75;
}
