import { randomUUID } from 'node:crypto';
import { hibernateArgsOf, type CommandType, type HibernateArgs, type IdleRule, type Labels } from '@dumont/protocol';
import type { Decision, InstancePolicy, LifecycleFacts, PolicyEvent, PolicySettings } from '../policy/hibernation-policy.js';
import { effectivePolicy, matchingPolicy, type CompiledPolicy, type EffectivePolicy, type PolicyDefaults } from '../policy/effective-policy.js';
import type { NewSavingsRow, OutboxRow } from '../store/schema.js';
import type { FleetRepository, FleetStore, InstanceChange, InstanceEvent, InstanceLifecycle, InstanceSettings } from '../store/store.js';
import type { ServerConfig } from '../config.js';
import { DumontError } from '@dumont/protocol';
import { notificationOf } from '../notify/notifications.js';

// The policy inputs of one instance, and one transaction's changes to it, in the domain's terms.

/** The id the provider knows this machine by: its own, else the instance id. */
export function providerInstanceIdOf(instanceId: number, settings: Pick<InstanceSettings, 'providerInstanceId'>): string {
  return settings.providerInstanceId ?? String(instanceId);
}

const defaultsCache = new WeakMap<ServerConfig, PolicyDefaults>();

/** The server's own values, as the effective policy falls back on them (one object per configuration). */
export function policyDefaultsOf(config: ServerConfig): PolicyDefaults {
  let defaults = defaultsCache.get(config);
  if (!defaults) defaultsCache.set(config, (defaults = newPolicyDefaults(config)));
  return defaults;
}

function newPolicyDefaults(config: ServerConfig): PolicyDefaults {
  return {
    idleUtilizationPercent: config.idleUtilizationPercent,
    idleThresholdMinutes: config.idleThresholdMinutes,
    hibernationWarningSeconds: config.hibernationWarningSeconds,
    provider: config.provider,
    dryRun: config.dryRun,
    maxThresholdMinutes: config.maxThresholdMinutes,
    maxKeepAliveMinutes: config.maxKeepAliveMinutes,
    keepAliveBudgetMinutes: config.keepAliveBudgetMinutes,
    ownerMayDisable: config.ownerMayDisable,
  };
}

/** The values that govern an instance now: its matching policy over the defaults, its own settings bounded by the limits. */
export function effectivePolicyOf(
  instance: { settings: InstanceSettings; labels: Labels },
  policies: readonly CompiledPolicy[],
  config: ServerConfig,
  now: number,
): EffectivePolicy {
  return effectivePolicy(matchingPolicy(policies, instance.labels), instance.settings, policyDefaultsOf(config), now);
}

/** The policy `evaluate` applies. */
export function instancePolicyOf(effective: EffectivePolicy, settings: Pick<InstanceSettings, 'ignoreGpuProcesses'>): InstancePolicy {
  return {
    enabled: effective.enabled.value,
    thresholdMinutes: effective.thresholdMinutes.value,
    ignoreGpuProcesses: settings.ignoreGpuProcesses,
    stopsThroughProvider: effective.provider.value !== 'none',
    dryRun: effective.dryRun.value,
    forcedBy: effective.scheduleForce,
    maxUptimeHours: effective.maxUptimeHours,
  };
}

/** The server settings `evaluate` runs with, with the instance's idle utilization and warning. */
export function policySettingsOf(effective: EffectivePolicy, config: ServerConfig): PolicySettings {
  const idleUtilizationPercent = effective.idleUtilizationPercent.value;
  const hibernationWarningSeconds = effective.warningSeconds.value;
  // Most beats run with the server's own values: no copy of the whole configuration for them.
  if (idleUtilizationPercent === config.idleUtilizationPercent && hibernationWarningSeconds === config.hibernationWarningSeconds) return config;
  return { ...config, idleUtilizationPercent, hibernationWarningSeconds };
}

/** The per-beat rule the server judges this instance with; hibernate commands carry it to the agent. */
export function idleRuleOf(effective: EffectivePolicy, settings: Pick<InstanceSettings, 'ignoreGpuProcesses'>): IdleRule {
  return { idleUtilizationPercent: effective.idleUtilizationPercent.value, ignoreGpuProcesses: settings.ignoreGpuProcesses };
}

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

/** The facts that differ from the stored ones: an unchanged fact is not written (nor its indexes touched). */
export function changedFacts(stored: LifecycleFacts, facts: LifecycleFacts): Partial<LifecycleFacts> {
  const changed: Partial<Record<keyof LifecycleFacts, unknown>> = {};
  for (const fact of Object.keys(facts) as (keyof LifecycleFacts)[]) {
    if (facts[fact] !== stored[fact]) changed[fact] = facts[fact];
  }
  return changed as Partial<LifecycleFacts>;
}

