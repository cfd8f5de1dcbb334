import { judgeIdle, type EventType, type InstanceStatus, type ProviderState } from '@dumont/protocol';
import type { IdleObservation } from './idle-observation.js';

/**
 * Where idle is decided. A pure function of the stored facts of one instance, one input and an
 * explicit `now` (ms, server clock): no I/O, no clock reads. It returns the new facts, the events to
 * record, what to do with the hibernate command, and the next deadline at which the sweeper must look
 * again even if no heartbeat arrives.
 *
 * A hibernation is only ever fired in the answer to a heartbeat that is itself idle and fresh: the
 * command travels in that answer, so no decision rests on facts older than the beat that carries it.
 * Silence never counts as idleness, and a busy beat withdraws a hibernate command the agent has not
 * started yet.
 */

export interface PolicySettings {
  idleUtilizationPercent: number;
  hibernationWarningSeconds: number;
  offlineAfterSeconds: number;
  /** How long a hibernate command may stay unanswered before the instance goes back under watch. */
  hibernateTimeoutSeconds: number;
  /** Facts older than this (agent collection to server receipt) never fire a hibernation. */
  freshnessSeconds: number;
  /** A woken instance that sends no heartbeat within this long is back to `hibernated`. */
  wakeTimeoutSeconds: number;
}

export interface InstancePolicy {
  enabled: boolean;
  thresholdMinutes: number;
  ignoreGpuProcesses: boolean;
  /** A provider (not `none`) stops the machine after its agent confirmed; `hibernated` waits for it. */
  stopsThroughProvider: boolean;
  /** Record `would_hibernate` where a hibernation would fire; nothing is stopped. */
  dryRun: boolean;
  /**
   * Why an admin's policy wants the machine hibernated even if busy right now (outside a schedule's
   * active hours with `outside: hibernate`); null = only idleness counts.
   */
  forcedBy?: string | null;
  /** Hibernate, busy or not, once the machine has been online this long; null = no limit. */
  maxUptimeHours?: number | null;
}

/** The stored facts the policy reads and writes; everything else is derived. */
export interface LifecycleFacts {
  status: InstanceStatus;
  /** Server time of the last applied heartbeat; null before the first one. */
  lastHeartbeatAt: number | null;
  /** Start of the current idle streak (server time); null when not idle. */
  idleSince: number | null;
  scheduledAt: number | null;
  postponedUntil: number | null;
  hibernateIssuedAt: number | null;
  /** Start of the current online streak, for uptime. */
  onlineSince: number | null;
  /** When the instance went offline (its last beat plus the offline window); null unless offline. */
  offlineSince: number | null;
  /** What the provider last did for this instance; null before its first stop or start. */
  providerState: ProviderState | null;
  /** When a wake was requested; null unless `waking`. */
  wakeRequestedAt: number | null;
  /** Start of the open saving interval: hibernated now, or dry-run would-hibernate while idle. */
  savingSince: number | null;
}

/** A registered instance that never sent a beat (as the store creates it). */
export const NEVER_SEEN: LifecycleFacts = {
  status: 'offline',
  lastHeartbeatAt: null,
  idleSince: null,
  scheduledAt: null,
  postponedUntil: null,
  hibernateIssuedAt: null,
  onlineSince: null,
  offlineSince: null,
  providerState: null,
  wakeRequestedAt: null,
  savingSince: null,
};

/** The outcome the agent reported for the instance's hibernate command. */
export interface HibernateReport {
  succeeded: boolean;
  detail: string;
  /** The command was forced: the agent ran its hook without checking the machine was idle. */
  forced?: boolean;
}

export type PolicyInput =
  | {
      kind: 'heartbeat';
      observation: IdleObservation;
      /** The beat also carries the result of the instance's hibernate command (maybe re-sent). */
      hibernateReport?: HibernateReport | null;
      /** Why no hibernation may be scheduled or fired fleet-wide right now (mass silence), or null. */
      hold?: string | null;
    }
  | { kind: 'tick' }
  /** `by`: who asked, and for how long (the event records it: owners' keep-alives count against a budget). */
  | { kind: 'keep_alive'; until: number; by?: { owner: string; admin: boolean; minutes: number } }
  | { kind: 'hibernate_now'; reason: string }
  | { kind: 'policy_changed' }
  | ({ kind: 'hibernate_result' } & HibernateReport)
  | { kind: 'wake'; reason: string }
  /** The provider's final word on a stop or start (retries are the outbox's business). */
  | { kind: 'provider_result'; action: 'stop' | 'start'; done: boolean; message: string };

