import type { Labels, CommandState, CommandType, EventType, GpuMetrics, GpuSample, InstanceStatus, ProviderState } from '@dumont/protocol';
import type { LifecycleFacts } from '../policy/hibernation-policy.js';
import { newInstanceRow, type CommandRow, type EventRow, type InstanceRow, type InstanceUpdate, type NewEventRow, type NewInstanceRow } from './schema.js';
import type {
  AgentCommand,
  CommandChange,
  GpuReadings,
  InstanceEvent,
  StoredEvent,
  GpuReadingsRow,
  InstanceChange,
  InstanceLifecycle,
  InstanceListEntry,
  InstanceRecord,
  InstanceSettings,
  InstanceSummaryRow,
  LifecycleRow,
  NewInstance,
} from './store.js';

/**
 * The one place where an instance's columns meet the domain: rows become `InstanceLifecycle`,
 * `InstanceRecord`, list entries and GPU readings; an `InstanceChange` becomes the columns it sets.
 * 0/1 booleans, `*_json` text and column names stay on this side.
 */

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

const FACTS = Object.keys(FACT_COLUMNS) as (keyof LifecycleFacts)[];

const SETTING_COLUMNS = {
  hibernationEnabled: 'hibernation_enabled',
  thresholdMinutes: 'threshold_minutes',
  ignoreGpuProcesses: 'ignore_gpu_processes',
  dryRun: 'dry_run',
  provider: 'provider',
  providerInstanceId: 'provider_instance_id',
  pricePerHour: 'price_per_hour',
  thresholdSetByAdmin: 'threshold_set_by_admin',
  enabledSetByAdmin: 'enabled_set_by_admin',
  dryRunSetByAdmin: 'dry_run_set_by_admin',
} as const satisfies Record<keyof InstanceSettings, keyof LifecycleRow>;

const FLAG_SETTINGS = new Set<keyof InstanceSettings>([
  'hibernationEnabled',
  'ignoreGpuProcesses',
  'dryRun',
  'thresholdSetByAdmin',
  'enabledSetByAdmin',
  'dryRunSetByAdmin',
]);

export function lifecycleOf(row: LifecycleRow): InstanceLifecycle {
  return {
    instanceId: row.instance_id,
    owner: row.owner,
    agentTokenHash: row.agent_token_hash,
    hostname: row.hostname,
    gpuCount: row.gpu_count,
    facts: {
      status: row.status as InstanceStatus,
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
    },
    deadline: row.deadline,
    settings: {
      hibernationEnabled: row.hibernation_enabled === 1,
      thresholdMinutes: row.threshold_minutes,
      ignoreGpuProcesses: row.ignore_gpu_processes === 1,
      dryRun: row.dry_run === 1,
      provider: row.provider,
      providerInstanceId: row.provider_instance_id,
      pricePerHour: row.price_per_hour,
      thresholdSetByAdmin: row.threshold_set_by_admin === 1,
      enabledSetByAdmin: row.enabled_set_by_admin === 1,
      dryRunSetByAdmin: row.dry_run_set_by_admin === 1,
    },
    hibernateCommandId: row.hibernate_command_id,
    openCommands: row.open_commands,
    heartbeatCount: row.heartbeat_count,
    agentTimestampMs: row.agent_timestamp_ms,
    version: row.version,
    labels: JSON.parse(row.labels_json) as Labels,
  };
}

/** The host aggregate of the last beat, as stored. */
function aggregateOf(row: GpuReadingsRow): Required<GpuMetrics> {
  return {
    utilization_percent: row.utilization_percent,
    memory_used_mb: row.memory_used_mb,
    memory_total_mb: row.memory_total_mb,
    temperature_celsius: row.temperature_celsius,
    power_watts: row.power_watts,
  };
}

export function recordOf(row: InstanceRow): InstanceRecord {
  return {
    ...lifecycleOf(row),
    registeredAt: row.registered_at,
    readings: {
      agentTimestamp: row.agent_timestamp,
      aggregate: aggregateOf(row),
      gpus: JSON.parse(row.gpus_json) as GpuSample[],
      gpuCount: row.gpu_count,
      processCount: row.process_count,
      activeUsers: row.active_users,
      lastActivity: row.last_activity,
      agentVersion: row.agent_version,
      collectorErrors: JSON.parse(row.collector_errors_json),
    },
    providerError: row.provider_error,
    providerUpdatedAt: row.provider_updated_at,
  };
}

