import type { CommandView, EventView, GpuSample, InstanceDetail, InstanceSavings, InstanceSummary, InstanceStatus, MassSilenceView, ProviderState } from '@dumont/protocol';
import type { MassSilence } from './mass-silence.js';
import type { ServerConfig } from '../config.js';
import { hibernateInSeconds, idleSeconds } from '../policy/hibernation-policy.js';
import type { CommandRow, EventRow, InstanceRow } from '../store/schema.js';
import type { InstanceSummaryRow } from '../store/store.js';
import { factsOf, policyOf, providerInstanceIdOf, providerNameOf } from './lifecycle-rows.js';

/** Rows → the public JSON shapes of the seed (plus extensions). */

export const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function memoryPercent(used: number | null, total: number | null): number | null {
  if (used === null || total === null || total <= 0) return null;
  return Math.round((used / total) * 100);
}

/**
 * The hottest GPU of the last beat. The stored aggregate is the maximum when every GPU reported one;
 * when one did not it is null, and the hottest of those that did is read from the per-GPU JSON.
 */
function hottestTemperature(row: InstanceSummaryRow): number | null {
  if (row.temperature_celsius !== null) return row.temperature_celsius;
  if (row.gpus_json_if_no_temperature === null) return null;
  const reported = (JSON.parse(row.gpus_json_if_no_temperature) as GpuSample[])
    .map((gpu) => gpu.temperature_celsius)
    .filter((celsius): celsius is number => typeof celsius === 'number');
  return reported.length > 0 ? Math.max(...reported) : null;
}

function summaryFacts(row: InstanceSummaryRow) {
  return {
    status: row.status as InstanceStatus,
    lastHeartbeatAt: row.last_heartbeat_at,
    idleSince: row.idle_since,
    scheduledAt: row.scheduled_at,
    postponedUntil: null,
    hibernateIssuedAt: null,
    onlineSince: null,
  };
}

export function toSummary(row: InstanceSummaryRow, now: number): InstanceSummary {
  const facts = summaryFacts(row);
  return {
    instance_id: row.instance_id,
    hostname: row.hostname,
    last_heartbeat: iso(row.last_heartbeat_at),
    status: facts.status,
    gpu_utilization: row.utilization_percent,
    memory_used_percent: memoryPercent(row.memory_used_mb, row.memory_total_mb),
    idle_seconds: idleSeconds(facts),
    agent_version: row.agent_version,
    gpu_count: row.gpu_count,
    hibernate_in_seconds: hibernateInSeconds(facts, now),
    temperature_celsius: hottestTemperature(row),
  };
}

export function toDetail(row: InstanceRow, config: ServerConfig, now: number, savings: InstanceSavings): InstanceDetail {
  const facts = factsOf(row);
  const policy = policyOf(row, config);
  return {
    instance_id: row.instance_id,
    hostname: row.hostname,
    status: facts.status,
    last_heartbeat: iso(row.last_heartbeat_at),
    heartbeat_count: row.heartbeat_count,
    uptime_hours: facts.onlineSince === null ? 0 : Math.round(((now - facts.onlineSince) / 3_600_000) * 100) / 100,
    gpu_metrics: {
      utilization_percent: row.utilization_percent,
      memory_used_mb: row.memory_used_mb,
      memory_total_mb: row.memory_total_mb,
      temperature_celsius: row.temperature_celsius,
      power_watts: row.power_watts,
    },
    activity: {
      last_activity: row.last_activity,
      idle_seconds: idleSeconds(facts),
      process_count: row.process_count,
      active_users: row.active_users,
    },
    hibernation: {
      enabled: policy.enabled,
      threshold_minutes: policy.thresholdMinutes,
      scheduled: facts.scheduledAt !== null || facts.status === 'hibernating',
      scheduled_at: iso(facts.scheduledAt ?? (facts.status === 'hibernating' ? facts.hibernateIssuedAt : null)),
      ignore_gpu_processes: policy.ignoreGpuProcesses,
      hibernate_in_seconds: hibernateInSeconds(facts, now),
      dry_run: policy.dryRun,
    },
    agent_version: row.agent_version,
    gpus: JSON.parse(row.gpus_json) as GpuSample[],
    postponed_until: facts.postponedUntil !== null && facts.postponedUntil > now ? iso(facts.postponedUntil) : null,
    agent_timestamp: row.agent_timestamp,
    collector_errors: JSON.parse(row.collector_errors_json),
    registered_at: iso(row.registered_at)!,
    price_per_hour: row.price_per_hour,
    provider: {
      name: providerNameOf(row, config),
      instance_id: providerInstanceIdOf(row),
      state: row.provider_state as ProviderState | null,
      last_error: row.provider_error,
      updated_at: iso(row.provider_updated_at),
    },
    savings,
  };
}

export function massSilenceView(state: MassSilence | null): MassSilenceView | null {
  return state === null ? null : { since: iso(state.since)!, silent: state.silent, watched: state.watched };
}

export function toCommandView(row: CommandRow): CommandView {
  return {
    id: row.id,
    instance_id: row.instance_id,
    type: row.type as CommandView['type'],
    args: JSON.parse(row.args_json),
    state: row.state as CommandView['state'],
    issued_at: iso(row.issued_at)!,
    issued_by: row.issued_by,
    delivered_at: iso(row.delivered_at),
    completed_at: iso(row.completed_at),
    detail: row.detail,
  };
}

export function toEventView(row: EventRow): EventView {
  return {
    id: row.id,
    instance_id: row.instance_id,
    at: iso(row.at)!,
    type: row.type as EventView['type'],
    reason: row.reason,
    data: JSON.parse(row.data_json),
  };
}
