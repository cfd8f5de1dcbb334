import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import type { Notification, Notifier } from '../notify/notifier.js';
import { evaluate } from '../policy/hibernation-policy.js';
import type { ProviderAction, ProviderActionKind, ProviderOutcome } from '../providers/provider.js';
import type { Providers } from '../providers/registry.js';
import type { OutboxRow } from '../store/schema.js';
import type { FleetRepository, FleetStore, OutboxTarget } from '../store/store.js';
import { InstanceWrite } from './instance-write.js';
import type { PolicyBook } from './policy-book.js';

/** The first retry comes within this long; each later one may wait up to twice as long as the last. */
const BASE_RETRY_MS = 2000;
const MAX_RETRY_MS = 10 * 60_000;
/** A `Retry-After` is honoured up to this long. */
const MAX_RETRY_AFTER_MS = 60 * 60_000;
/**
 * Rows one process sends at once, per target (each provider, and notifications): a provider that
 * hangs holds its own slots for a timeout each, never the notifications' or another provider's.
 */
const MAX_IN_FLIGHT_PER_TARGET = 16;
/** Rows naming a provider this server no longer has: claimed a few at a time, to fail them. */
const MAX_IN_FLIGHT_UNKNOWN = 4;
const UNKNOWN = '';

/**
 * Exponential backoff with full jitter: a random wait below min(10 min, 2 s × 2^(attempt−1)), so
 * that many failures at once do not retry in step. A provider's `Retry-After` is a floor.
 */
export function retryDelayMs(attempt: number, random: () => number, retryAfterMs?: number): number {
  const ceiling = Math.min(MAX_RETRY_MS, BASE_RETRY_MS * 2 ** Math.max(0, attempt - 1));
  const jittered = Math.floor(random() * ceiling);
  return retryAfterMs === undefined ? jittered : Math.max(jittered, Math.min(retryAfterMs, MAX_RETRY_AFTER_MS));
}

interface ActionPayload {
  provider_instance_id: string;
  hostname: string | null;
  owner: string;
  reason: string;
}

type Log = (level: 'info' | 'warn' | 'error', message: string, data: Record<string, unknown>) => void;

/**
 * Sends what transactions left in the outbox: provider stops and starts, notifications. Every server
 * process runs one. A row is claimed (PostgreSQL: FOR UPDATE SKIP LOCKED) with a lease longer than
 * any call can take, so two replicas never send it at once; a process killed mid-call leaves a lease
 * that expires, and the row is sent again after it. Outcomes are written in the same transaction as
 * the lifecycle change they cause.
 */