export interface PolicyEvent {
  type: EventType;
  reason: string;
  data?: Record<string, unknown>;
}

export interface Decision {
  facts: LifecycleFacts;
  events: PolicyEvent[];
  /** Queue a hibernate command now (the facts already say `hibernating`). */
  issueHibernate: boolean;
  /** Why the issued hibernate command is forced on a machine that may be busy (the agent skips its idle check); null = not forced. */
  forcedHibernate: string | null;
  /** Close the pending hibernate command: unanswered in time, or withdrawn because the machine is busy. */
  closeHibernate: { state: 'expired' | 'cancelled'; detail: string } | null;
  /** Leave the pending hibernate command out of this answer: the beat is busy while its hook runs. */
  withholdHibernate: boolean;
  /** Queue a provider action now (through the outbox, in this transaction). */
  providerAction: 'stop' | 'start' | null;
  /** Withdraw the queued provider stop: the machine is busy again before it was sent. */
  cancelProviderStop: boolean;
  /** Withdraw the queued provider start: the wake timed out (a start on the wire still decides). */
  cancelProviderStart: boolean;
  /** Next time the sweeper must evaluate this instance without a heartbeat; null = never. */
  deadline: number | null;
}

const MINUTE = 60_000;
const SECOND = 1000;

export function evaluate(
  facts: LifecycleFacts,
  policy: InstancePolicy,
  input: PolicyInput,
  settings: PolicySettings,
  now: number,
): Decision {
  const step = new Step(facts, policy, settings, now);
  switch (input.kind) {
    case 'heartbeat':
      step.heartbeat(input.observation, input.hibernateReport ?? null, input.hold ?? null);
      break;
    case 'tick':
      step.tick();
      break;
    case 'keep_alive':
      step.keepAlive(input.until, input.by);
      break;
    case 'hibernate_now':
      step.hibernateNow(input.reason);
      break;
    case 'policy_changed':
      step.policyChanged();
      break;
    case 'hibernate_result':
      step.hibernateResult(input);
      break;
    case 'wake':
      step.wake(input.reason);
      break;
    case 'provider_result':
      step.providerResult(input.action, input.done, input.message);
      break;
  }
  return step.decision();
}

/** Only silence (offline) and an unanswered hibernate command need the sweeper; firing needs a beat. */
export function nextDeadline(facts: LifecycleFacts, settings: PolicySettings): number | null {
  // The agent confirmed; the outbox retries the stop until it succeeds or gives up, then reports here.
  if (facts.status === 'hibernating' && facts.providerState === 'stopping') return null;
  if (facts.status === 'waking') return (facts.wakeRequestedAt ?? 0) + settings.wakeTimeoutSeconds * SECOND;
  if (facts.status === 'hibernating') {
    return (facts.hibernateIssuedAt ?? 0) + settings.hibernateTimeoutSeconds * SECOND;
  }
  if (facts.status !== 'active' && facts.status !== 'idle') return null;
  return facts.lastHeartbeatAt === null ? null : facts.lastHeartbeatAt + settings.offlineAfterSeconds * SECOND;
}

/** Idle time, measured between beats only: it never grows while no beat arrives. */
export function idleSeconds(facts: Pick<LifecycleFacts, 'idleSince' | 'lastHeartbeatAt'>): number {
  if (facts.idleSince === null || facts.lastHeartbeatAt === null) return 0;
  return Math.max(0, Math.floor((facts.lastHeartbeatAt - facts.idleSince) / SECOND));
}

/** The countdown every heartbeat carries: seconds to the scheduled hibernation, 0 once it is under way. */
export function hibernateInSeconds(facts: Pick<LifecycleFacts, 'status' | 'scheduledAt'>, now: number): number | null {
  if (facts.status === 'hibernating') return 0;
  if (facts.scheduledAt === null) return null;
  return Math.max(0, Math.ceil((facts.scheduledAt - now) / SECOND));
}

