import {
  aggregateGpuMetrics,
  DumontError,
  idleFactsOf,
  isForcedHibernate,
  parseTimestamp,
  type CommandResult,
  type DeliveredCommand,
  type HeartbeatRequest,
  type HeartbeatResponse,
} from '@dumont/protocol';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { evaluate, hibernateInSeconds, type Decision, type HibernateReport } from '../policy/hibernation-policy.js';
import type { IdleObservation } from '../policy/idle-observation.js';
import { sameHash } from '../secrets.js';
import type { AgentCommand, FleetRepository, FleetStore, InstanceLifecycle, MetricsSample } from '../store/store.js';
import { InstanceWrite, providerInstanceIdOf } from './instance-write.js';
import type { PolicyBook } from './policy-book.js';
import type { SignalBoard } from './signal-board.js';
import type { MassSilenceGuard } from './mass-silence.js';
import type { HistoryRecorder } from './history-recorder.js';
import { iso } from './views.js';

/**
 * What a beat says about idleness, on the server clock. `last_activity` is mapped through the age the
 * agent reports (so clock skew cannot shift idle time); when the facts were collected is estimated
 * through the agent's clock offset at its previous beat (so a beat that sat in a queue is not fresh).
 */
function observationOf(beat: HeartbeatRequest, beatAt: number, now: number, instance: InstanceLifecycle): IdleObservation {
  let lastActivityAt: number | null = null;
  const activity = beat.last_activity ? parseTimestamp(beat.last_activity) : null;
  if (activity !== null) lastActivityAt = now - Math.max(0, beatAt - activity);
  const lastBeatAt = instance.facts.lastHeartbeatAt;
  const offset = instance.agentTimestampMs !== null && lastBeatAt !== null ? lastBeatAt - instance.agentTimestampMs : null;
  const observedAt = offset === null ? now : Math.min(now, beatAt + offset);
  const commandId = instance.hibernateCommandId;
  const hibernateHookRunning = commandId !== null && (beat.running_commands ?? []).includes(commandId);
  return { ...idleFactsOf(beat), lastActivityAt, observedAt, hibernateHookRunning };
}

/** The result this beat carries for the instance's hibernate command, first or re-sent. */
function hibernateReportOf(beat: HeartbeatRequest, instance: InstanceLifecycle, forced = false): HibernateReport | null {
  const commandId = instance.hibernateCommandId;
  const result = commandId === null ? undefined : beat.command_results?.find((r) => r.id === commandId);
  return result ? { succeeded: result.status === 'succeeded', detail: result.detail ?? '', forced } : null;
}

/** What the beat reported, as kept for display. */
function metricsOf(beat: HeartbeatRequest, beatAt: number): MetricsSample {
  const gpus = beat.gpus ?? [];
  const m = gpus.length > 0 ? aggregateGpuMetrics(gpus) : (beat.gpu_metrics ?? {});
  return {
    agentTimestamp: beat.timestamp,
    agentTimestampMs: beatAt,
    aggregate: {
      utilization_percent: m.utilization_percent ?? null,
      memory_used_mb: m.memory_used_mb ?? null,
      memory_total_mb: m.memory_total_mb ?? null,
      temperature_celsius: m.temperature_celsius ?? null,
      power_watts: m.power_watts ?? null,
    },
    gpus,
    gpuCount: gpus.length > 0 ? gpus.length : beat.gpu_metrics ? 1 : 0,
    processCount: beat.process_count ?? null,
    activeUsers: beat.active_users ?? null,
    lastActivity: beat.last_activity ?? null,
    agentVersion: beat.agent_version ?? null,
    collectorErrors: beat.collector_errors ?? [],
  };
}

