import {
  aggregateGpuMetrics,
  DumontError,
  type CommandResult,
  type CommandType,
  type DeliveredCommand,
  type HeartbeatRequest,
  type HeartbeatResponse,
} from '@dumont/protocol';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { evaluate, hibernateInSeconds, type Decision, type InstancePolicy } from '../policy/hibernation-policy.js';
import type { IdleObservation } from '../policy/idle-observation.js';
import { sameHash } from '../secrets.js';
import type { InstanceUpdate } from '../store/schema.js';
import type { FleetRepository, FleetStore, LifecycleRow } from '../store/store.js';
import { InstanceWrite, policyOf } from './lifecycle-rows.js';
import { iso } from './views.js';

/** What a beat says about idleness; metrics it lacks stay unknown (null), never 0. */
function observationOf(beat: HeartbeatRequest, beatAt: number, now: number): IdleObservation {
  const utilizations =
    beat.gpus && beat.gpus.length > 0
      ? beat.gpus.map((g) => g.utilization_percent ?? null)
      : beat.gpu_metrics
        ? [beat.gpu_metrics.utilization_percent ?? null]
        : [];
  let lastActivityAt: number | null = null;
  if (beat.last_activity) {
    // Map the agent's clock onto ours through the age it reports, so clock skew cannot shift idle time.
    const age = Math.max(0, beatAt - Date.parse(beat.last_activity));
    lastActivityAt = now - age;
  }
  return { utilizations, processCount: beat.process_count ?? null, lastActivityAt };
}