/**
 * Why the admin's policy hibernates this machine now even if it is busy: outside a schedule's active
 * hours (`hibernate`), or online past `max_uptime_hours`; null when neither, or hibernation is off.
 */
export function forcedReasonOf(policy: InstancePolicy, facts: Pick<LifecycleFacts, 'onlineSince'>, now: number): string | null {
  if (!policy.enabled) return null;
  if (policy.forcedBy) return policy.forcedBy;
  const maxUptime = policy.maxUptimeHours;
  if (maxUptime !== null && maxUptime !== undefined && facts.onlineSince !== null && now - facts.onlineSince >= maxUptime * 3_600_000) {
    return `online for ${Math.floor((now - facts.onlineSince) / 60_000)} min, over the policy's max_uptime_hours of ${maxUptime}`;
  }
  return null;
}

class Step {
  private readonly f: LifecycleFacts;
  private readonly events: PolicyEvent[] = [];
  private issueHibernate = false;
  private forcedHibernate: string | null = null;
  private closeHibernate: Decision['closeHibernate'] = null;
  private withholdHibernate = false;
  private providerAction: Decision['providerAction'] = null;
  private cancelProviderStop = false;
  private cancelProviderStart = false;
  private readonly statusBefore: InstanceStatus;

  constructor(
    facts: LifecycleFacts,
    private readonly policy: InstancePolicy,
    private readonly settings: PolicySettings,
    private readonly now: number,
  ) {
    this.f = { ...facts };
    this.statusBefore = facts.status;
  }

  decision(): Decision {
    this.closeSavingInterval();
    return {
      facts: this.f,
      events: this.events,
      issueHibernate: this.issueHibernate,
      forcedHibernate: this.issueHibernate ? this.forcedHibernate : null,
      closeHibernate: this.closeHibernate,
      withholdHibernate: this.withholdHibernate,
      providerAction: this.providerAction,
      cancelProviderStop: this.cancelProviderStop,
      cancelProviderStart: this.cancelProviderStart,
      deadline: nextDeadline(this.f, this.settings),
    };
  }

  /**
   * Savings are the time spent `hibernated` (the machine stopped), and in dry-run the time an
   * instance stayed idle after `would_hibernate`. Leaving either closes the interval.
   */
  private closeSavingInterval(): void {
    const { f } = this;
    if (this.statusBefore === 'hibernated' && f.status !== 'hibernated') f.savingSince = null;
    if (f.status === 'hibernated' && this.statusBefore !== 'hibernated') f.savingSince = this.now;
    if (f.status !== 'idle' && f.status !== 'hibernated') f.savingSince = null;
  }

  private emit(type: EventType, reason: string, data?: Record<string, unknown>): void {
    this.events.push(data ? { type, reason, data } : { type, reason });
  }

  private get thresholdMs(): number {
    return this.policy.thresholdMinutes * MINUTE;
  }

  private get forcedReason(): string | null {
    return forcedReasonOf(this.policy, this.f, this.now);
  }

  private cancelSchedule(reason: string): void {
    if (this.f.scheduledAt === null) return;
    this.emit('hibernation_cancelled', reason, { scheduled_at: new Date(this.f.scheduledAt).toISOString() });
    this.f.scheduledAt = null;
  }

