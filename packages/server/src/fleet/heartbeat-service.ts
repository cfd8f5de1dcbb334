import {
  aggregateGpuMetrics,
  DumontError,
  hibernateArgsOf,
  idleFactsOf,
  parseTimestamp,
  type CommandResult,
  type CommandType,
  type DeliveredCommand,
  type HeartbeatRequest,
  type HeartbeatResponse,
} from '@dumont/protocol';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { evaluate, hibernateInSeconds, type Decision, type HibernateReport } from '../policy/hibernation-policy.js';
import type { IdleObservation } from '../policy/idle-observation.js';
import { sameHash } from '../secrets.js';
import type { InstanceUpdate } from '../store/schema.js';
import type { FleetRepository, FleetStore, LifecycleRow } from '../store/store.js';
import { idleRuleOfRow, InstanceWrite, policyOf } from './lifecycle-rows.js';
import type { MassSilenceGuard } from './mass-silence.js';
import type { HistoryRecorder } from './history-recorder.js';
import { iso } from './views.js';

/**
 * What a beat says about idleness, on the server clock. `last_activity` is mapped through the age the
 * agent reports (so clock skew cannot shift idle time); when the facts were collected is estimated
 * through the agent's clock offset at its previous beat (so a beat that sat in a queue is not fresh).
 */
function observationOf(beat: HeartbeatRequest, beatAt: number, now: number, row: LifecycleRow): IdleObservation {
  let lastActivityAt: number | null = null;
  const activity = beat.last_activity ? parseTimestamp(beat.last_activity) : null;
  if (activity !== null) lastActivityAt = now - Math.max(0, beatAt - activity);
  const offset = row.agent_timestamp_ms !== null && row.last_heartbeat_at !== null ? row.last_heartbeat_at - row.agent_timestamp_ms : null;
  const observedAt = offset === null ? now : Math.min(now, beatAt + offset);
  const hibernateHookRunning = row.hibernate_command_id !== null && (beat.running_commands ?? []).includes(row.hibernate_command_id);
  return { ...idleFactsOf(beat), lastActivityAt, observedAt, hibernateHookRunning };
}

/** The result this beat carries for the instance's hibernate command, first or re-sent. */
function hibernateReportOf(beat: HeartbeatRequest, row: LifecycleRow): HibernateReport | null {
  const result = row.hibernate_command_id === null ? undefined : beat.command_results?.find((r) => r.id === row.hibernate_command_id);
  return result ? { succeeded: result.status === 'succeeded', detail: result.detail ?? '' } : null;
}

function metricsPatch(beat: HeartbeatRequest, beatAt: number, row: LifecycleRow): InstanceUpdate {
  const gpus = beat.gpus ?? [];
  const m = gpus.length > 0 ? aggregateGpuMetrics(gpus) : (beat.gpu_metrics ?? {});
  return {
    // Written only when it changed: the list sorts by it through an index, which an unchanged value
    // written every beat would cost for nothing.
    ...(beat.hostname !== row.hostname ? { hostname: beat.hostname } : {}),
    agent_timestamp: beat.timestamp,
    agent_timestamp_ms: beatAt,
    utilization_percent: m.utilization_percent ?? null,
    memory_used_mb: m.memory_used_mb ?? null,
    memory_total_mb: m.memory_total_mb ?? null,
    temperature_celsius: m.temperature_celsius ?? null,
    power_watts: m.power_watts ?? null,
    gpus_json: JSON.stringify(gpus),
    gpu_count: gpus.length > 0 ? gpus.length : beat.gpu_metrics ? 1 : 0,
    process_count: beat.process_count ?? null,
    active_users: beat.active_users ?? null,
    last_activity: beat.last_activity ?? null,
    agent_version: beat.agent_version ?? null,
    collector_errors_json: JSON.stringify(beat.collector_errors ?? []),
  };
}

