import type { CommandView, EffectivePolicyView, EventView, InstanceDetail, InstanceSavings, InstanceSummary, Labels, MassSilenceView } from '@dumont/protocol';
import type { MassSilence } from './mass-silence.js';
import type { ServerConfig } from '../config.js';
import { forcedReasonOf, hibernateInSeconds, idleSeconds } from '../policy/hibernation-policy.js';
import type { AgentCommand, InstanceListEntry, InstanceRecord, StoredEvent } from '../store/store.js';
import { instancePolicyOf, providerInstanceIdOf } from './instance-write.js';
import { nextScheduleChangeOf, type EffectivePolicy } from '../policy/effective-policy.js';
import type { SignalVerdict } from '../policy/activity-signals.js';

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
  effective: EffectivePolicy,
  keepAliveLeft: number | null = null,
  signals: { at: number; verdicts: readonly SignalVerdict[] } | null = null,
): InstanceDetail {
  const { facts, readings, settings } = instance;
  const { limits } = effective;
  // The stored value beside the effective one, only where a limit bounds it (old clients read the effective one).
  const requested = {
    ...(effective.thresholdMinutes.source === 'limit' && settings.thresholdMinutes !== null ? { threshold_minutes_requested: settings.thresholdMinutes } : {}),
    ...(effective.enabled.source === 'limit' ? { enabled_requested: settings.hibernationEnabled } : {}),
    ...(effective.dryRun.source === 'limit' ? { dry_run_requested: settings.dryRun } : {}),
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
      enabled: effective.enabled.value,
      threshold_minutes: effective.thresholdMinutes.value,
      scheduled: facts.scheduledAt !== null || facts.status === 'hibernating',
      scheduled_at: iso(facts.scheduledAt ?? (facts.status === 'hibernating' ? facts.hibernateIssuedAt : null)),
      ignore_gpu_processes: settings.ignoreGpuProcesses,
      hibernate_in_seconds: hibernateInSeconds(facts, now),
      dry_run: effective.dryRun.value,
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
      name: effective.provider.value,
      instance_id: providerInstanceIdOf(instance.instanceId, instance.settings),
      state: facts.providerState,
      last_error: instance.providerError,
      updated_at: iso(instance.providerUpdatedAt),
    },
    savings,
    labels,
    // Why a hibernation would be forced now: what `evaluate` says, no rule of the view's own.
    effective_policy: effectivePolicyView(effective, forcedReasonOf(instancePolicyOf(effective, settings), facts, now), now, signals),
  };
}

/** The effective values with their sources, the schedule's state now, and the signals' last verdicts. */
function effectivePolicyView(
  effective: EffectivePolicy,
  forced: string | null,
  now: number,
  signals: { at: number; verdicts: readonly SignalVerdict[] } | null,
): EffectivePolicyView {
  const schedule = effective.policy?.schedule?.spec ?? null;
  const verdicts = new Map((signals?.verdicts ?? []).map((v) => [v.name, v]));
  return {
    policy: effective.policy?.name ?? null,
    idle_utilization_percent: effective.idleUtilizationPercent,
    threshold_minutes: effective.thresholdMinutes,
    warning_seconds: effective.warningSeconds,
    enabled: effective.enabled,
    provider: effective.provider,
    dry_run: effective.dryRun,
    max_uptime_hours: effective.maxUptimeHours,
    schedule:
      schedule === null
        ? null
        : {
            timezone: schedule.timezone,
            active: [...schedule.active],
            outside: schedule.outside,
            outside_threshold_minutes: schedule.outside_threshold_minutes ?? null,
            within_active_hours: effective.withinActiveHours ?? true,
            next_change_at: iso(nextScheduleChangeOf(effective, now)),
          },
    forced,
    signals: effective.signals.map((spec) => {
      const verdict = verdicts.get(spec.name);
      return { name: spec.name, type: spec.type, state: verdict?.state ?? null, detail: verdict?.detail ?? null };
    }),
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