  heartbeat(obs: IdleObservation, report: HibernateReport | null, hold: string | null): void {
    const { f, now } = this;
    const stopping = f.status === 'hibernating' && f.providerState === 'stopping';
    if (report !== null && f.status === 'hibernated') {
      // The agent re-sent the result that hibernated the instance (its answer was lost): a copy of a
      // report already applied, not a sign of life.
      return;
    }
    // While the stop waits, a re-sent result is a copy too, but the facts beside it describe the
    // machine now: they are judged below, and a busy machine withdraws the stop.
    if (report !== null && f.status === 'hibernating' && !stopping) {
      this.hibernateResult(report);
      if (report.succeeded) {
        // The beat that reports success describes the machine while its hook ran; it is not judged.
        f.lastHeartbeatAt = now;
        return;
      }
    }

    const previousBeat = f.lastHeartbeatAt;
    const wasAway = f.status === 'offline' || f.status === 'hibernated' || f.status === 'waking';
    if (f.status === 'hibernated' || f.status === 'waking') {
      this.emit(
        'woke',
        f.status === 'waking'
          ? `first heartbeat ${Math.round((now - (f.wakeRequestedAt ?? now)) / SECOND)} s after the wake request`
          : 'heartbeat received from a hibernated instance',
      );
      f.wakeRequestedAt = null;
      // The machine runs: no stop queued for an earlier hibernation may reach it, no start is needed.
      this.cancelProviderStop = true;
      if (f.providerState === 'starting') {
        this.cancelProviderStart = true;
        f.providerState = 'running';
      }
    } else if (f.status === 'offline') {
      this.emit(
        'online',
        previousBeat === null ? 'first heartbeat' : `heartbeat after ${Math.round((now - previousBeat) / SECOND)} s of silence`,
      );
    }
    if (wasAway) {
      f.onlineSince = now;
      f.offlineSince = null;
    }
    f.lastHeartbeatAt = now;

    const gpuVerdict = judgeIdle(obs, {
      idleUtilizationPercent: this.settings.idleUtilizationPercent,
      ignoreGpuProcesses: this.policy.ignoreGpuProcesses,
    });
    // An external signal that says "in use" (or cannot say) is activity like a busy GPU.
    const verdict = gpuVerdict.idle && obs.signalActivity ? { idle: false as const, reason: obs.signalActivity } : gpuVerdict;
    if (f.status === 'hibernating') {
      // Activity since the idle streak began, or (an operator's command on a busy-looking instance)
      // since the command was issued.
      const quietSince = f.idleSince ?? f.hibernateIssuedAt;
      const freshActivity = obs.lastActivityAt !== null && quietSince !== null && Math.min(obs.lastActivityAt, now) > quietSince;
      const busyReason = verdict.idle ? (freshActivity ? 'the agent reported recent activity (last_activity)' : null) : verdict.reason;
      if (stopping) this.whileStopping(busyReason);
      else this.whileHibernating(obs, busyReason);
      return;
    }


    // Idle time is measured only across consecutive beats: a gap as long as the offline window
    // (missed beats, a server restart) starts a new streak instead of counting the silence as idle.
    const consecutive =
      !wasAway && previousBeat !== null && now - previousBeat < this.settings.offlineAfterSeconds * SECOND;

    if (!verdict.idle) {
      if (f.idleSince !== null) this.emit('active_again', verdict.reason);
      f.idleSince = null;
      f.status = 'active';
      const forced = this.forcedReason;
      if (forced === null) {
        this.cancelSchedule(`activity: ${verdict.reason}`);
        return;
      }
      // The admin chose to hibernate even a busy machine here: the warning still runs, keep-alive holds.
      this.reconsiderSchedule(`activity: ${verdict.reason}`, hold, now - obs.observedAt <= this.settings.freshnessSeconds * SECOND, forced);
      return;
    }

    let start = f.idleSince !== null && consecutive ? f.idleSince : now;
    if (obs.lastActivityAt !== null) start = Math.max(start, Math.min(obs.lastActivityAt, now));
    if (f.idleSince === null || !consecutive) {
      this.emit('idle_detected', 'all GPUs below the idle threshold, no GPU process, every collector answered', {
        idle_utilization_percent: this.settings.idleUtilizationPercent,
      });
    }
    const cancelReason =
      f.idleSince !== null && !consecutive
        ? 'heartbeats were missed; the idle streak restarted'
        : f.idleSince !== null && start > f.idleSince
          ? 'activity: the agent reported recent activity (last_activity)'
          : null;
    f.idleSince = start;
    f.status = 'idle';
    this.reconsiderSchedule(cancelReason, hold, now - obs.observedAt <= this.settings.freshnessSeconds * SECOND, this.forcedReason);
  }

