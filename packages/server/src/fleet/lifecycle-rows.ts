import { randomUUID } from 'node:crypto';
import type { CommandType, HibernateArgs, IdleRule } from '@dumont/protocol';
import type { Decision, InstancePolicy, LifecycleFacts, PolicyEvent } from '../policy/hibernation-policy.js';
import type { InstanceUpdate, NewEventRow, NewSavingsRow, OutboxRow } from '../store/schema.js';
import type { FleetRepository, FleetStore, LifecycleRow } from '../store/store.js';
import type { ServerConfig } from '../config.js';
import { DumontError, type ProviderState } from '@dumont/protocol';
import { notificationOf } from '../notify/notifications.js';

/** Maps stored rows to the policy's facts and back, and writes a decision inside a transaction. */

export function factsOf(row: LifecycleRow): LifecycleFacts {
  return {
    status: row.status as LifecycleFacts['status'],
    lastHeartbeatAt: row.last_heartbeat_at,
    idleSince: row.idle_since,
    scheduledAt: row.scheduled_at,
    postponedUntil: row.postponed_until,
    hibernateIssuedAt: row.hibernate_issued_at,
    onlineSince: row.online_since,
    offlineSince: row.offline_since,
    providerState: row.provider_state as ProviderState | null,
    wakeRequestedAt: row.wake_requested_at,
    savingSince: row.saving_since,
  };
}

/** The provider that stops and starts this instance: its own, else the server's default. */
export function providerNameOf(row: Pick<LifecycleRow, 'provider'>, config: Pick<ServerConfig, 'provider'>): string {
  return row.provider ?? config.provider;
}

/** The id the provider knows this machine by: its own, else the instance id. */
export function providerInstanceIdOf(row: Pick<LifecycleRow, 'provider_instance_id' | 'instance_id'>): string {
  return row.provider_instance_id ?? String(row.instance_id);
}

export function policyOf(row: LifecycleRow, config: ServerConfig): InstancePolicy {
  return {
    enabled: row.hibernation_enabled === 1,
    thresholdMinutes: row.threshold_minutes ?? config.idleThresholdMinutes,
    ignoreGpuProcesses: row.ignore_gpu_processes === 1,
    stopsThroughProvider: providerNameOf(row, config) !== 'none',
    dryRun: config.dryRun || row.dry_run === 1,
  };
}

/** The per-beat rule the server judges this instance with; hibernate commands carry it to the agent. */
export function idleRuleOfRow(row: Pick<LifecycleRow, 'ignore_gpu_processes'>, config: ServerConfig): IdleRule {
  return { idleUtilizationPercent: config.idleUtilizationPercent, ignoreGpuProcesses: row.ignore_gpu_processes === 1 };
}

const FACT_COLUMNS = {
  status: 'status',
  lastHeartbeatAt: 'last_heartbeat_at',
  idleSince: 'idle_since',
  scheduledAt: 'scheduled_at',
  postponedUntil: 'postponed_until',
  hibernateIssuedAt: 'hibernate_issued_at',
  onlineSince: 'online_since',
  offlineSince: 'offline_since',
  providerState: 'provider_state',
  wakeRequestedAt: 'wake_requested_at',
  savingSince: 'saving_since',
} as const satisfies Record<keyof LifecycleFacts, keyof LifecycleRow>;

/**
 * How much earlier than the true deadline the stored one may be before it is rewritten. The sweeper
 * only ever looks early (then re-stores the exact deadline), never late; in exchange a beat every 30 s
 * rewrites the indexed deadline every other beat instead of every beat.
 */
export const DEADLINE_SLACK_MS = 45_000;

export function shouldStoreDeadline(stored: number | null, next: number | null, now: number): boolean {
  if (next === null || stored === null) return next !== stored;
  // A stored deadline that has passed must move, or the sweeper would find it due again and again.
  return stored <= now || next < stored || next - stored > DEADLINE_SLACK_MS;
}

/**
 * The columns in which `facts` differ from the stored row; an unchanged column is not written (nor
 * its indexes touched). `facts` is the whole current state, so the result replaces earlier patches.
 */
export function factsPatch(row: LifecycleRow, facts: LifecycleFacts, deadline: number | null, now: number): InstanceUpdate {
  const patch: Record<string, unknown> = {};
  for (const fact of Object.keys(FACT_COLUMNS) as (keyof LifecycleFacts)[]) {
    const column = FACT_COLUMNS[fact];
    if (facts[fact] !== row[column]) patch[column] = facts[fact];
  }
  if (shouldStoreDeadline(row.deadline, deadline, now)) patch.deadline = deadline;
  if ('provider_state' in patch) patch.provider_updated_at = now;
  return patch as InstanceUpdate;
}