export function instanceEvents(instanceId: number, at: number, events: readonly PolicyEvent[]): InstanceEvent[] {
  return events.map((e) => ({ instanceId, at, type: e.type, reason: e.reason, data: e.data ?? {} }));
}

/** Accumulates one transaction's changes to one instance, then writes them with a compare-and-set. */
export class InstanceWrite {
  readonly events: PolicyEvent[] = [];
  /** Everything this write sets but the facts and the deadline, which come from the last decision absorbed. */
  change: InstanceChange = {};
  facts: LifecycleFacts;
  /** The instance's labels as this transaction leaves them (they decide its policy). */
  labels: Labels;
  /** The next deadline the last decision asked for; undefined = no decision, the stored one stays. */
  private nextDeadline: number | null | undefined = undefined;
  openCommandsDelta = 0;
  /** Something a power cut must not lose: a status change, a command, an event. */
  durable = false;
  /** The client's `Idempotency-Key`, stored with the command this write issues. */
  idempotencyKey: string | null = null;
  /** Calls to the outside this transaction queues (provider actions, notifications). */
  readonly outbox: OutboxRow[] = [];

  constructor(
    readonly instance: InstanceLifecycle,
    private readonly now: number,
    private readonly config: ServerConfig,
    /** The named policies (highest priority first) this write judges the instance by. */
    private policies: readonly CompiledPolicy[],
  ) {
    this.facts = instance.facts;
    this.labels = instance.labels;
  }

  /** The instance's settings as this transaction leaves them. */
  get settings(): InstanceSettings {
    return this.change.settings === undefined ? this.instance.settings : { ...this.instance.settings, ...this.change.settings };
  }

  /** The values that govern the instance at this write's `now`, with its settings as this transaction leaves them. */
  get effective(): EffectivePolicy {
    return effectivePolicyOf({ settings: this.settings, labels: this.labels }, this.policies, this.config, this.now);
  }

  /** Judge by these policies from now on (re-read inside the transaction before a hibernation fires). */
  usePolicies(policies: readonly CompiledPolicy[]): void {
    this.policies = policies;
  }

  /** What `evaluate` needs for this instance: its policy and the server settings with its own values. */
  evaluation(): { policy: InstancePolicy; settings: PolicySettings; effective: EffectivePolicy } {
    const effective = this.effective;
    return { policy: instancePolicyOf(effective, this.settings), settings: policySettingsOf(effective, this.config), effective };
  }

  /** The args a hibernate command carries: the rule the server judged with, and why it is forced if it is. */
  hibernateArgs(forced: string | null = null): HibernateArgs {
    return hibernateArgsOf(idleRuleOf(this.effective, this.settings), forced === null ? undefined : { reason: forced });
  }

  /** Who the instance belongs to and what it is called, as this transaction leaves it (notifications name it). */
  private get identity() {
    return {
      instanceId: this.instance.instanceId,
      owner: this.change.owner ?? this.instance.owner,
      hostname: this.change.hostname !== undefined ? this.change.hostname : this.instance.hostname,
    };
  }

  /** A provider stop or start, sent by the outbox worker after this transaction commits. */
  private queueProviderAction(action: 'stop' | 'start', reason: string): void {
    const settings = this.settings;
    const { instanceId, owner, hostname } = this.identity;
    this.outbox.push(
      newOutboxRow(instanceId, action, this.effective.provider.value, this.now, {
        provider_instance_id: providerInstanceIdOf(instanceId, settings),
        hostname,
        owner,
        reason,
      }),
    );
    this.change.providerError = null;
  }

  /** The hibernate command in flight, as this transaction leaves it. */
  get hibernateCommandId(): string | null {
    return this.change.hibernateCommandId !== undefined ? this.change.hibernateCommandId : this.instance.hibernateCommandId;
  }