  /**
   * A beat while the hibernate command is out. Busy, with the hook not running (not started yet, or
   * an agent that cannot say): the command is withdrawn and nothing will be stopped. Busy while the
   * agent runs the hook: the hook may be what keeps the GPU busy (saving a checkpoint); the agent
   * checks the machine itself before and after it, so the command stays, but this answer does not
   * carry it.
   */
  private whileHibernating(obs: IdleObservation, busyReason: string | null): void {
    if (busyReason === null) return;
    // A forced hibernation was issued knowing the machine may be busy; it stands while its reason does.
    if (this.forcedReason !== null) return;
    if (obs.hibernateHookRunning) {
      this.withholdHibernate = true;
      return;
    }
    const { f } = this;
    this.closeHibernate = { state: 'cancelled', detail: `the machine is busy again: ${busyReason}` };
    this.emit('hibernation_cancelled', `activity: ${busyReason}; the hibernate command was withdrawn before its hook ran`);
    f.status = 'active';
    f.idleSince = null;
    f.scheduledAt = null;
    f.hibernateIssuedAt = null;
  }

  /**
   * A beat after the agent confirmed, while the provider stop waits in the outbox (a provider that is
   * down is retried for hours, and the agent's quiet period ends long before). Someone using the
   * machine again withdraws the stop; a stop already on the wire cannot be, and its outcome decides.
   */
  private whileStopping(busyReason: string | null): void {
    if (busyReason === null) return;
    // The agent saved its state for a forced hibernation; busy is what was forced, while the reason holds.
    if (this.forcedReason !== null) return;
    const { f } = this;
    this.cancelProviderStop = true;
    this.emit('hibernation_cancelled', `activity: ${busyReason}; the provider stop was withdrawn`);
    f.status = 'active';
    f.idleSince = null;
    f.scheduledAt = null;
    f.hibernateIssuedAt = null;
    f.providerState = null;
  }

  /** Schedules, keeps or cancels the hibernation of an idle instance, then fires it when due. */
  private reconsiderSchedule(activityReason: string | null, hold: string | null, fresh: boolean, forced: string | null = null): void {
    const { f, now } = this;
    const idleMs = now - (f.idleSince ?? now);
    const postponed = f.postponedUntil !== null && f.postponedUntil > now;
    const idleLongEnough = f.status === 'idle' && idleMs >= this.thresholdMs;
    if (f.scheduledAt !== null) {
      const reason = !this.policy.enabled
        ? 'hibernation disabled'
        : hold !== null
          ? hold
          : postponed
            ? 'keep-alive'
            : !idleLongEnough && forced === null
              ? (activityReason ?? 'idle time below the threshold')
              : null;
      if (reason !== null) this.cancelSchedule(reason);
    } else if (this.policy.enabled && hold === null && !postponed && (idleLongEnough || forced !== null)) {
      f.scheduledAt = now + this.settings.hibernationWarningSeconds * SECOND;
      if (idleLongEnough) {
        this.emit('hibernation_scheduled', `idle for ${Math.floor(idleMs / SECOND)} s (threshold ${this.policy.thresholdMinutes} min)`, {
          scheduled_at: new Date(f.scheduledAt).toISOString(),
          idle_seconds: Math.floor(idleMs / SECOND),
        });
      } else {
        this.emit('hibernation_scheduled', `forced by policy: ${forced}`, {
          scheduled_at: new Date(f.scheduledAt).toISOString(),
          idle_seconds: Math.floor(idleMs / SECOND),
          forced: true,
        });
      }
    }
    if (fresh) this.fireIfDue(idleLongEnough ? null : forced);
  }

  /** `forced`: why it fires although the machine is not idle past its threshold (the agent is told). */
  private fireIfDue(forced: string | null = null): void {
    const { f, now } = this;
    if (f.scheduledAt === null || now < f.scheduledAt) return;
    if (this.policy.dryRun) {
      // Everything up to the moment of hibernation ran as usual; from here nothing is stopped.
      const idleFor = f.idleSince === null ? 0 : Math.floor((now - f.idleSince) / SECOND);
      this.emit('would_hibernate', `dry-run: idle for ${idleFor} s (threshold ${this.policy.thresholdMinutes} min); nothing was stopped`, {
        idle_seconds: idleFor,
        threshold_minutes: this.policy.thresholdMinutes,
        idle_utilization_percent: this.settings.idleUtilizationPercent,
        idle_since: f.idleSince === null ? null : new Date(f.idleSince).toISOString(),
      });
      f.scheduledAt = null;
      if (f.status === 'idle') {
        f.idleSince = now;
        f.savingSince ??= now;
      }
      return;
    }
    f.status = 'hibernating';
    f.scheduledAt = null;
    f.hibernateIssuedAt = now;
    this.issueHibernate = true;
    this.forcedHibernate = forced;
  }

