import type { Kysely } from 'kysely';
import type { Database } from './schema.js';
import type { CommandRow, EventRow, InstanceRow, InstanceUpdate, NewEventRow, NewInstanceRow, NewSavingsRow, OutboxRow, SavingsRow } from './schema.js';

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
  getInstance(instanceId: number, options?: { forUpdate?: boolean }): Promise<InstanceRow | undefined>;
  /** Only the columns a lifecycle transition reads: the heartbeat's hot path skips metrics and JSON. */
  getLifecycle(instanceId: number, options?: { forUpdate?: boolean }): Promise<LifecycleRow | undefined>;
  findInstanceIdByTokenHash(tokenHash: string): Promise<number | undefined>;
  insertInstance(row: NewInstanceRow): Promise<void>;
  /** Compare-and-set on `version`: false when another writer got there first (or no such row). */
  updateInstance(instanceId: number, expectedVersion: number, patch: InstanceUpdate): Promise<boolean>;
  /** One page in `order` (default: instance id ascending), starting after `after`; nulls last either way. */
  listInstances(query: InstanceListQuery): Promise<InstanceSummaryRow[]>;
  /** Instances matching the query's owner, status and search (scans: the status counters are for no search). */
  countInstances(query: Pick<InstanceListQuery, 'owner' | 'status' | 'search'>): Promise<number>;
  countInstancesByStatus(owner: string | null): Promise<Map<string, number>>;
  /** Every owner's instances after `afterInstanceId`, by id, with their last per-GPU readings (a /metrics scrape). */
  listGpuReadings(afterInstanceId: number | undefined, limit: number): Promise<GpuReadingsRow[]>;
  /** Instances whose deadline has passed, soonest first. */
  dueInstanceIds(now: number, limit: number): Promise<number[]>;
  /** Instances offline now that went offline at or after `since` (every owner). */
  countOfflineSince(since: number): Promise<number>;

  insertEvents(rows: NewEventRow[]): Promise<void>;
  /** Newest first; `beforeId` pages backwards. */
  listEvents(instanceId: number, beforeId: number | undefined, limit: number): Promise<EventRow[]>;

  insertCommand(row: CommandRow): Promise<void>;
  /** Commands pending or delivered and not yet acknowledged, oldest first. */
  openCommands(instanceId: number): Promise<CommandRow[]>;
  listCommands(instanceId: number, limit: number): Promise<CommandRow[]>;
  getCommand(commandId: string): Promise<CommandRow | undefined>;
  /** The command made under this `Idempotency-Key` for this instance, if any (keys are per instance). */
  findCommandByIdempotencyKey(instanceId: number, idempotencyKey: string): Promise<CommandRow | undefined>;
  /** Conditional: changes the command only while its state is one of `fromStates`. */
  updateCommand(commandId: string, fromStates: readonly string[], patch: Partial<CommandRow>): Promise<boolean>;

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

  findApiKey(keyHash: string): Promise<ApiKeyRow | undefined>;
  insertApiKey(row: ApiKeyRow): Promise<void>;
  countAdminKeys(): Promise<number>;
}

export interface FleetStore extends FleetRepository {
  readonly dialect: 'sqlite' | 'postgres';
  /** The query builder over this store's database, for modules with tables of their own (metrics history). */
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
   * PostgreSQL: one autocommit UPDATE; SQLite: a member of its group commit.
   */
  writePlainBeat(instanceId: number, expectedVersion: number, patch: InstanceUpdate): Promise<boolean>;
  /**
   * Whether a plain heartbeat is cheaper read without a lock and written with `writePlainBeat` than run
   * in a transaction. PostgreSQL: yes (two round trips instead of four). SQLite: no — its group commit
   * already shares one transaction among the beats that arrive together, and measured over HTTP the
   * separate read made beats slower, not faster (docs/PERFORMANCE.md).
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
] as const satisfies readonly (keyof InstanceRow)[];

export type LifecycleRow = Pick<InstanceRow, (typeof LIFECYCLE_COLUMNS)[number]>;

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

export interface InstanceListQuery {
  /** null = every owner (admin). */
  owner: string | null;
  status?: string | undefined;
  /** Digits: that instance id, or a hostname containing them; else a case-insensitive hostname substring. */
  search?: string | undefined;
  /** Default instance id ascending. Ties go by instance id in the same direction. */
  order?: { key: InstanceOrderKey; descending: boolean } | undefined;
  /** Keyset paging: the order key value and instance id of the previous page's last row. */
  after?: { value: InstanceSortValue; instanceId: number } | undefined;
  /** The default order's keyset (the same as `after` with that order). */
  afterInstanceId?: number | undefined;
  limit: number;
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