const PATCHED_BY_FACTS: readonly string[] = [...Object.values(FACT_COLUMNS), 'deadline', 'provider_updated_at'];

export function eventRows(instanceId: number, at: number, events: readonly PolicyEvent[]): NewEventRow[] {
  return events.map((e) => ({
    instance_id: instanceId,
    at,
    type: e.type,
    reason: e.reason,
    data_json: JSON.stringify(e.data ?? {}),
  }));
}

/** Accumulates one transaction's changes to one instance, then writes them with a compare-and-set. */
export class InstanceWrite {
  readonly events: PolicyEvent[] = [];
  patch: InstanceUpdate = {};
  facts: LifecycleFacts;
  openCommandsDelta = 0;
  /** Something a power cut must not lose: a status change, a command, an event. */
  durable = false;
  /** The client's `Idempotency-Key`, stored with the command this write issues. */
  idempotencyKey: string | null = null;
  /** Calls to the outside this transaction queues (provider actions, notifications). */
  readonly outbox: OutboxRow[] = [];

  constructor(
    readonly row: LifecycleRow,
    private readonly now: number,
    private readonly config: ServerConfig,
  ) {
    this.facts = factsOf(row);
  }

  /** A provider stop or start, sent by the outbox worker after this transaction commits. */
  private queueProviderAction(action: 'stop' | 'start', reason: string): void {
    const row = { ...this.row, ...this.patch } as LifecycleRow;
    this.outbox.push(
      newOutboxRow(this.row.instance_id, action, providerNameOf(row, this.config), this.now, {
        provider_instance_id: providerInstanceIdOf(row),
        hostname: row.hostname,
        owner: row.owner,
        reason,
      }),
    );
    this.patch.provider_error = null;
  }

  /** The hibernate command in flight, as this transaction leaves it. */
  get hibernateCommandId(): string | null {
    return this.patch.hibernate_command_id !== undefined ? this.patch.hibernate_command_id : this.row.hibernate_command_id;
  }

  /** Folds a policy decision in; returns the id of a hibernate command it issued, if any. */
  /** `hibernateArgs`: the rule a hibernate command carries to the agent; needed where one can be issued. */
  async absorb(decision: Decision, repo: FleetRepository, issuedBy: string, hibernateArgs: HibernateArgs | null = null): Promise<string | null> {
    if (decision.facts.status !== this.facts.status) this.durable = true;
    this.facts = decision.facts;
    this.events.push(...decision.events);
    const patch: Record<string, unknown> = { ...this.patch };
    for (const column of PATCHED_BY_FACTS) delete patch[column];
    this.patch = { ...(patch as InstanceUpdate), ...factsPatch(this.row, decision.facts, decision.deadline, this.now) };
    const hibernateCommandId = this.hibernateCommandId;
    const close = decision.closeHibernate;
    if (close && hibernateCommandId) {
      if (await repo.updateCommand(hibernateCommandId, ['pending', 'delivered'], { state: close.state, completed_at: this.now, detail: close.detail })) {
        this.openCommandsDelta -= 1;
        this.events.push({
          type: close.state === 'expired' ? 'command_expired' : 'command_cancelled',
          reason: close.detail,
          data: { command_id: hibernateCommandId },
        });
      }
    }
    // The id is kept while hibernating and hibernated (a re-sent result must be recognised as one);
    // any other status has no hibernate command.
    if (hibernateCommandId && decision.facts.status !== 'hibernating' && decision.facts.status !== 'hibernated') {
      this.patch.hibernate_command_id = null;
    }
    if (decision.providerAction === 'stop') this.queueProviderAction('stop', 'the agent saved its state and confirmed the hibernate command');
    if (decision.providerAction === 'start') this.queueProviderAction('start', 'wake requested');
    if (decision.cancelProviderStart) await repo.cancelOutbox(this.row.instance_id, 'start', this.now);
    if (decision.cancelProviderStop) {
      const { inFlight } = await repo.cancelOutbox(this.row.instance_id, 'stop', this.now);
      if (inFlight > 0) {
        this.events.push({
          type: 'hibernation_cancelled',
          reason: 'the provider stop was already being sent and cannot be withdrawn; its outcome decides',
          data: { stop_in_flight: true },
        });
      }
    }
    if (!decision.issueHibernate) return null;
    if (hibernateArgs === null) throw new Error('a hibernate command was issued without the rule it must carry');
    const id = await this.issueCommand(repo, 'hibernate', { ...hibernateArgs }, issuedBy, issuedBy === 'policy' ? 'the instance stayed idle past its threshold' : `requested by ${issuedBy}`);
    this.patch.hibernate_command_id = id;
    return id;
  }