/** The columns a change sets; a field it leaves out is not written (nor its indexes touched). */
export function columnsOf(change: InstanceChange): InstanceUpdate {
  const columns: Record<string, unknown> = {};
  const facts = change.facts;
  if (facts !== undefined) {
    for (const fact of FACTS) if (facts[fact] !== undefined) columns[FACT_COLUMNS[fact]] = facts[fact];
  }
  const settings = change.settings;
  if (settings !== undefined) {
    for (const key of Object.keys(settings) as (keyof InstanceSettings)[]) {
      const value = settings[key];
      if (value === undefined) continue;
      columns[SETTING_COLUMNS[key]] = FLAG_SETTINGS.has(key) ? (value ? 1 : 0) : value;
    }
  }
  if (change.deadline !== undefined) columns.deadline = change.deadline;
  if (change.owner !== undefined) columns.owner = change.owner;
  if (change.agentTokenHash !== undefined) columns.agent_token_hash = change.agentTokenHash;
  if (change.hostname !== undefined) columns.hostname = change.hostname;
  if (change.hibernateCommandId !== undefined) columns.hibernate_command_id = change.hibernateCommandId;
  if (change.openCommands !== undefined) columns.open_commands = change.openCommands;
  if (change.heartbeatCount !== undefined) columns.heartbeat_count = change.heartbeatCount;
  if (change.providerError !== undefined) columns.provider_error = change.providerError;
  if (change.providerUpdatedAt !== undefined) columns.provider_updated_at = change.providerUpdatedAt;
  const m = change.metrics;
  if (m !== undefined) {
    columns.agent_timestamp = m.agentTimestamp;
    columns.agent_timestamp_ms = m.agentTimestampMs;
    columns.utilization_percent = m.aggregate.utilization_percent;
    columns.memory_used_mb = m.aggregate.memory_used_mb;
    columns.memory_total_mb = m.aggregate.memory_total_mb;
    columns.temperature_celsius = m.aggregate.temperature_celsius;
    columns.power_watts = m.aggregate.power_watts;
    columns.gpus_json = JSON.stringify(m.gpus);
    columns.gpu_count = m.gpuCount;
    columns.process_count = m.processCount;
    columns.active_users = m.activeUsers;
    columns.last_activity = m.lastActivity;
    columns.agent_version = m.agentVersion;
    columns.collector_errors_json = JSON.stringify(m.collectorErrors);
  }
  return columns as InstanceUpdate;
}

export function newInstanceColumns(instance: NewInstance): NewInstanceRow {
  return newInstanceRow({
    ...columnsOf({ settings: instance.settings ?? {} }),
    hostname: instance.hostname,
    instance_id: instance.instanceId,
    owner: instance.owner,
    agent_token_hash: instance.agentTokenHash,
    registered_at: instance.registeredAt,
  });
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

export function listEntryOf(row: InstanceSummaryRow): InstanceListEntry {
  const entry: InstanceListEntry = {
    instanceId: row.instance_id,
    hostname: row.hostname,
    status: row.status as InstanceStatus,
    lastHeartbeatAt: row.last_heartbeat_at,
    idleSince: row.idle_since,
    scheduledAt: row.scheduled_at,
    utilizationPercent: row.utilization_percent,
    memoryUsedMb: row.memory_used_mb,
    memoryTotalMb: row.memory_total_mb,
    agentVersion: row.agent_version,
    gpuCount: row.gpu_count,
    hottestTemperature: hottestTemperature(row),
  };
  if (row.sort_key !== undefined) entry.sortKey = row.sort_key;
  return entry;
}

export function gpuReadingsOf(row: GpuReadingsRow): GpuReadings {
  return {
    instanceId: row.instance_id,
    hostname: row.hostname,
    status: row.status as InstanceStatus,
    scheduledAt: row.scheduled_at,
    gpuCount: row.gpu_count,
    aggregate: aggregateOf(row),
    gpus: JSON.parse(row.gpus_json) as GpuSample[],
  };
}

export function eventColumns(event: InstanceEvent): NewEventRow {
  return { instance_id: event.instanceId, at: event.at, type: event.type, reason: event.reason, data_json: JSON.stringify(event.data) };
}

export function storedEventOf(row: EventRow): StoredEvent {
  return { id: row.id, instanceId: row.instance_id, at: row.at, type: row.type as EventType, reason: row.reason, data: JSON.parse(row.data_json) };
}

export function commandColumns(command: AgentCommand): CommandRow {
  return {
    id: command.id,
    instance_id: command.instanceId,
    type: command.type,
    args_json: JSON.stringify(command.args),
    state: command.state,
    issued_at: command.issuedAt,
    issued_by: command.issuedBy,
    delivered_at: command.deliveredAt,
    completed_at: command.completedAt,
    detail: command.detail,
    idempotency_key: command.idempotencyKey,
  };
}

export function commandOf(row: CommandRow): AgentCommand {
  return {
    id: row.id,
    instanceId: row.instance_id,
    type: row.type as CommandType,
    args: JSON.parse(row.args_json),
    state: row.state as CommandState,
    issuedAt: row.issued_at,
    issuedBy: row.issued_by,
    deliveredAt: row.delivered_at,
    completedAt: row.completed_at,
    detail: row.detail,
    idempotencyKey: row.idempotency_key,
  };
}

export function commandChangeColumns(change: CommandChange): Partial<CommandRow> {
  const columns: Partial<CommandRow> = {};
  if (change.state !== undefined) columns.state = change.state;
  if (change.deliveredAt !== undefined) columns.delivered_at = change.deliveredAt;
  if (change.completedAt !== undefined) columns.completed_at = change.completedAt;
  if (change.detail !== undefined) columns.detail = change.detail;
  return columns;
}