function metricsPatch(beat: HeartbeatRequest, beatAt: number): InstanceUpdate {
  const gpus = beat.gpus ?? [];
  const m = gpus.length > 0 ? aggregateGpuMetrics(gpus) : (beat.gpu_metrics ?? {});
  return {
    hostname: beat.hostname,
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

export interface HibernationProvider {
  /** The real stop of the machine, after its agent confirmed the hibernate command (a later issue). */
  hibernated(instanceId: number): Promise<void>;
}

export const noProvider: HibernationProvider = { hibernated: async () => {} };

export class HeartbeatService {
  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
    private readonly config: ServerConfig,
    private readonly provider: HibernationProvider = noProvider,
  ) {}

  /** Applies one heartbeat; answers only after the change is committed (durably, if it was a transition). */
  async ingest(tokenHash: string, beat: HeartbeatRequest): Promise<HeartbeatResponse> {
    const now = this.clock.now();
    const outcome = (await this.tryPlainBeat(tokenHash, beat, now)) ?? (await this.store.transaction(async (repo) => {
      const row = await repo.getLifecycle(beat.instance_id, { forUpdate: true });
      if (!row || !sameHash(row.agent_token_hash, tokenHash)) return null;
      return this.applyBeat(repo, row, beat, now);
    }));
    if (outcome === null) {
      // Looked up only on failure, so a good beat costs one indexed read by instance id.
      if ((await this.store.findInstanceIdByTokenHash(tokenHash)) === undefined) {
        throw new DumontError('unauthorized', 'unknown agent token (register the instance to get one)', 'authorization');
      }
      throw new DumontError('forbidden', `this agent token belongs to another instance, not ${beat.instance_id}`, 'instance_id');
    }
    if (outcome.hibernated) await this.provider.hibernated(beat.instance_id);
    return {
      success: true,
      commands: outcome.commands,
      hibernate_in_seconds: outcome.hibernateIn,
      next_heartbeat_in: this.config.heartbeatIntervalSeconds,
    };
  }

  /**
   * PostgreSQL: most beats only refresh metrics. Such a beat is read without a lock and written with
   * one compare-and-set UPDATE, two round trips instead of four (BEGIN, SELECT … FOR UPDATE, UPDATE,
   * COMMIT). Anything more — a transition, a command, a result, a lost race — takes the locked path.
   * SQLite gains nothing from it: its group commit already shares one transaction among many beats.
   */
  private async tryPlainBeat(tokenHash: string, beat: HeartbeatRequest, now: number) {
    if (this.store.dialect !== 'postgres' || (beat.command_results?.length ?? 0) > 0) return null;
    const row = await this.store.getLifecycle(beat.instance_id);
    if (!row || row.open_commands > 0 || !sameHash(row.agent_token_hash, tokenHash)) return null;
    const write = new InstanceWrite(row, now);
    const beatAt = Date.parse(beat.timestamp);
    if (this.isStale(row, beatAt, now)) return null;
    const decision = this.decide(write, beat, beatAt, now);
    // Decided before anything is written: a beat that changes more than metrics takes the locked path.
    const plain = !decision.issueHibernate && !decision.expireHibernate && decision.events.length === 0 && decision.facts.status === row.status;
    if (!plain) return null;
    await this.absorbBeat(this.store, write, decision, beat, beatAt);
    if (!(await write.tryCommitPlain(this.store))) return null;
    return { commands: [], hibernateIn: hibernateInSeconds(write.facts, now), hibernated: false };
  }

  private decide(write: InstanceWrite, beat: HeartbeatRequest, beatAt: number, now: number): Decision {
    const observation = observationOf(beat, beatAt, now);
    return evaluate(write.facts, policyOf(write.row, this.config), { kind: 'heartbeat', observation }, this.config, now);
  }

  private async absorbBeat(repo: FleetRepository, write: InstanceWrite, decision: Decision, beat: HeartbeatRequest, beatAt: number) {
    await write.absorb(decision, repo, 'policy');
    write.patch = { ...write.patch, ...metricsPatch(beat, beatAt), heartbeat_count: write.row.heartbeat_count + 1 };
  }

  private async applyBeat(repo: FleetRepository, row: LifecycleRow, beat: HeartbeatRequest, now: number) {
    const write = new InstanceWrite(row, now);
    const policy = policyOf(row, this.config);
    const beatAt = Date.parse(beat.timestamp);
    if (!this.isStale(row, beatAt, now)) await this.absorbBeat(repo, write, this.decide(write, beat, beatAt, now), beat, beatAt);
    for (const result of beat.command_results ?? []) await this.settle(repo, write, policy, result, now);
    const commands = await this.deliver(repo, write, now);
    await write.commit(repo);
    return {
      commands,
      hibernateIn: hibernateInSeconds(write.facts, now),
      hibernated: write.facts.status === 'hibernated' && row.status !== 'hibernated',
    };
  }

  /**
   * A beat not newer than the last applied one is a delayed retry: it must not roll state back. After
   * a silence as long as the offline window the agent's clock may have been reset, so it applies again.
   */
  private isStale(row: LifecycleRow, beatAt: number, now: number): boolean {
    if (row.agent_timestamp_ms === null || beatAt > row.agent_timestamp_ms) return false;
    const silentFor = row.last_heartbeat_at === null ? Infinity : now - row.last_heartbeat_at;
    return silentFor < this.config.offlineAfterSeconds * 1000;
  }

  /** Records one command result; a repeated or unknown result changes nothing. */
  private async settle(repo: FleetRepository, write: InstanceWrite, policy: InstancePolicy, result: CommandResult, now: number) {
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
    if (command.id !== write.hibernateCommandId) return;
    const input = { kind: 'hibernate_result', succeeded: result.status === 'succeeded', detail } as const;
    await write.absorb(evaluate(write.facts, policy, input, this.config, now), repo, 'policy');
    write.patch.hibernate_command_id = null;
  }

  /** Every open command goes out in every answer until its result arrives. */
  private async deliver(repo: FleetRepository, write: InstanceWrite, now: number): Promise<DeliveredCommand[]> {
    if (write.row.open_commands + write.openCommandsDelta <= 0) return [];
    const delivered: DeliveredCommand[] = [];
    for (const command of await repo.openCommands(write.row.instance_id)) {
      if (command.state === 'pending') {
        await repo.updateCommand(command.id, ['pending'], { state: 'delivered', delivered_at: now });
        write.events.push({ type: 'command_delivered', reason: `${command.type} delivered in a heartbeat response`, data: { command_id: command.id } });
      }
      delivered.push({ id: command.id, type: command.type as CommandType, args: JSON.parse(command.args_json), issued_at: iso(command.issued_at)! });
    }
    return delivered;
  }
}