export class OutboxWorker {
  readonly id = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private timer: NodeJS.Timeout | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly inFlightByTarget = new Map<string, number>();
  /** Targets whose last claim filled every free slot: more rows may be due as soon as one frees. */
  private readonly saturated = new Set<string>();
  private claiming: Promise<unknown> | null = null;

  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
    private readonly config: ServerConfig,
    private readonly policies: PolicyBook,
    private readonly providers: Providers,
    private readonly notifier: Notifier | null,
    private readonly log: Log = () => {},
    private readonly random: () => number = Math.random,
  ) {}

  private get timeoutMs(): number {
    return this.config.providerTimeoutSeconds * 1000;
  }

  /** Long enough for the call (the command provider's kill grace included) and the outcome's write. */
  private get leaseMs(): number {
    return 2 * this.timeoutMs + 5000;
  }

  /** Claims what is due and starts sending it; returns how many rows it claimed. */
  async tick(): Promise<number> {
    const known = ['notify', ...this.providers.names()];
    const room = (slot: string, max: number) => max - (this.inFlightByTarget.get(slot) ?? 0);
    const now = this.clock.now();
    const rows = await this.store.transaction(async (repo) => {
      await repo.closeAbandonedWithdrawals(now);
      const claimed: OutboxRow[] = [];
      const claim = async (slot: string, max: number, target: OutboxTarget) => {
        const free = room(slot, max);
        if (free <= 0) return;
        const rows = await repo.claimOutbox(now, this.id, now + this.leaseMs, free, target);
        if (rows.length === free) this.saturated.add(slot);
        else this.saturated.delete(slot);
        claimed.push(...rows);
      };
      for (const target of known) await claim(target, MAX_IN_FLIGHT_PER_TARGET, { is: target });
      await claim(UNKNOWN, MAX_IN_FLIGHT_UNKNOWN, { notIn: known });
      await repo.insertEvents(
        claimed
          .filter((row) => row.kind !== 'notify')
          .map((row) => ({
            instanceId: row.instance_id,
            at: now,
            type: row.kind === 'stop' ? ('provider_stop_requested' as const) : ('provider_start_requested' as const),
            reason: `attempt ${row.attempts}: asking ${row.target} to ${row.kind} the machine`,
            data: { action_id: row.id, attempt: row.attempts, provider: row.target },
          })),
      );
      if (claimed.some((row) => row.kind !== 'notify')) await repo.requireDurableCommit();
      return claimed;
    });
    for (const row of rows) {
      const slot = known.includes(row.target) ? row.target : UNKNOWN;
      this.inFlightByTarget.set(slot, (this.inFlightByTarget.get(slot) ?? 0) + 1);
      const sending = this.send(row).catch((error) => this.log('error', 'outbox: recording an outcome failed', { err: error, action_id: row.id }));
      this.inFlight.add(sending);
      void sending.finally(() => {
        this.inFlight.delete(sending);
        this.inFlightByTarget.set(slot, (this.inFlightByTarget.get(slot) ?? 1) - 1);
        // A backlog is worked through as fast as slots free up, not one batch per poll.
        if (this.saturated.has(slot)) this.kick();
      });
    }
    return rows.length;
  }

  /** Sends everything due now and waits for the outcomes (tests; a clean shutdown). */
  async drain(): Promise<number> {
    let total = 0;
    for (;;) {
      const claimed = await this.tick();
      total += claimed;
      await Promise.all([...this.inFlight]);
      if (claimed === 0) return total;
    }
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.kick(), this.config.outboxPollMs);
    this.timer.unref();
  }

  /** One claim at a time, and only while started (tests drive `tick`/`drain` themselves). */
  private kick(): void {
    if (!this.timer || this.claiming) return;
    this.claiming = this.tick()
      .catch((error) => this.log('error', 'outbox: claiming failed', { err: error }))
      .finally(() => {
        this.claiming = null;
      });
  }

  /** Stops claiming and waits for the calls under way (each bounded by the provider timeout). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.claiming;
    await Promise.all([...this.inFlight]);
  }

  private async send(row: OutboxRow): Promise<void> {
    if (row.kind === 'notify') {
      const outcome: ProviderOutcome = this.notifier
        ? await this.notifier.send(row.id, JSON.parse(row.payload_json) as Notification, this.timeoutMs)
        : { ok: false, retryable: false, message: 'DUMONT_NOTIFY_URL is not set' };
      await this.recordNotification(row, outcome);
      return;
    }
    const payload = JSON.parse(row.payload_json) as ActionPayload;
    const action: ProviderAction = {
      id: row.id,
      kind: row.kind as ProviderActionKind,
      instanceId: row.instance_id,
      providerInstanceId: payload.provider_instance_id,
      hostname: payload.hostname,
      owner: payload.owner,
      reason: payload.reason,
    };
    const provider = this.providers.get(row.target);
    const outcome: ProviderOutcome = provider
      ? await provider.execute(action, this.timeoutMs)
      : { ok: false, retryable: false, message: `provider ${row.target} is not configured on this server` };
    await this.recordAction(row, outcome);
  }

  private giveUp(row: OutboxRow, outcome: Exclude<ProviderOutcome, { ok: true }>, now: number): boolean {
    return !outcome.retryable || now >= row.created_at + this.config.providerRetryHours * 3_600_000;
  }

  private retryPatch(row: OutboxRow, outcome: Exclude<ProviderOutcome, { ok: true }>, now: number): Partial<OutboxRow> {
    const wait = retryDelayMs(row.attempts, this.random, outcome.retryAfterMs);
    return { due_at: now + wait, claimed_by: null, claimed_until: null, last_error: outcome.message };
  }

  private async recordNotification(row: OutboxRow, outcome: ProviderOutcome): Promise<void> {
    const now = this.clock.now();
    let patch: Partial<OutboxRow>;
    if (outcome.ok) patch = { state: 'done', completed_at: now, claimed_until: null, last_error: null };
    else if (this.giveUp(row, outcome, now)) {
      patch = { state: 'failed', completed_at: now, claimed_until: null, last_error: outcome.message };
      this.log('warn', 'notification not delivered; giving up', { action_id: row.id, attempts: row.attempts, error: outcome.message });
    } else patch = this.retryPatch(row, outcome, now);
    await this.store.transaction((repo) => repo.finishOutbox(row.id, this.id, patch));
  }

  /** The outcome of one provider attempt, with what it means for the instance, in one transaction. */
  private async recordAction(row: OutboxRow, outcome: ProviderOutcome): Promise<void> {
    const action = row.kind as ProviderActionKind;
    await this.store.transaction(async (repo) => {
      const now = this.clock.now();
      const instance = await repo.getLifecycle(row.instance_id, { forUpdate: true });
      // Read after the instance's lock: a cancellation (made under that lock) is seen.
      const current = await repo.getOutbox(row.id);
      if (!instance || !current || current.state !== 'pending' || current.claimed_by !== this.id) return;
      const write = new InstanceWrite(instance, now, this.config, this.policies.current());
      const data = { action_id: row.id, attempt: current.attempts, provider: row.target };
      if (outcome.ok) {
        await repo.finishOutbox(row.id, this.id, { state: 'done', completed_at: now, claimed_until: null, last_error: null });
        write.events.push({
          type: action === 'stop' ? 'provider_stopped' : 'provider_started',
          reason: `${row.target} ${action === 'stop' ? 'stopped' : 'started'} the machine (attempt ${current.attempts})`,
          data,
        });
        await this.absorbResult(repo, write, action, true, '');
        write.change.providerError = null;
      } else if (current.cancel_requested === 1) {
        await repo.finishOutbox(row.id, this.id, { state: 'cancelled', completed_at: now, claimed_until: null, last_error: outcome.message });
        write.events.push({
          type: action === 'stop' ? 'provider_stop_failed' : 'provider_start_failed',
          reason: `${row.target}: ${outcome.message}; not retried: ${action === 'stop' ? 'activity withdrew the stop' : 'the wake was over before it'}`,
          data: { ...data, final: false, message: outcome.message, withdrawn: true },
        });
      } else if (this.giveUp(current, outcome, now)) {
        await repo.finishOutbox(row.id, this.id, { state: 'failed', completed_at: now, claimed_until: null, last_error: outcome.message });
        const why = outcome.retryable ? `retried for ${this.config.providerRetryHours} h` : 'not retryable';
        write.events.push({
          type: action === 'stop' ? 'provider_stop_failed' : 'provider_start_failed',
          reason: `${row.target}: ${outcome.message}; gave up (${why})`,
          data: { ...data, final: true, message: outcome.message, action },
        });
        await this.absorbResult(repo, write, action, false, outcome.message);
        write.change.providerError = outcome.message;
      } else {
        const patch = this.retryPatch(current, outcome, now);
        await repo.finishOutbox(row.id, this.id, patch);
        write.events.push({
          type: action === 'stop' ? 'provider_stop_failed' : 'provider_start_failed',
          reason: `${row.target}: ${outcome.message}; retrying at ${new Date(patch.due_at!).toISOString()}`,
          data: { ...data, final: false, message: outcome.message, retry_at: new Date(patch.due_at!).toISOString() },
        });
        write.change.providerError = outcome.message;
      }
      await write.commit(repo);
    });
  }

  private async absorbResult(repo: FleetRepository, write: InstanceWrite, action: ProviderActionKind, done: boolean, message: string) {
    const { policy, settings } = write.evaluation();
    const decision = evaluate(write.facts, policy, { kind: 'provider_result', action, done, message }, settings, this.clock.now());
    await write.absorb(decision, repo, 'provider');
  }
}
