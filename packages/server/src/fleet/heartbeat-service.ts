import {
  aggregateGpuMetrics,
  DumontError,
  type DeliveredCommand,
  type HeartbeatRequest,
  type HeartbeatResponse,
} from '@dumont/protocol';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { evaluate, hibernateInSeconds } from '../policy/hibernation-policy.js';
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

  /** Applies one heartbeat; answers only after the change is stored (and fsync'd if it matters). */
  async ingest(tokenHash: string, beat: HeartbeatRequest): Promise<HeartbeatResponse> {
    const now = this.clock.now();
    const outcome = await this.store.transaction(async (repo) => {
      const row = await repo.getLifecycle(beat.instance_id, { forUpdate: true });
      if (!row || !sameHash(row.agent_token_hash, tokenHash)) return null;
      return this.applyBeat(repo, row, beat, now);
    });
    if (outcome === null) {
      // Looked up only on failure, so a good beat costs one indexed read by instance id.
      if ((await this.store.findInstanceIdByTokenHash(tokenHash)) === undefined) {
        throw new DumontError('unauthorized', 'unknown agent token (register the instance to get one)', 'authorization');
      }
      throw new DumontError('forbidden', `this agent token belongs to another instance, not ${beat.instance_id}`, 'instance_id');
    }
    if (outcome.durable || this.config.fsync === 'always') await this.store.syncDurable();
    if (outcome.hibernated) await this.provider.hibernated(beat.instance_id);
    return {
      success: true,
      commands: outcome.commands,
      hibernate_in_seconds: outcome.hibernateIn,
      next_heartbeat_in: this.config.heartbeatIntervalSeconds,
    };
  }

  private async applyBeat(repo: FleetRepository, row: LifecycleRow, beat: HeartbeatRequest, now: number) {
    const write = new InstanceWrite(row, now);
    const policy = policyOf(row, this.config);
    const beatAt = Date.parse(beat.timestamp);
    const silentFor = row.last_heartbeat_at === null ? Infinity : now - row.last_heartbeat_at;
    const stale =
      row.agent_timestamp_ms !== null && beatAt <= row.agent_timestamp_ms && silentFor < this.config.offlineAfterSeconds * 1000;

    if (!stale) {
      const decision = evaluate(write.facts, policy, { kind: 'heartbeat', observation: observationOf(beat, beatAt, now) }, this.config, now);
      await write.absorb(decision, repo, 'policy');
      write.patch = { ...write.patch, ...metricsPatch(beat, beatAt), heartbeat_count: row.heartbeat_count + 1 };
    }

    let hibernated = false;
    for (const result of beat.command_results ?? []) {
      const command = await repo.getCommand(result.id);
      if (!command || command.instance_id !== row.instance_id) continue;
      const detail = result.detail ?? '';
      const changed = await repo.updateCommand(command.id, ['pending', 'delivered'], {
        state: result.status,
        completed_at: now,
        detail,
      });
      if (!changed) continue; // a repeated result is harmless
      write.openCommandsDelta -= 1;
      write.events.push({
        type: result.status === 'succeeded' ? 'command_succeeded' : 'command_failed',
        reason: `${command.type} ${result.status}${detail ? `: ${detail.slice(0, 200)}` : ''}`,
        data: { command_id: command.id, command: command.type },
      });
      const hibernateCommandId = write.patch.hibernate_command_id !== undefined ? write.patch.hibernate_command_id : row.hibernate_command_id;
      if (command.id === hibernateCommandId) {
        const decision = evaluate(
          write.facts,
          policy,
          { kind: 'hibernate_result', succeeded: result.status === 'succeeded', detail },
          this.config,
          now,
        );
        await write.absorb(decision, repo, 'policy');
        write.patch.hibernate_command_id = null;
        hibernated = write.facts.status === 'hibernated';
      }
    }

    const commands: DeliveredCommand[] = [];
    if (row.open_commands + write.openCommandsDelta > 0) {
      for (const command of await repo.openCommands(row.instance_id)) {
        if (command.state === 'pending') {
          await repo.updateCommand(command.id, ['pending'], { state: 'delivered', delivered_at: now });
          write.events.push({ type: 'command_delivered', reason: `${command.type} delivered in a heartbeat response`, data: { command_id: command.id } });
        }
        commands.push({ id: command.id, type: command.type as DeliveredCommand['type'], args: JSON.parse(command.args_json), issued_at: iso(command.issued_at)! });
      }
    }

    await write.commit(repo);
    return { commands, hibernateIn: hibernateInSeconds(write.facts, now), durable: write.durable, hibernated };
  }
}
