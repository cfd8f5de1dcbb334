import type { Generated, Insertable, Selectable, Updateable } from 'kysely';

/**
 * The tables, as both drivers return them: times are epoch milliseconds (bigint in PostgreSQL, parsed
 * to number), booleans are 0/1 integers, JSON is text. One shape for SQLite and PostgreSQL.
 */
export interface Database {
  instances: InstancesTable;
  api_keys: ApiKeysTable;
  commands: CommandsTable;
  events: EventsTable;
  instance_counts: InstanceCountsTable;
  outbox: OutboxTable;
  savings: SavingsTable;
  instance_labels: InstanceLabelsTable;
  policies: PoliciesTable;
}

/** Named hibernation policies, written by admins; `spec_json` is the policy as PUT (protocol `PolicySpec`). */
export interface PoliciesTable {
  name: string;
  /** Unique: two policies at one priority would make an instance's match ambiguous. */
  priority: number;
  spec_json: string;
  created_at: number;
  updated_at: number;
  updated_by: string;
}

/** One label of one instance; an instance's labels are replaced as a whole (store.ts `setLabels`). */
export interface InstanceLabelsTable {
  instance_id: number;
  key: string;
  value: string;
}

export interface OutboxTable {
  id: string;
  instance_id: number;
  /** `stop` | `start` (a provider action) or `notify`. */
  kind: string;
  /** The provider's name, or `notify`. */
  target: string;
  payload_json: string;
  /** `pending` → `done` | `failed` | `cancelled`. */
  state: string;
  attempts: number;
  created_at: number;
  due_at: number;
  claimed_by: string | null;
  /** A claim older than this is abandoned (its process died) and may be taken again. */
  claimed_until: number | null;
  /** Set when activity asked to cancel a stop that was already being sent. */
  cancel_requested: number;
  last_error: string | null;
  completed_at: number | null;
}

export interface SavingsTable {
  id: Generated<number>;
  instance_id: number;
  owner: string;
  /** `hibernated` (the machine was stopped) or `would` (dry-run). */
  kind: string;
  started_at: number;
  ended_at: number;
  gpu_count: number;
  price_per_hour: number | null;
}

/** Maintained by triggers (see migrations.ts); read-only for the application. */
export interface InstanceCountsTable {
  owner: string;
  status: string;
  shard: number;
  n: number;
}

export interface InstancesTable {
  instance_id: number;
  owner: string;
  agent_token_hash: string;
  hostname: string | null;
  registered_at: number;
  status: string;
  last_heartbeat_at: number | null;
  online_since: number | null;
  idle_since: number | null;
  scheduled_at: number | null;
  postponed_until: number | null;
  hibernate_issued_at: number | null;
  /** The hibernate command in flight, or the one that hibernated the instance (its result may be re-sent). */
  hibernate_command_id: string | null;
  /** When the instance went offline (server time); null unless offline. */
  offline_since: number | null;
  /** When the sweeper must look at this row next; indexed, null = never. */
  deadline: number | null;
  hibernation_enabled: number;
  /** null = the server default (DUMONT_IDLE_THRESHOLD_MINUTES). */
  threshold_minutes: number | null;
  ignore_gpu_processes: number;
  heartbeat_count: number;
  agent_timestamp: string | null;
  agent_timestamp_ms: number | null;
  utilization_percent: number | null;
  memory_used_mb: number | null;
  memory_total_mb: number | null;
  temperature_celsius: number | null;
  power_watts: number | null;
  gpus_json: string;
  gpu_count: number;
  process_count: number | null;
  active_users: number | null;
  last_activity: string | null;
  agent_version: string | null;
  collector_errors_json: string;
  /** Commands pending or delivered but unacknowledged: lets a heartbeat skip the commands query. */
  open_commands: number;
  /** Bumped by every write; updates are compare-and-set on it. */
  version: number;
  /** null = the server default (DUMONT_PROVIDER). */
  provider: string | null;
  /** null = the instance id. */
  provider_instance_id: string | null;
  price_per_hour: number | null;
  dry_run: number;
  provider_state: string | null;
  provider_error: string | null;
  provider_updated_at: number | null;
  wake_requested_at: number | null;
  /** Start of the open hibernated (or dry-run would-hibernate) interval; null when none is open. */
  saving_since: number | null;
  /** 1 when an admin key last set the threshold / `enabled` / `dry_run` (admin limits do not bound it). */
  threshold_set_by_admin: number;
  enabled_set_by_admin: number;
  dry_run_set_by_admin: number;
  /** A copy of the instance's labels (instance_labels is the truth for selectors): the heartbeat reads one row. */
  labels_json: string;
}

export interface ApiKeysTable {
  key_hash: string;
  owner: string;
  is_admin: number;
  label: string | null;
  created_at: number;
}

export interface CommandsTable {
  id: string;
  instance_id: number;
  type: string;
  args_json: string;
  state: string;
  issued_at: number;
  issued_by: string;
  delivered_at: number | null;
  completed_at: number | null;
  detail: string | null;
  /** The client's `Idempotency-Key`, unique per instance; null when none was sent. */
  idempotency_key: string | null;
}

export interface EventsTable {
  id: Generated<number>;
  instance_id: number;
  at: number;
  type: string;
  reason: string;
  data_json: string;
}

export type InstanceRow = Selectable<InstancesTable>;
export type NewInstanceRow = Insertable<InstancesTable>;
export type InstanceUpdate = Updateable<InstancesTable>;
export type CommandRow = Selectable<CommandsTable>;
export type EventRow = Selectable<EventsTable>;
export type NewEventRow = Insertable<EventsTable>;
export type OutboxRow = Selectable<OutboxTable>;
export type SavingsRow = Selectable<SavingsTable>;
export type NewSavingsRow = Insertable<SavingsTable>;

/** A freshly registered instance: never seen, so `offline`, hibernation on with the server's threshold. */
export function newInstanceRow(
  fields: Pick<NewInstanceRow, 'instance_id' | 'owner' | 'agent_token_hash' | 'registered_at'> & Partial<NewInstanceRow>,
): NewInstanceRow {
  return {
    hostname: null,
    status: 'offline',
    offline_since: null,
    hibernation_enabled: 1,
    ignore_gpu_processes: 0,
    heartbeat_count: 0,
    gpus_json: '[]',
    gpu_count: 0,
    collector_errors_json: '[]',
    open_commands: 0,
    version: 0,
    dry_run: 0,
    threshold_set_by_admin: 0,
    enabled_set_by_admin: 0,
    dry_run_set_by_admin: 0,
    labels_json: '{}',
    ...fields,
  };
}