export class HeartbeatService {
  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
    private readonly config: ServerConfig,
    private readonly massSilence: MassSilenceGuard | null = null,
    private readonly history: HistoryRecorder | null = null,
  ) {}

  /** Applies one heartbeat; answers only after the change is committed (durably, if it was a transition). */
  async ingest(tokenHash: string, beat: HeartbeatRequest): Promise<HeartbeatResponse> {
    const now = this.clock.now();
    const beatAt = this.beatTime(beat, now);
    const outcome = (await this.tryPlainBeat(tokenHash, beat, beatAt, now)) ?? (await this.store.transaction(async (repo) => {
      const row = await repo.getLifecycle(beat.instance_id, { forUpdate: true });
      if (!row || !sameHash(row.agent_token_hash, tokenHash)) return null;
      return this.applyBeat(repo, row, beat, beatAt, now);
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
    const row = await this.store.getLifecycle(beat.instance_id);
    if (!row || row.open_commands > 0 || !sameHash(row.agent_token_hash, tokenHash)) return null;
    const write = new InstanceWrite(row, now, this.config);
    if (this.isStale(row, beatAt, now)) return null;
    const decision = this.decide(write, beat, beatAt, now);
    // Decided before anything is written: a beat that changes more than metrics takes the locked path.
    const plain =
      !decision.issueHibernate &&
      decision.closeHibernate === null &&
      decision.providerAction === null &&
      !decision.cancelProviderStop &&
      !decision.cancelProviderStart &&
      decision.events.length === 0 &&
      decision.facts.status === row.status;
    if (!plain) return null;
    await this.absorbBeat(this.store, write, decision, beat, beatAt);
    if (!(await write.tryCommitPlain(this.store))) return null;
    return { commands: [], hibernateIn: hibernateInSeconds(write.facts, now) };
  }

  private decide(write: InstanceWrite, beat: HeartbeatRequest, beatAt: number, now: number): Decision {
    const input = {
      kind: 'heartbeat',
      observation: observationOf(beat, beatAt, now, write.row),
      hibernateReport: hibernateReportOf(beat, write.row),
      hold: this.massSilence?.hold ?? null,
    } as const;
    return evaluate(write.facts, policyOf(write.row, this.config), input, this.config, now);
  }

  private async absorbBeat(repo: FleetRepository, write: InstanceWrite, decision: Decision, beat: HeartbeatRequest, beatAt: number) {
    await write.absorb(decision, repo, 'policy', hibernateArgsOf(idleRuleOfRow(write.row, this.config)));
    write.patch = { ...write.patch, ...metricsPatch(beat, beatAt, write.row), heartbeat_count: write.row.heartbeat_count + 1 };
  }

  private async applyBeat(repo: FleetRepository, row: LifecycleRow, beat: HeartbeatRequest, beatAt: number, now: number) {
    const write = new InstanceWrite(row, now, this.config);
    // Command rows first; what a result means for the lifecycle is decided with the beat that carries it.
    for (const result of beat.command_results ?? []) await this.settle(repo, write, result, now);
    let withhold = false;
    if (!this.isStale(row, beatAt, now)) {
      const decision = this.decide(write, beat, beatAt, now);
      withhold = decision.withholdHibernate;
      await this.absorbBeat(repo, write, decision, beat, beatAt);
    } else {
      // A delayed copy of an older beat: its facts are not applied, but a result it carries still counts.
      const report = hibernateReportOf(beat, row);
      if (report) {
        const decision = evaluate(write.facts, policyOf(row, this.config), { kind: 'hibernate_result', ...report }, this.config, now);
        await write.absorb(decision, repo, 'policy', hibernateArgsOf(idleRuleOfRow(row, this.config)));
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
  private isStale(row: LifecycleRow, beatAt: number, now: number): boolean {
    if (row.status === 'hibernating') return false;
    if (row.agent_timestamp_ms === null || beatAt > row.agent_timestamp_ms) return false;
    const silentFor = row.last_heartbeat_at === null ? Infinity : now - row.last_heartbeat_at;
    return silentFor < this.config.offlineAfterSeconds * 1000;
  }

  /** Records one command result on its command; a repeated or unknown result changes nothing. */
  private async settle(repo: FleetRepository, write: InstanceWrite, result: CommandResult, now: number) {
    const command = await repo.getCommand(result.id);
    if (!command || command.instance_id !== write.row.instance_id) return;
    const detail = result.detail ?? '';
    const changed = await repo.updateCommand(command.id, ['pending', 'delivered'], { state: result.status, completed_at: now, detail });
    if (!changed) return;
    write.openCommandsDelta -= 1;
    write.events.push({
      type: result.status === 'succeeded' ? 'command_succeeded' : 'command_failed',
      reason: `${command.type} ${result.status}${detail ? `: ${detail.slice(0, 200)}` : ''}`,
      data: { command_id: command.id, command: command.type },
    });
  }

  /**
   * Every open command goes out in every answer until its result arrives — except a hibernate command
   * in the answer to a busy beat (its hook is running; see the policy).
   */
  private async deliver(repo: FleetRepository, write: InstanceWrite, now: number, withholdHibernate: boolean): Promise<DeliveredCommand[]> {
    if (write.row.open_commands + write.openCommandsDelta <= 0) return [];
    const delivered: DeliveredCommand[] = [];
    for (const command of await repo.openCommands(write.row.instance_id)) {
      if (withholdHibernate && command.id === write.hibernateCommandId) continue;
      if (command.state === 'pending') {
        await repo.updateCommand(command.id, ['pending'], { state: 'delivered', delivered_at: now });
        write.events.push({ type: 'command_delivered', reason: `${command.type} delivered in a heartbeat response`, data: { command_id: command.id } });
      }
      delivered.push({ id: command.id, type: command.type as CommandType, args: JSON.parse(command.args_json), issued_at: iso(command.issued_at)! });
    }
    return delivered;
  }
}