  tick(): void {
    const { f, now, settings } = this;
    if (f.status === 'waking') {
      if (f.wakeRequestedAt !== null && now >= f.wakeRequestedAt + settings.wakeTimeoutSeconds * SECOND) {
        this.emit('wake_failed', `no heartbeat within ${settings.wakeTimeoutSeconds} s of the wake request`);
        f.status = 'hibernated';
        f.wakeRequestedAt = null;
        // A start still being retried would run the machine while it is shown hibernated.
        if (f.providerState === 'starting') {
          this.cancelProviderStart = true;
          f.providerState = 'start_failed';
        }
      }
      return;
    }
    if (f.status === 'hibernating' && f.providerState === 'stopping') return;
    if (f.status === 'hibernating') {
      if (f.hibernateIssuedAt !== null && now >= f.hibernateIssuedAt + settings.hibernateTimeoutSeconds * SECOND) {
        const why = `no result for the hibernate command within ${settings.hibernateTimeoutSeconds} s; nothing was stopped`;
        this.closeHibernate = { state: 'expired', detail: 'no result before the hibernate timeout' };
        this.backUnderWatch(why);
      }
      return;
    }
    if (f.status !== 'active' && f.status !== 'idle') return;
    if (f.lastHeartbeatAt !== null && now >= f.lastHeartbeatAt + settings.offlineAfterSeconds * SECOND) {
      this.cancelSchedule('instance went offline');
      f.status = 'offline';
      f.idleSince = null;
      f.onlineSince = null;
      // Stamped with the deadline it crossed, not the moment the sweeper noticed.
      f.offlineSince = f.lastHeartbeatAt + settings.offlineAfterSeconds * SECOND;
      this.emit('offline', `no heartbeat for ${settings.offlineAfterSeconds} s`, {
        last_heartbeat: new Date(f.lastHeartbeatAt).toISOString(),
      });
    }
  }

  keepAlive(until: number, by?: { owner: string; admin: boolean; minutes: number }): void {
    this.f.postponedUntil = until;
    this.emit('keep_alive', `hibernation postponed until ${new Date(until).toISOString()}`, {
      postponed_until: new Date(until).toISOString(),
      ...(by === undefined ? {} : { minutes: by.minutes, by: by.owner, by_admin: by.admin }),
    });
    this.cancelSchedule('keep-alive');
  }

  /**
   * An operator's explicit hibernate command: no idle threshold, no warning. It still goes out only
   * in the answer to a beat, and a busy beat withdraws it like any other.
   */
  hibernateNow(reason: string): void {
    const { f, now } = this;
    if (f.status === 'hibernating' || f.status === 'hibernated') return;
    if (f.scheduledAt !== null) this.cancelSchedule(reason);
    f.scheduledAt = now;
    this.fireIfDue();
  }

  policyChanged(): void {
    const { f } = this;
    if (f.scheduledAt === null) return;
    if (!this.policy.enabled) this.cancelSchedule('hibernation disabled');
    else if (this.forcedReason !== null) return;
    else if (f.idleSince === null || this.now - f.idleSince < this.thresholdMs) this.cancelSchedule('threshold raised');
  }

