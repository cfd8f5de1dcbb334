import type { CommandResult, DeliveredCommand } from '@dumont/protocol';
import type { Reading } from '../collect.js';
import type { ActivityReport } from '../collectors/activity.js';
import type { Logger } from '../log.js';
import { DEFAULT_BASE_BACKOFF_MS, beatDelay, retryDelay } from './backoff.js';
import type { HibernationNotice } from './hibernation-notice.js';
import { describeSendFailure, type Sender } from './sender.js';

/** Where the loop gets time from; tests pass a clock they move themselves. */
export interface Clock {
  now(): number;
  /** Resolves after `ms`, or as soon as `signal` aborts. Never rejects. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    }),
};

/** The beat whose answer delivered commands: what the machine looked like when the server decided. */
export interface Delivery {
  activity: ActivityReport;
}

/** The command side, as the loop sees it (see commands/queue.ts). */
export interface CommandSink {
  pendingResults(): CommandResult[];
  /** Ids of the commands running now, for `running_commands`. */
  runningCommands(): string[];
  acknowledge(ids: readonly string[]): void;
  accept(commands: readonly DeliveredCommand[], delivery: Delivery): void;
}

export interface LoopDeps {
  clock: Clock;
  random: () => number;
  /** One heartbeat body, carrying the results and running commands the loop passes. */
  collect: (results: CommandResult[], runningCommands: string[]) => Promise<Reading>;
  send: Sender;
  commands: CommandSink;
  hibernation: HibernationNotice;
  log: Logger;
  intervalMs: number;
  maxBackoffMs: number;
  baseBackoffMs?: number;
  /**
   * After the server has our `succeeded` result for a hibernate command, the machine is about to be
   * stopped: a beat now would tell the server it woke up. Stay quiet this long; if the machine is
   * still running then (no provider stopped it), beats resume and the server records it as woken.
   */
  hibernatedQuietMs?: number;
}

export const DEFAULT_HIBERNATED_QUIET_MS = 15 * 60_000;

export interface BeatReport {
  ok: boolean;
  delayMs: number;
}

/**
 * Collect, send, act on the answer, sleep; forever. Nothing in here throws out of the loop: a dead
 * API, a wedged collector or a bug in one beat become a logged failure and a backoff, because an
 * agent that exits leaves the instance looking idle (or offline) to the server.
 */
export class HeartbeatLoop {
  private failures = 0;
  private stopped = new AbortController();
  private wake = new AbortController();
  /** Ids of hibernate commands the server sent us, to recognise their results. */
  private readonly hibernateIds = new Set<string>();

  constructor(private readonly deps: LoopDeps) {}

  /** Ends the current sleep early (a command result is ready), unless the server is failing. */
  wakeUp(): void {
    if (this.failures === 0) this.wake.abort();
  }

  stop(): void {
    this.stopped.abort();
  }

  get stopping(): boolean {
    return this.stopped.signal.aborted;
  }

  async beat(): Promise<BeatReport> {
    const { deps } = this;
    const results = deps.commands.pendingResults();
    let outcome;
    let reading: Reading | null = null;
    try {
      reading = await deps.collect(results, deps.commands.runningCommands());
      outcome = await deps.send(reading.body);
    } catch (err) {
      outcome = { kind: 'unreachable' as const, message: `beat failed: ${(err as Error).message}` };
    }
    const backoff = { baseMs: deps.baseBackoffMs ?? DEFAULT_BASE_BACKOFF_MS, capMs: deps.maxBackoffMs };
    if (outcome.kind !== 'ok') {
      this.failures += 1;
      const retryAfterMs = outcome.kind === 'rejected' ? outcome.retryAfterMs : null;
      const delayMs = retryDelay(this.failures, deps.random, backoff, retryAfterMs);
      const fields: Record<string, unknown> = { attempt: this.failures, retry_in_ms: Math.round(delayMs) };
      if (retryAfterMs !== null) fields.retry_after_ms = retryAfterMs;
      deps.log.warn(`heartbeat failed: ${describeSendFailure(outcome)}`, fields);
      return { ok: false, delayMs };
    }
    if (this.failures > 0) deps.log.info('heartbeat delivered again', { after_failures: this.failures });
    this.failures = 0;
    const { response } = outcome;
    deps.commands.acknowledge(results.map((r) => r.id));
    deps.hibernation.observe(deps.clock.now(), response.hibernate_in_seconds);
    for (const command of response.commands) if (command.type === 'hibernate') this.hibernateIds.add(command.id);
    // Sent, so collected: the reading is there.
    deps.commands.accept(response.commands, { activity: reading!.activity });
    const hibernated = results.some((r) => r.status === 'succeeded' && this.hibernateIds.has(r.id));
    for (const r of results) this.hibernateIds.delete(r.id);
    if (hibernated) {
      const quietMs = deps.hibernatedQuietMs ?? DEFAULT_HIBERNATED_QUIET_MS;
      deps.log.info('hibernation confirmed by the server: no beats while the machine is stopped', { quiet_ms: quietMs });
      return { ok: true, delayMs: quietMs };
    }
    const intervalMs = response.next_heartbeat_in > 0 ? response.next_heartbeat_in * 1000 : deps.intervalMs;
    return { ok: true, delayMs: beatDelay(intervalMs, deps.random) };
  }

  /** Runs until `stop()`. */
  async run(): Promise<void> {
    while (!this.stopping) {
      const { delayMs } = await this.beat();
      if (this.stopping) break;
      // A result that became ready during the beat wakes the next sleep at once.
      await this.deps.clock.sleep(delayMs, AbortSignal.any([this.stopped.signal, this.wake.signal]));
      if (this.wake.signal.aborted) this.wake = new AbortController();
    }
  }
}
