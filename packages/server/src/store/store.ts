import type { Kysely } from 'kysely';
import type { CollectorError, CommandState, CommandType, EventType, GpuMetrics, GpuSample, InstanceStatus, LabelTerm, Labels, PolicySpec } from '@dumont/protocol';
import type { LifecycleFacts } from '../policy/hibernation-policy.js';
import type { Database } from './schema.js';
import type { InstanceRow, NewSavingsRow, OutboxRow, SavingsRow } from './schema.js';

/**
 * The one store contract. The fleet service talks only to this; `sqlite-store.ts` and
 * `postgres-store.ts` provide it and `store.contract.ts` runs the same suite against both.
 */
export interface FleetRepository {
  /**
   * Inside a transaction: this one changed a status, a command or an event, so its commit must survive
   * a power cut before anyone is answered. Without it a commit survives a crash of the process only
   * (a plain metrics beat: the agent re-sends it 30 s later). Writes outside a transaction are never
   * more than that.
   */
  requireDurableCommit(): Promise<void>;
  getInstance(instanceId: number, options?: { forUpdate?: boolean }): Promise<InstanceRecord | undefined>;
  /** Only what a lifecycle transition reads: the heartbeat's hot path skips the readings and their JSON. */
  getLifecycle(instanceId: number, options?: { forUpdate?: boolean }): Promise<InstanceLifecycle | undefined>;
  findInstanceIdByTokenHash(tokenHash: string): Promise<number | undefined>;
  insertInstance(instance: NewInstance): Promise<void>;
  /**
   * Inserts the instance unless one with its id exists (committed, or committed meanwhile by a
   * concurrent transaction, which PostgreSQL waits for): false when it did not insert.
   */
  insertInstanceIfAbsent(instance: NewInstance): Promise<boolean>;
  /** Compare-and-set on `version`: false when another writer got there first (or no such row). */
  updateInstance(instanceId: number, expectedVersion: number, change: InstanceChange): Promise<boolean>;
  /** One page in `order` (default: instance id ascending), starting after `after`; nulls last either way. */
  listInstances(query: InstanceListQuery): Promise<InstanceListEntry[]>;
  /** Instances matching the query's owner, status, search and labels (scans: the status counters are for no filter). */
  countInstances(query: InstanceFilter): Promise<number>;
  /** Replaces all of an instance's labels with `labels` (none: `{}`). */
  setLabels(instanceId: number, labels: Readonly<Labels>): Promise<void>;
  /** The labels of each of these instances, in one query per 500 ids; an instance without any is absent. */
  labelsOf(instanceIds: readonly number[]): Promise<Map<number, Labels>>;

  /** Every named policy, highest priority first. */
  listPolicies(): Promise<StoredPolicy[]>;
  /** Creates or replaces the policy of that name (keeping its `createdAt`); true when it created it. */
  putPolicy(policy: StoredPolicy): Promise<boolean>;
  /** False when there was no such policy. */
  deletePolicy(name: string): Promise<boolean>;

  countInstancesByStatus(owner: string | null): Promise<Map<string, number>>;
  /** Every owner's instances after `afterInstanceId`, by id, with their last per-GPU readings (a /metrics scrape). */
  listGpuReadings(afterInstanceId: number | undefined, limit: number): Promise<GpuReadings[]>;
  /** Instances whose deadline has passed, soonest first. */
  dueInstanceIds(now: number, limit: number): Promise<number[]>;
  /** Instances offline now that went offline at or after `since` (every owner). */
  countOfflineSince(since: number): Promise<number>;

  insertEvents(events: readonly InstanceEvent[]): Promise<void>;
  /** Newest first; `beforeId` pages backwards. */
  listEvents(instanceId: number, beforeId: number | undefined, limit: number): Promise<StoredEvent[]>;

  insertCommand(command: AgentCommand): Promise<void>;
  /** Commands pending or delivered and not yet acknowledged, oldest first. */
  openCommands(instanceId: number): Promise<AgentCommand[]>;
  listCommands(instanceId: number, limit: number): Promise<AgentCommand[]>;
  getCommand(commandId: string): Promise<AgentCommand | undefined>;
  /** The command made under this `Idempotency-Key` for this instance, if any (keys are per instance). */
  findCommandByIdempotencyKey(instanceId: number, idempotencyKey: string): Promise<AgentCommand | undefined>;
  /** Conditional: changes the command only while its state is one of `fromStates`. */
  updateCommand(commandId: string, fromStates: readonly CommandState[], change: CommandChange): Promise<boolean>;

