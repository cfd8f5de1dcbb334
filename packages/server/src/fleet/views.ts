import type { CommandView, EventView, InstanceDetail, InstanceSavings, InstanceSummary, Labels, MassSilenceView } from '@dumont/protocol';
import type { MassSilence } from './mass-silence.js';
import type { ServerConfig } from '../config.js';
import { hibernateInSeconds, idleSeconds } from '../policy/hibernation-policy.js';
import type { AgentCommand, InstanceListEntry, InstanceRecord, StoredEvent } from '../store/store.js';
import { policyOf, providerInstanceIdOf, providerNameOf } from './instance-write.js';
import { boundedSettings, limitsOf } from './admin-limits.js';

/** Rows → the public JSON shapes of the seed (plus extensions). */

export const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function memoryPercent(used: number | null, total: number | null): number | null {
  if (used === null || total === null || total <= 0) return null;
  return Math.round((used / total) * 100);
}

export function toSummary(entry: InstanceListEntry, now: number, labels: Labels): InstanceSummary {
  // A list entry carries the facts a summary shows; the rest cannot change what it shows.
  const facts = {
    status: entry.status,
    lastHeartbeatAt: entry.lastHeartbeatAt,
    idleSince: entry.idleSince,
    scheduledAt: entry.scheduledAt,
    postponedUntil: null,
    hibernateIssuedAt: null,
    onlineSince: null,
  };
  return {
    instance_id: entry.instanceId,
    hostname: entry.hostname,
    last_heartbeat: iso(entry.lastHeartbeatAt),
    status: entry.status,
    gpu_utilization: entry.utilizationPercent,
    memory_used_percent: memoryPercent(entry.memoryUsedMb, entry.memoryTotalMb),
    idle_seconds: idleSeconds(facts),
    agent_version: entry.agentVersion,
    gpu_count: entry.gpuCount,
    hibernate_in_seconds: hibernateInSeconds(facts, now),
    temperature_celsius: entry.hottestTemperature,
    labels,
  };
}

/**
 * `keepAliveLeft`: the keep-alive minutes owners may still grant the instance today (null = unlimited).
 */
export function toDetail(
  instance: InstanceRecord,
  config: ServerConfig,
  now: number,
  savings: InstanceSavings,
  labels: Labels,
  keepAliveLeft: number | null = null,
): InstanceDetail {
  const { facts, readings, settings } = instance;
  const policy = policyOf(settings, config);
  const limits = limitsOf(settings, config);
  const bounded = boundedSettings(settings, limits);
  // The stored value beside the effective one, only where a limit bounds it (old clients read the effective one).
  const requested = {
    ...(bounded.thresholdMinutes !== settings.thresholdMinutes && settings.thresholdMinutes !== null
      ? { threshold_minutes_requested: settings.thresholdMinutes }
      : {}),
    ...(bounded.enabled !== settings.hibernationEnabled ? { enabled_requested: settings.hibernationEnabled } : {}),
    ...(bounded.dryRun !== settings.dryRun ? { dry_run_requested: settings.dryRun } : {}),
  };
  return {
    instance_id: instance.instanceId,
    hostname: instance.hostname,
    status: facts.status,
    last_heartbeat: iso(facts.lastHeartbeatAt),
    heartbeat_count: instance.heartbeatCount,
    uptime_hours: facts.onlineSince === null ? 0 : Math.round(((now - facts.onlineSince) / 3_600_000) * 100) / 100,
    gpu_metrics: { ...readings.aggregate },
    activity: {
      last_activity: readings.lastActivity,
      idle_seconds: idleSeconds(facts),
      process_count: readings.processCount,
      active_users: readings.activeUsers,
    },
    hibernation: {
      enabled: policy.enabled,
      threshold_minutes: policy.thresholdMinutes,
      scheduled: facts.scheduledAt !== null || facts.status === 'hibernating',
      scheduled_at: iso(facts.scheduledAt ?? (facts.status === 'hibernating' ? facts.hibernateIssuedAt : null)),
      ignore_gpu_processes: policy.ignoreGpuProcesses,
      hibernate_in_seconds: hibernateInSeconds(facts, now),
      dry_run: policy.dryRun,
      ...requested,
      limits: {
        max_threshold_minutes: limits.maxThresholdMinutes,
        max_keep_alive_minutes: limits.maxKeepAliveMinutes,
        keep_alive_budget_minutes: limits.keepAliveBudgetMinutes,
        keep_alive_left_minutes: keepAliveLeft,
        owner_may_disable: limits.ownerMayDisable,
      },
    },
    agent_version: readings.agentVersion,
    gpus: [...readings.gpus],
    postponed_until: facts.postponedUntil !== null && facts.postponedUntil > now ? iso(facts.postponedUntil) : null,
    agent_timestamp: readings.agentTimestamp,
    collector_errors: [...readings.collectorErrors],
    registered_at: iso(instance.registeredAt)!,
    price_per_hour: instance.settings.pricePerHour,
    provider: {
      name: providerNameOf(instance.settings, config),
      instance_id: providerInstanceIdOf(instance.instanceId, instance.settings),
      state: facts.providerState,
      last_error: instance.providerError,
      updated_at: iso(instance.providerUpdatedAt),
    },
    savings,
    labels,
  };
}

export function massSilenceView(state: MassSilence | null): MassSilenceView | null {
  return state === null ? null : { since: iso(state.since)!, silent: state.silent, watched: state.watched };
}

export function toCommandView(command: AgentCommand): CommandView {
  return {
    id: command.id,
    instance_id: command.instanceId,
    type: command.type,
    args: command.args,
    state: command.state,
    issued_at: iso(command.issuedAt)!,
    issued_by: command.issuedBy,
    delivered_at: iso(command.deliveredAt),
    completed_at: iso(command.completedAt),
    detail: command.detail,
  };
}

export function toEventView(event: StoredEvent): EventView {
  return {
    id: event.id,
    instance_id: event.instanceId,
    at: iso(event.at)!,
    type: event.type,
    reason: event.reason,
    data: event.data,
  };
}