export class HeartbeatService {
  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
    private readonly config: ServerConfig,
    private readonly policies: PolicyBook,
    private readonly signals: SignalBoard,
    private readonly massSilence: MassSilenceGuard | null = null,
    private readonly history: HistoryRecorder | null = null,
  ) {}

  /** Applies one heartbeat; answers only after the change is committed (durably, if it was a transition). */
  async ingest(tokenHash: string, beat: HeartbeatRequest): Promise<HeartbeatResponse> {
    const now = this.clock.now();
    const beatAt = this.beatTime(beat, now);
    const outcome = (await this.tryPlainBeat(tokenHash, beat, beatAt, now)) ?? (await this.store.transaction(async (repo) => {
      const instance = await repo.getLifecycle(beat.instance_id, { forUpdate: true });
      if (!instance || !sameHash(instance.agentTokenHash, tokenHash)) return null;
      return this.applyBeat(repo, instance, beat, beatAt, now);
    }));
    if (outcome === null) {
      // Looked up only on failure, so a good beat costs one indexed read by instance id.
      if ((await this.store.findInstanceIdByTokenHash(tokenHash)) === undefined) {
        throw new DumontError('unauthorized', 'unknown agent token (register the instance to get one)', 'authorization');
      }
      throw new DumontError('forbidden', `this agent token belongs to another instance, not ${beat.instance_id}`, 'instance_id');
    }
    // Only appended to a batch in memory: written off this path, about a second later.
    this.history?.record(beat.instance_id, now, beat);
    return {
      success: true,
      commands: outcome.commands,
      hibernate_in_seconds: outcome.hibernateIn,
      next_heartbeat_in: this.config.heartbeatIntervalSeconds,
    };
  }

  /**
   * The agent's clock, bounded by ours: a timestamp far in the future would make every later beat look
   * older than it and be ignored, so it is refused (the agent's log says to fix the host's clock).
   */
  private beatTime(beat: HeartbeatRequest, now: number): number {
    const beatAt = parseTimestamp(beat.timestamp);
    if (beatAt === null) throw new DumontError('invalid_request', 'timestamp: must be an RFC 3339 date-time', 'timestamp');
    const ahead = beatAt - now;
    if (ahead > this.config.maxClockSkewSeconds * 1000) {
      throw new DumontError(
        'invalid_request',
        `timestamp: ${Math.round(ahead / 1000)} s ahead of the server clock (at most ${this.config.maxClockSkewSeconds} s); fix the host's clock (NTP)`,
        'timestamp',
      );
    }
    return beatAt;
  }

  /**
   * Most beats only refresh metrics. Where the store says it pays (`optimisticPlainBeats`), such a beat
   * is read without a lock (committed state) and written with one compare-and-set on the version it
   * read (`writePlainBeat`). Anything more — a result, an open command, a transition, an event, a
   * provider action — takes the locked path, and so does a lost race: whatever committed between the
   * read and the write moved the version, and the beat is then decided again on the row as it is now.
   */
  private async tryPlainBeat(tokenHash: string, beat: HeartbeatRequest, beatAt: number, now: number) {
    if (!this.store.optimisticPlainBeats || (beat.command_results?.length ?? 0) > 0) return null;
    const instance = await this.store.getLifecycle(beat.instance_id);
    if (!instance || instance.openCommands > 0 || !sameHash(instance.agentTokenHash, tokenHash)) return null;
    const write = new InstanceWrite(instance, now, this.config, this.policies.current());
    if (this.isStale(instance, beatAt, now)) return null;
    const decision = this.decide(write, beat, beatAt, now);
    // Decided before anything is written: a beat that changes more than metrics takes the locked path.
    const plain =
      !decision.issueHibernate &&
      decision.closeHibernate === null &&
      decision.providerAction === null &&
      !decision.cancelProviderStop &&
      !decision.cancelProviderStart &&
      decision.events.length === 0 &&
      decision.facts.status === instance.facts.status;
    if (!plain) return null;
    await this.absorbBeat(this.store, write, decision, beat, beatAt);
    if (!(await write.tryCommitPlain(this.store))) return null;
    return { commands: [], hibernateIn: hibernateInSeconds(write.facts, now) };
  }

  private decide(write: InstanceWrite, beat: HeartbeatRequest, beatAt: number, now: number, forcedCommand = false): Decision {
    const { policy, settings, effective } = write.evaluation();
    const observation = observationOf(beat, beatAt, now, write.instance);
    if (effective.signals.length > 0) {
      const subject = {
        instanceId: write.instance.instanceId,
        hostname: beat.hostname,
        providerInstanceId: providerInstanceIdOf(write.instance.instanceId, write.settings),
      };
      observation.signalActivity = this.signals.judge(subject, effective.signals, beat.activity_signals, now);
    }
    const input = {
      kind: 'heartbeat',
      observation,
      hibernateReport: hibernateReportOf(beat, write.instance, forcedCommand),
      hold: this.massSilence?.hold ?? null,
    } as const;
    return evaluate(write.facts, policy, input, settings, now);
  }

  private async absorbBeat(repo: FleetRepository, write: InstanceWrite, decision: Decision, beat: HeartbeatRequest, beatAt: number) {
    await write.absorb(decision, repo, 'policy');
    write.change.metrics = metricsOf(beat, beatAt);
    // Written only when it changed: the list sorts by it through an index, which an unchanged value
    // written every beat would cost for nothing.
    if (beat.hostname !== write.instance.hostname) write.change.hostname = beat.hostname;
    write.change.heartbeatCount = write.instance.heartbeatCount + 1;
  }

  private async applyBeat(repo: FleetRepository, instance: InstanceLifecycle, beat: HeartbeatRequest, beatAt: number, now: number) {
    const write = new InstanceWrite(instance, now, this.config, this.policies.current());
    // Command rows first; what a result means for the lifecycle is decided with the beat that carries it.
    let forcedCommand = false;
    for (const result of beat.command_results ?? []) {
      const command = await this.settle(repo, write, result, now);
      // The stored args say whether the agent ran the hook without its idle check.
      if (command && command.id === instance.hibernateCommandId) forcedCommand = isForcedHibernate(command.args) !== null;
    }
    // A result or a hibernation can stop the machine: judged by the policies as this transaction sees
    // them, not by a copy another replica may have changed a moment ago.
    const freshPolicies = hibernateReportOf(beat, instance) !== null;
    if (freshPolicies) write.usePolicies(await this.policies.load(repo));
    let withhold = false;
    if (!this.isStale(instance, beatAt, now)) {
      let decision = this.decide(write, beat, beatAt, now, forcedCommand);
      if (decision.issueHibernate && !freshPolicies) {
        write.usePolicies(await this.policies.load(repo));
        decision = this.decide(write, beat, beatAt, now, forcedCommand);
      }
      withhold = decision.withholdHibernate;
      await this.absorbBeat(repo, write, decision, beat, beatAt);
    } else {
      // A delayed copy of an older beat: its facts are not applied, but a result it carries still counts.
      const report = hibernateReportOf(beat, instance, forcedCommand);
      if (report) {
        const { policy, settings } = write.evaluation();
        await write.absorb(evaluate(write.facts, policy, { kind: 'hibernate_result', ...report }, settings, now), repo, 'policy');
      }
    }
    const commands = await this.deliver(repo, write, now, withhold);
    await write.commit(repo);
    return { commands, hibernateIn: hibernateInSeconds(write.facts, now) };
  }

  /**
   * A beat not newer than the last applied one is a delayed retry: it must not roll state back. After
   * a silence as long as the offline window the agent's clock may have been reset, so it applies again.
   * While a hibernate command is out every beat is judged: an agent whose clock stepped back sends
   * beats that look old but describe the machine now, and a busy one must still withdraw the command.
   */
  private isStale(instance: InstanceLifecycle, beatAt: number, now: number): boolean {
    if (instance.facts.status === 'hibernating') return false;
    if (instance.agentTimestampMs === null || beatAt > instance.agentTimestampMs) return false;
    const lastBeatAt = instance.facts.lastHeartbeatAt;
    const silentFor = lastBeatAt === null ? Infinity : now - lastBeatAt;
    return silentFor < this.config.offlineAfterSeconds * 1000;
  }

  /** Records one command result on its command; a repeated or unknown result changes nothing. Returns the command. */
  private async settle(repo: FleetRepository, write: InstanceWrite, result: CommandResult, now: number): Promise<AgentCommand | undefined> {
    const command = await repo.getCommand(result.id);
    if (!command || command.instanceId !== write.instance.instanceId) return undefined;
    const detail = result.detail ?? '';
    const changed = await repo.updateCommand(command.id, ['pending', 'delivered'], { state: result.status, completedAt: now, detail });
    if (!changed) return command;
    write.openCommandsDelta -= 1;
    write.events.push({
      type: result.status === 'succeeded' ? 'command_succeeded' : 'command_failed',
      reason: `${command.type} ${result.status}${detail ? `: ${detail.slice(0, 200)}` : ''}`,
      data: { command_id: command.id, command: command.type },
    });
    return command;
  }

  /**
   * Every open command goes out in every answer until its result arrives — except a hibernate command
   * in the answer to a busy beat (its hook is running; see the policy).
   */
  private async deliver(repo: FleetRepository, write: InstanceWrite, now: number, withholdHibernate: boolean): Promise<DeliveredCommand[]> {
    if (write.instance.openCommands + write.openCommandsDelta <= 0) return [];
    const delivered: DeliveredCommand[] = [];
    for (const command of await repo.openCommands(write.instance.instanceId)) {
      if (withholdHibernate && command.id === write.hibernateCommandId) continue;
      if (command.state === 'pending') {
        await repo.updateCommand(command.id, ['pending'], { state: 'delivered', deliveredAt: now });
        write.events.push({ type: 'command_delivered', reason: `${command.type} delivered in a heartbeat response`, data: { command_id: command.id } });
      }
      delivered.push({ id: command.id, type: command.type, args: command.args, issued_at: iso(command.issuedAt)! });
    }
    return delivered;
  }
}