  hibernateResult(report: HibernateReport): void {
    const { f } = this;
    if (f.status !== 'hibernating' || f.providerState === 'stopping') return;
    // Nothing vouches for this machine being idle but the reason to force it, or hibernation is off
    // now: the agent saved its state, and the machine is left running.
    const lapsed = !this.policy.enabled
      ? 'hibernation was turned off'
      : report.forced && this.forcedReason === null
        ? 'the reason to force it ended (the active hours began, or the policy changed)'
        : null;
    if (report.succeeded && lapsed !== null) {
      this.emit('hibernation_cancelled', `${lapsed} while the hibernate command was out; the agent saved its state and nothing was stopped`);
      f.status = this.watchedStatus();
      f.idleSince = null;
      f.scheduledAt = null;
      f.hibernateIssuedAt = null;
      return;
    }
    if (report.succeeded && this.policy.dryRun) {
      // Dry-run was turned on while the command was out: the agent saved its state, nothing is stopped.
      this.emit('hibernation_cancelled', 'dry-run was turned on while the hibernate command was out; the agent saved its state and nothing was stopped');
      f.status = this.watchedStatus();
      f.idleSince = null;
      f.scheduledAt = null;
      f.hibernateIssuedAt = null;
      return;
    }
    if (report.succeeded && this.policy.stopsThroughProvider) {
      // The agent saved its state; the machine is stopped only when the provider says so.
      f.providerState = 'stopping';
      f.idleSince = null;
      f.scheduledAt = null;
      this.providerAction = 'stop';
      return;
    }
    if (report.succeeded) {
      f.status = 'hibernated';
      f.idleSince = null;
      f.scheduledAt = null;
      f.hibernateIssuedAt = null;
      f.onlineSince = null;
      this.emit('hibernated', 'the agent saved its state and confirmed the hibernate command', { detail: report.detail });
    } else {
      this.backUnderWatch(`the hibernate command failed: ${report.detail}`);
    }
  }

  /** A wake request (the route refuses one unless `hibernated`): start through the provider, then wait for a beat. */
  wake(reason: string): void {
    const { f, now } = this;
    if (f.status !== 'hibernated') return;
    f.status = 'waking';
    f.wakeRequestedAt = now;
    this.emit('wake_requested', reason);
    this.cancelProviderStop = true;
    if (this.policy.stopsThroughProvider) {
      f.providerState = 'starting';
      this.providerAction = 'start';
    }
  }

  /**
   * The provider's final outcome. A successful stop makes the instance `hibernated` whatever it
   * became meanwhile (a stop already on the wire when activity withdrew it): the machine is stopped.
   */
  providerResult(action: 'stop' | 'start', done: boolean, message: string): void {
    const { f } = this;
    if (action === 'stop') {
      const wasStopping = f.status === 'hibernating' && f.providerState === 'stopping';
      if (done) {
        f.providerState = 'stopped';
        if (f.status === 'hibernated' || f.status === 'waking') return;
        // Not stopping any more: activity withdrew the stop while it was on the wire. A hibernate
        // command issued since has nothing left to do.
        if (f.status === 'hibernating' && !wasStopping) this.closeHibernate = { state: 'cancelled', detail: 'the provider stopped the machine' };
        f.status = 'hibernated';
        f.idleSince = null;
        f.scheduledAt = null;
        f.hibernateIssuedAt = null;
        f.onlineSince = null;
        this.emit(
          'hibernated',
          wasStopping
            ? 'the agent saved its state and the provider stopped the machine'
            : 'the provider stopped the machine: the stop was already sent when activity withdrew it',
        );
        return;
      }
      f.providerState = 'stop_failed';
      if (wasStopping) this.backUnderWatch(`the provider could not stop the machine: ${message}`);
      return;
    }
    // A start answered late, after the machine was hibernated again: the stop under way is what counts.
    if (f.status === 'hibernating' && f.providerState === 'stopping') return;
    if (done) {
      f.providerState = 'running';
      return;
    }
    f.providerState = 'start_failed';
    if (f.status === 'waking') {
      this.emit('wake_failed', `the provider could not start the machine: ${message}`);
      f.status = 'hibernated';
      f.wakeRequestedAt = null;
    }
  }

  /**
   * Back under watch: `active`, whose offline deadline the sweeper keeps — or `offline` for an
   * instance that never sent a beat (an operator's command on it), which would have no deadline.
   */
  private watchedStatus(): InstanceStatus {
    return this.f.lastHeartbeatAt === null ? 'offline' : 'active';
  }

  /** After a failed or unanswered hibernation: no stop, a fresh idle streak, watched as usual. */
  private backUnderWatch(reason: string): void {
    const { f } = this;
    this.emit('hibernation_failed', reason);
    f.status = this.watchedStatus();
    f.idleSince = null;
    f.scheduledAt = null;
    f.hibernateIssuedAt = null;
  }
}