  insertOutbox(rows: OutboxRow[]): Promise<void>;
  /**
   * Takes up to `limit` pending rows that are due and not held by a live claim: each is marked as
   * claimed by `claimer` until `claimedUntil` and its attempt counted. Call inside a transaction; on
   * PostgreSQL concurrent claimers skip each other's rows (FOR UPDATE SKIP LOCKED).
   */
  claimOutbox(now: number, claimer: string, claimedUntil: number, limit: number, target: OutboxTarget): Promise<OutboxRow[]>;
  /** Rows withdrawn while being sent whose sender died (claim expired): cancelled, never sent again. */
  closeAbandonedWithdrawals(now: number): Promise<void>;
  /** Records an attempt's outcome: only while `claimer` still holds the row and it is pending. */
  finishOutbox(id: string, claimer: string, patch: Partial<OutboxRow>): Promise<boolean>;
  /**
   * Cancels the instance's pending rows of `kind` that no live claim holds; rows being sent right now
   * are flagged instead (`cancel_requested`), so that a failure is not retried.
   */
  cancelOutbox(instanceId: number, kind: string, now: number): Promise<{ cancelled: number; inFlight: number }>;
  listOutbox(instanceId: number): Promise<OutboxRow[]>;
  getOutbox(id: string): Promise<OutboxRow | undefined>;

  insertSavings(row: NewSavingsRow): Promise<void>;
  /** Closed intervals that overlap [from, to), for one owner (null = all) or one instance. */
  listSavings(query: SavingsQuery): Promise<SavingsRow[]>;
  /** Instances with an open interval (hibernated now, or dry-run would-hibernate). */
  listOpenSavings(query: Omit<SavingsQuery, 'from' | 'to'>): Promise<OpenSavingsRow[]>;
  hostnamesOf(instanceIds: readonly number[]): Promise<Map<number, string | null>>;
  /** Instances a provider knows by this id: set as theirs, or (none set) their own instance id. */
  instancesKnownToProviderAs(providerInstanceId: string): Promise<number[]>;

  findApiKey(keyHash: string): Promise<ApiKeyRow | undefined>;
  insertApiKey(row: ApiKeyRow): Promise<void>;
  countAdminKeys(): Promise<number>;
}

