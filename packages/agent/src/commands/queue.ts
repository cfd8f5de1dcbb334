import { isForcedHibernate, type CommandResult, type DeliveredCommand } from '@dumont/protocol';
import type { CommandSink, Delivery } from '../heartbeat/loop.js';
import type { Logger } from '../log.js';
import type { CommandJournal } from './journal.js';
import type { CommandOutcome } from './runner.js';

export interface QueueDeps {
  journal: CommandJournal;
  execute: (cmd: DeliveredCommand, signal: AbortSignal, delivery: Delivery) => Promise<CommandOutcome>;
  log: Logger;
  /** A result is ready to be sent. */
  onResult: () => void;
  /** A command asked the agent to exit with this code once its result is recorded. */
  onExitRequest: (code: number) => void;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
}

/**
 * Runs delivered commands one at a time, in delivery order, each id at most once: the journal
 * records the id before the command starts, and an id it knows is never started again (if the
 * server delivers it again, its stored result is sent again instead).
 */
export class CommandQueue implements CommandSink {
  private readonly waiting: Array<{ cmd: DeliveredCommand; delivery: Delivery }> = [];
  private readonly waitingIds = new Set<string>();
  private running: { id: string; controller: AbortController; done: Promise<void>; finished?: boolean } | null = null;
  private closed = false;

  constructor(private readonly deps: QueueDeps) {}

  pendingResults(): CommandResult[] {
    return this.deps.journal.pending();
  }

  runningCommands(): string[] {
    // Once its result is recorded a beat may carry it; that beat must not also say it is running.
    return this.running && !this.running.finished ? [this.running.id] : [];
  }

  acknowledge(ids: readonly string[]): void {
    this.deps.journal.acknowledge(ids);
  }

  /**
   * `delivery` is the beat whose answer carried the commands. A command delivered again while it
   * waits keeps its first delivery: the hibernate guard then counts activity from the earliest beat.
   */
  accept(commands: readonly DeliveredCommand[], delivery: Delivery): void {
    for (const cmd of commands) {
      if (this.waitingIds.has(cmd.id) || this.running?.id === cmd.id) continue;
      const known = this.deps.journal.get(cmd.id);
      if (known) {
        if (this.deps.journal.resend(cmd.id)) this.deps.log.info('server delivered a finished command again; resending its result', { command_id: cmd.id });
        continue;
      }
      // Not started, so not recorded: the server delivers it again after the agent restarts.
      if (this.closed) continue;
      this.waiting.push({ cmd, delivery });
      this.waitingIds.add(cmd.id);
    }
    this.pump();
  }

  /** Resolves when nothing is running or waiting. */
  async idle(): Promise<void> {
    while (this.running) await this.running.done;
  }

  /**
   * Stops taking commands and gives the running one `graceMs` to finish; after that it is abandoned
   * (its process group killed) and recorded as failed.
   */
  async stop(graceMs: number): Promise<void> {
    this.closed = true;
    this.waiting.length = 0;
    this.waitingIds.clear();
    const current = this.running;
    if (!current) return;
    this.deps.log.info('waiting for the running command before exiting', { command_id: current.id, grace_ms: graceMs });
    const finished = new AbortController();
    void current.done.then(() => finished.abort());
    await this.deps.sleep(graceMs, finished.signal);
    if (this.running === current) {
      this.deps.log.warn('abandoning the running command', { command_id: current.id });
      current.controller.abort();
      await current.done;
    }
  }

  private pump(): void {
    if (this.running || this.closed) return;
    const next = this.waiting.shift();
    if (!next) return;
    this.waitingIds.delete(next.cmd.id);
    const controller = new AbortController();
    const done = this.runOne(next.cmd, next.delivery, controller.signal).finally(() => {
      this.running = null;
      this.pump();
    });
    this.running = { id: next.cmd.id, controller, done };
  }

  private async runOne(cmd: DeliveredCommand, delivery: Delivery, signal: AbortSignal): Promise<void> {
    const { journal, log } = this.deps;
    const fields = { command_id: cmd.id, command_type: cmd.type };
    try {
      journal.begin(cmd.id, String(cmd.type));
    } catch (err) {
      log.error('command not run: its id cannot be recorded', { ...fields, error: (err as Error).message });
      journal.finish(cmd.id, 'failed', `not run: the agent cannot record command ids (${(err as Error).message}), and runs a command only once it is recorded`);
      this.deps.onResult();
      return;
    }
    log.info('running command', fields);
    // Here rather than in the runner, which has no logger: stopping a busy machine on purpose must
    // leave a trace on the host itself, not only in the result the server stores.
    const forced = cmd.type === 'hibernate' ? isForcedHibernate(cmd.args) : null;
    if (forced) log.warn('forced hibernation: running the hook without checking that the machine is idle', { ...fields, reason: forced.reason });
    let outcome: CommandOutcome;
    try {
      outcome = await this.deps.execute(cmd, signal, delivery);
    } catch (err) {
      outcome = { status: 'failed', detail: `agent error while running the command: ${(err as Error).message}` };
    }
    if (this.running?.id === cmd.id) this.running.finished = true;
    journal.finish(cmd.id, outcome.status, outcome.detail);
    (outcome.status === 'succeeded' ? log.info : log.warn)(`command ${outcome.status}`, { ...fields, detail: outcome.detail.slice(0, 500) });
    this.deps.onResult();
    if (outcome.exitCode !== undefined) {
      this.closed = true;
      this.deps.onExitRequest(outcome.exitCode);
    }
  }
}