  async issueCommand(
    repo: FleetRepository,
    type: CommandType,
    args: Record<string, unknown>,
    issuedBy: string,
    reason: string,
  ): Promise<string> {
    const id = randomUUID();
    await repo.insertCommand({
      id,
      instance_id: this.row.instance_id,
      type,
      args_json: JSON.stringify(args),
      state: 'pending',
      issued_at: this.now,
      issued_by: issuedBy,
      delivered_at: null,
      completed_at: null,
      detail: null,
      idempotency_key: this.idempotencyKey,
    });
    this.openCommandsDelta += 1;
    this.events.push({ type: 'command_issued', reason, data: { command_id: id, command: type, issued_by: issuedBy } });
    return id;
  }

  /** True when this write is a plain metrics update: no event, command, status change, outbox row or durability. */
  get plain(): boolean {
    return (
      !this.durable &&
      this.events.length === 0 &&
      this.openCommandsDelta === 0 &&
      this.outbox.length === 0 &&
      this.facts.status === this.row.status &&
      this.facts.savingSince === this.row.saving_since
    );
  }

  /** The saving interval this write closes (left `hibernated`, or a dry-run idle stretch ended). */
  private closedSaving(): NewSavingsRow | null {
    const since = this.row.saving_since;
    if (since === null || this.facts.savingSince === since) return null;
    const kind = this.row.status === 'hibernated' ? 'hibernated' : 'would';
    return {
      instance_id: this.row.instance_id,
      owner: this.row.owner,
      kind,
      started_at: since,
      // A dry-run stretch ends with the last beat that saw the machine idle, not when silence was noticed.
      ended_at: kind === 'would' ? Math.max(since, Math.min(this.now, this.facts.lastHeartbeatAt ?? this.now)) : this.now,
      gpu_count: this.row.gpu_count,
      price_per_hour: this.row.price_per_hour,
    };
  }

  /**
   * A plain write outside any transaction: one compare-and-set on the version this write read. False
   * when the row changed since it was read (or the write is not plain); the caller then takes the
   * locked path.
   */
  async tryCommitPlain(store: Pick<FleetStore, 'writePlainBeat'>): Promise<boolean> {
    if (!this.plain) return false;
    return store.writePlainBeat(this.row.instance_id, this.row.version, this.patch);
  }

  async commit(repo: FleetRepository): Promise<void> {
    const patch: InstanceUpdate = { ...this.patch };
    if (this.openCommandsDelta !== 0) patch.open_commands = Math.max(0, this.row.open_commands + this.openCommandsDelta);
    if (this.config.notifyUrl !== undefined) {
      const row = { ...this.row, ...this.patch } as LifecycleRow;
      for (const event of this.events) {
        const notification = notificationOf(event, row, providerInstanceIdOf(row), this.now);
        if (notification) this.outbox.push(newOutboxRow(this.row.instance_id, 'notify', 'notify', this.now, notification));
      }
    }
    const saving = this.closedSaving();
    if (this.events.length > 0 || this.openCommandsDelta !== 0 || this.outbox.length > 0 || saving !== null) this.durable = true;
    if (this.durable) await repo.requireDurableCommit();
    const ok = await repo.updateInstance(this.row.instance_id, this.row.version, patch);
    // With the row locked (or SQLite's single writer) this cannot happen; if it does, roll back.
    if (!ok) throw new DumontError('internal_error', `instance ${this.row.instance_id} changed concurrently; retry`);
    await repo.insertEvents(eventRows(this.row.instance_id, this.now, this.events));
    await repo.insertOutbox(this.outbox);
    if (saving !== null) await repo.insertSavings(saving);
  }
}

export function newOutboxRow(instanceId: number, kind: string, target: string, now: number, payload: object): OutboxRow {
  return {
    id: randomUUID(),
    instance_id: instanceId,
    kind,
    target,
    payload_json: JSON.stringify(payload),
    state: 'pending',
    attempts: 0,
    created_at: now,
    due_at: now,
    claimed_by: null,
    claimed_until: null,
    cancel_requested: 0,
    last_error: null,
    completed_at: null,
  };
}