  /**
   * Folds a policy decision in; returns the id of a hibernate command it issued, if any (it carries
   * the rule the server judged with, so that the agent's own last check cannot disagree).
   */
  async absorb(decision: Decision, repo: FleetRepository, issuedBy: string): Promise<string | null> {
    if (decision.facts.status !== this.facts.status) this.durable = true;
    this.facts = decision.facts;
    this.events.push(...decision.events);
    this.nextDeadline = decision.deadline;
    const hibernateCommandId = this.hibernateCommandId;
    const close = decision.closeHibernate;
    if (close && hibernateCommandId) {
      if (await repo.updateCommand(hibernateCommandId, ['pending', 'delivered'], { state: close.state, completedAt: this.now, detail: close.detail })) {
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
      this.change.hibernateCommandId = null;
    }
    if (decision.providerAction === 'stop') this.queueProviderAction('stop', 'the agent saved its state and confirmed the hibernate command');
    if (decision.providerAction === 'start') this.queueProviderAction('start', 'wake requested');
    const instanceId = this.instance.instanceId;
    if (decision.cancelProviderStart) await repo.cancelOutbox(instanceId, 'start', this.now);
    if (decision.cancelProviderStop) {
      const { inFlight } = await repo.cancelOutbox(instanceId, 'stop', this.now);
      if (inFlight > 0) {
        this.events.push({
          type: 'hibernation_cancelled',
          reason: 'the provider stop was already being sent and cannot be withdrawn; its outcome decides',
          data: { stop_in_flight: true },
        });
      }
    }
    if (!decision.issueHibernate) return null;
    const id = await this.issueCommand(repo, 'hibernate', { ...this.hibernateArgs(decision.forcedHibernate) }, issuedBy, issuedBy === 'policy' ? 'the instance stayed idle past its threshold' : `requested by ${issuedBy}`);
    this.change.hibernateCommandId = id;
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
      instanceId: this.instance.instanceId,
      type,
      args,
      state: 'pending',
      issuedAt: this.now,
      issuedBy,
      deliveredAt: null,
      completedAt: null,
      detail: null,
      idempotencyKey: this.idempotencyKey,
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
      this.facts.status === this.instance.facts.status &&
      this.facts.savingSince === this.instance.facts.savingSince
    );
  }

  /** The saving interval this write closes (left `hibernated`, or a dry-run idle stretch ended). */
  private closedSaving(): NewSavingsRow | null {
    const since = this.instance.facts.savingSince;
    if (since === null || this.facts.savingSince === since) return null;
    const kind = this.instance.facts.status === 'hibernated' ? 'hibernated' : 'would';
    return {
      instance_id: this.instance.instanceId,
      owner: this.instance.owner,
      kind,
      started_at: since,
      // A dry-run stretch ends with the last beat that saw the machine idle, not when silence was noticed.
      ended_at: kind === 'would' ? Math.max(since, Math.min(this.now, this.facts.lastHeartbeatAt ?? this.now)) : this.now,
      gpu_count: this.instance.gpuCount,
      price_per_hour: this.instance.settings.pricePerHour,
    };
  }

  /** Everything this write changes, facts and deadline included, as one change to store. */
  private finalChange(): InstanceChange {
    const change: InstanceChange = { ...this.change };
    const facts = changedFacts(this.instance.facts, this.facts);
    if (Object.keys(facts).length > 0) change.facts = facts;
    if (facts.providerState !== undefined) change.providerUpdatedAt = this.now;
    if (this.nextDeadline !== undefined && shouldStoreDeadline(this.instance.deadline, this.nextDeadline, this.now)) {
      change.deadline = this.nextDeadline;
    }
    if (this.openCommandsDelta !== 0) change.openCommands = Math.max(0, this.instance.openCommands + this.openCommandsDelta);
    return change;
  }

  /**
   * A plain write outside any transaction: one compare-and-set on the version this write read. False
   * when the row changed since it was read (or the write is not plain); the caller then takes the
   * locked path.
   */
  async tryCommitPlain(store: Pick<FleetStore, 'writePlainBeat'>): Promise<boolean> {
    if (!this.plain) return false;
    return store.writePlainBeat(this.instance.instanceId, this.instance.version, this.finalChange());
  }

  async commit(repo: FleetRepository): Promise<void> {
    const change = this.finalChange();
    const instanceId = this.instance.instanceId;
    if (this.config.notifyUrl !== undefined) {
      const identity = this.identity;
      const providerInstanceId = providerInstanceIdOf(instanceId, this.settings);
      for (const event of this.events) {
        const notification = notificationOf(event, identity, providerInstanceId, this.now);
        if (notification) this.outbox.push(newOutboxRow(instanceId, 'notify', 'notify', this.now, notification));
      }
    }
    const saving = this.closedSaving();
    if (this.events.length > 0 || this.openCommandsDelta !== 0 || this.outbox.length > 0 || saving !== null) this.durable = true;
    if (this.durable) await repo.requireDurableCommit();
    const ok = await repo.updateInstance(instanceId, this.instance.version, change);
    // With the row locked (or SQLite's single writer) this cannot happen; if it does, roll back.
    if (!ok) throw new DumontError('internal_error', `instance ${instanceId} changed concurrently; retry`);
    await repo.insertEvents(instanceEvents(instanceId, this.now, this.events));
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