export interface FleetStore extends FleetRepository {
  readonly dialect: 'sqlite' | 'postgres';
  /**
   * The query builder over this store's database, for modules with tables of their own (metrics
   * history, sessions). On a SQLite file its SELECTs outside a transaction read the last commit on the
   * read-only connection.
   */
  readonly kysely: Kysely<Database>;
  /**
   * Runs `work` in one transaction and resolves after its commit (made durable first when `work`
   * called `requireDurableCommit`). Reads with `forUpdate` lock their row where the engine can.
   */
  transaction<T>(work: (repo: FleetRepository) => Promise<T>): Promise<T>;
  /**
   * A heartbeat that changes nothing but metrics and facts no one must see survive a power cut (no
   * status, command, event or outbox row), written without a transaction: one compare-and-set on
   * `version`, as `updateInstance`. False when the version moved or the row is gone; the caller then
   * redoes the beat under a lock. `expectedVersion` must come from a read outside any transaction
   * (committed state). Answered after the write is committed, never made durable for its own sake.
   * PostgreSQL: the turn's plain beats share one autocommit UPDATE, a compare-and-set per row;
   * SQLite: one statement in its group commit.
   */
  writePlainBeat(instanceId: number, expectedVersion: number, change: InstanceChange): Promise<boolean>;
  /**
   * Whether a plain heartbeat is read without a lock (`getLifecycle` on the store) and written with
   * `writePlainBeat` rather than run in a transaction. PostgreSQL: yes (the turn's beats share one
   * read and one write). SQLite: no — measured at fleet scale, its group commit answered faster than a
   * read on its read-only connection followed by a one-statement write (docs/PERFORMANCE.md).
   */
  readonly optimisticPlainBeats: boolean;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export const LIFECYCLE_COLUMNS = [
  'instance_id',
  'owner',
  'agent_token_hash',
  'status',
  'last_heartbeat_at',
  'online_since',
  'idle_since',
  'scheduled_at',
  'postponed_until',
  'hibernate_issued_at',
  'hibernate_command_id',
  'offline_since',
  'deadline',
  'hibernation_enabled',
  'threshold_minutes',
  'ignore_gpu_processes',
  'heartbeat_count',
  'agent_timestamp_ms',
  'open_commands',
  'version',
  'hostname',
  'gpu_count',
  'provider',
  'provider_instance_id',
  'price_per_hour',
  'dry_run',
  'provider_state',
  'wake_requested_at',
  'saving_since',
  'threshold_set_by_admin',
  'enabled_set_by_admin',
  'dry_run_set_by_admin',
  'labels_json',
] as const satisfies readonly (keyof InstanceRow)[];

/** The columns behind `InstanceLifecycle` (instance-mapping.ts): known only inside store/. */
export type LifecycleRow = Pick<InstanceRow, (typeof LIFECYCLE_COLUMNS)[number]>;

/** What operators set on an instance: its hibernation settings and how its provider knows it. */
export interface InstanceSettings {
  hibernationEnabled: boolean;
  /** null = the server default (DUMONT_IDLE_THRESHOLD_MINUTES). */
  thresholdMinutes: number | null;
  ignoreGpuProcesses: boolean;
  dryRun: boolean;
  /** null = the server default (DUMONT_PROVIDER). */
  provider: string | null;
  /** null = the instance id. */
  providerInstanceId: string | null;
  pricePerHour: number | null;
  /**
   * Whether an admin key last set the threshold, `enabled` or `dry_run`: an admin's value stands, an
   * owner's is bounded by the admin limits when evaluated (fleet/admin-limits.ts), even one stored
   * before a limit was lowered.
   */
  thresholdSetByAdmin: boolean;
  enabledSetByAdmin: boolean;
  dryRunSetByAdmin: boolean;
}

/** A named policy as stored: `spec` is what the admin PUT (the protocol's `PolicySpec`), kept verbatim. */
export interface StoredPolicy {
  name: string;
  priority: number;
  spec: PolicySpec;
  createdAt: number;
  updatedAt: number;
  updatedBy: string;
}

/** An instance as a lifecycle decision reads it: the policy's facts, its settings, and bookkeeping. */
export interface InstanceLifecycle {
  instanceId: number;
  owner: string;
  agentTokenHash: string;
  hostname: string | null;
  gpuCount: number;
  facts: LifecycleFacts;
  /** When the sweeper must look at the instance next (may be early: DEADLINE_SLACK_MS); null = never. */
  deadline: number | null;
  settings: InstanceSettings;
  /** The hibernate command in flight, or the one that hibernated the instance (its result may be re-sent). */
  hibernateCommandId: string | null;
  /** Commands pending or delivered but unacknowledged: a beat with none skips the commands query. */
  openCommands: number;
  heartbeatCount: number;
  /** The agent's clock at its last applied beat (ms). */
  agentTimestampMs: number | null;
  /** Bumped by every write; writes are compare-and-set on it. */
  version: number;
  /** Its labels (which policy applies to it). */
  labels: Labels;
}

/** What one heartbeat reported, as kept for display: the host aggregate and each GPU as sent. */
export interface MetricsSample {
  /** The beat's timestamp as the agent wrote it, and parsed. */
  agentTimestamp: string;
  agentTimestampMs: number;
  aggregate: Required<GpuMetrics>;
  gpus: readonly GpuSample[];
  gpuCount: number;
  processCount: number | null;
  activeUsers: number | null;
  lastActivity: string | null;
  agentVersion: string | null;
  collectorErrors: readonly CollectorError[];
}

/** The last beat's readings of a stored instance; before its first beat every figure is unknown. */
export interface StoredReadings extends Omit<MetricsSample, 'agentTimestamp' | 'agentTimestampMs'> {
  agentTimestamp: string | null;
}

/** An instance in full: its lifecycle, its last readings and its provider's last word. */
export interface InstanceRecord extends InstanceLifecycle {
  registeredAt: number;
  readings: StoredReadings;
  providerError: string | null;
  providerUpdatedAt: number | null;
}

/**
 * A change to one instance, in the domain's terms; absent fields are left as they are. Facts are the
 * ones that differ from the stored ones (see `changedFacts`).
 */
export interface InstanceChange {
  facts?: Partial<LifecycleFacts>;
  deadline?: number | null;
  settings?: Partial<InstanceSettings>;
  owner?: string;
  agentTokenHash?: string;
  hostname?: string | null;
  hibernateCommandId?: string | null;
  openCommands?: number;
  heartbeatCount?: number;
  /** A heartbeat's readings (the hostname travels separately, written only when it changed). */
  metrics?: MetricsSample;
  providerError?: string | null;
  providerUpdatedAt?: number;
}

/** A new instance: registered, offline until its first beat, hibernation enabled unless settings say. */
export interface NewInstance {
  instanceId: number;
  owner: string;
  agentTokenHash: string;
  hostname: string | null;
  registeredAt: number;
  settings?: Partial<InstanceSettings>;
}

/** `transitions`: only commits that asked for it are made durable; `always`: every commit is. */
export type Durability = 'transitions' | 'always';

/**
 * What a list page may be ordered by, each with its SQL key (kysely-repository.ts): the stored column,
 * or for the derived figures an expression over the columns that orders as the API's numbers do.
 */
export const INSTANCE_ORDER_KEYS = ['instance_id', 'hostname', 'last_heartbeat', 'idle_seconds', 'hibernate_in_seconds', 'gpu_utilization'] as const;
export type InstanceOrderKey = (typeof INSTANCE_ORDER_KEYS)[number];

/** A row's value of its page's order key (`sort_key`); null = unknown, listed after every known value. */
export type InstanceSortValue = number | string | null;

export interface InstanceListQuery extends InstanceFilter {
  /** Default instance id ascending. Ties go by instance id in the same direction. */
  order?: { key: InstanceOrderKey; descending: boolean } | undefined;
  /** Keyset paging: the order key value and instance id of the previous page's last row. */
  after?: { value: InstanceSortValue; instanceId: number } | undefined;
  /** The default order's keyset (the same as `after` with that order). */
  afterInstanceId?: number | undefined;
  limit: number;
}

/** Which instances a list page or its count covers. */
export interface InstanceFilter {
  /** null = every owner (admin). */
  owner: string | null;
  status?: string | undefined;
  /** Digits: that instance id, or a hostname containing them; else a case-insensitive hostname substring. */
  search?: string | undefined;
  /** Label selector terms, all of which must match; none or empty = no label filter. */
  labels?: readonly LabelTerm[] | undefined;
}

/** Something that happened to an instance, with why, for its timeline. */
export interface InstanceEvent {
  instanceId: number;
  at: number;
  type: EventType;
  reason: string;
  data: Record<string, unknown>;
}

/** A recorded event; ids grow with time and page the timeline. */
export interface StoredEvent extends InstanceEvent {
  id: number;
}

/** A command to an agent and what became of it. */
export interface AgentCommand {
  id: string;
  instanceId: number;
  type: CommandType;
  args: Record<string, unknown>;
  state: CommandState;
  issuedAt: number;
  issuedBy: string;
  deliveredAt: number | null;
  completedAt: number | null;
  detail: string | null;
  /** The client's `Idempotency-Key`, unique per instance; null when none was sent. */
  idempotencyKey: string | null;
}

export type CommandChange = Partial<Pick<AgentCommand, 'state' | 'deliveredAt' | 'completedAt' | 'detail'>>;

/** One row of a list page. */
export interface InstanceListEntry {
  instanceId: number;
  hostname: string | null;
  status: InstanceStatus;
  lastHeartbeatAt: number | null;
  idleSince: number | null;
  scheduledAt: number | null;
  utilizationPercent: number | null;
  memoryUsedMb: number | null;
  memoryTotalMb: number | null;
  agentVersion: string | null;
  gpuCount: number;
  /** The hottest GPU of the last beat; null when none reported a temperature. */
  hottestTemperature: number | null;
  /** The value of the page's order key (absent for the instance id order). */
  sortKey?: InstanceSortValue;
}

/** An instance's last readings, per GPU, for a /metrics scrape. */
export interface GpuReadings {
  instanceId: number;
  hostname: string | null;
  status: InstanceStatus;
  scheduledAt: number | null;
  gpuCount: number;
  aggregate: Required<GpuMetrics>;
  gpus: readonly GpuSample[];
}

export type GpuReadingsRow = Pick<
  InstanceRow,
  | 'instance_id'
  | 'hostname'
  | 'status'
  | 'scheduled_at'
  | 'gpu_count'
  | 'gpus_json'
  | 'utilization_percent'
  | 'memory_used_mb'
  | 'memory_total_mb'
  | 'temperature_celsius'
  | 'power_watts'
>;

export type InstanceSummaryRow = Pick<
  InstanceRow,
  | 'instance_id'
  | 'hostname'
  | 'status'
  | 'last_heartbeat_at'
  | 'idle_since'
  | 'utilization_percent'
  | 'memory_used_mb'
  | 'memory_total_mb'
  | 'agent_version'
  | 'gpu_count'
  | 'scheduled_at'
  | 'temperature_celsius'
> & {
  /**
   * The per-GPU JSON, only when the stored aggregate temperature is null (one GPU did not report it):
   * then the hottest of those that did is the row's temperature. Null when the aggregate says it all.
   */
  gpus_json_if_no_temperature: string | null;
  /** The value of the page's order key (absent for the instance id order). */
  sort_key?: InstanceSortValue;
};

/** Which rows a claim takes: one target's (a provider's name, or `notify`), or any target but these. */
export type OutboxTarget = { is: string } | { notIn: readonly string[] };

export interface SavingsQuery {
  /** null = every owner (admin). */
  owner: string | null;
  instanceId?: number | undefined;
  /** Only instances whose labels match every term. */
  labels?: readonly LabelTerm[] | undefined;
  from: number;
  to: number;
}

export type OpenSavingsRow = Pick<InstanceRow, 'instance_id' | 'owner' | 'hostname' | 'status' | 'saving_since' | 'gpu_count' | 'price_per_hour'>;

export interface ApiKeyRow {
  key_hash: string;
  owner: string;
  is_admin: number;
  label: string | null;
  created_at: number;
}
