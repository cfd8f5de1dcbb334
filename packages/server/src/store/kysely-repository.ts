import { sql, type ExpressionBuilder, type Kysely, type RawBuilder } from 'kysely';
import type { CommandState, LabelTerm, Labels, PolicySpec } from '@dumont/protocol';
import { columnsOf, commandChangeColumns, commandColumns, commandOf, eventColumns, gpuReadingsOf, lifecycleOf, listEntryOf, newInstanceColumns, recordOf, storedEventOf } from './instance-mapping.js';
import { QueryTemplates } from './query-templates.js';
import type { Database, InstanceUpdate, NewInstanceRow, NewSavingsRow, OutboxRow } from './schema.js';
import {
  LIFECYCLE_COLUMNS,
  type ApiKeyRow,
  type FleetRepository,
  type InstanceListQuery,
  type InstanceOrderKey,
  type InstanceSortValue,
  type AgentCommand,
  type CommandChange,
  type InstanceChange,
  type InstanceEvent,
  type InstanceFilter,
  type InstanceListEntry,
  type InstanceSummaryRow,
  type LifecycleRow,
  type StoredPolicy,
  type NewInstance,
  type OutboxTarget,
  type SavingsQuery,
} from './store.js';

const SUMMARY_COLUMNS = [
  'instance_id',
  'hostname',
  'status',
  'last_heartbeat_at',
  'idle_since',
  'utilization_percent',
  'memory_used_mb',
  'memory_total_mb',
  'agent_version',
  'gpu_count',
  'scheduled_at',
  'temperature_celsius',
] as const;

/**
 * The SQL of each list order (the instance id order is the primary key itself). Each orders exactly as
 * the number the API shows (fleet/views.ts), evaluated by both engines alike:
 * - `idle_seconds`: floor((last beat − idle since) / 1 s), 0 when either is unknown — exact (times
 *   are integer milliseconds, integer division).
 * - `hibernate_in_seconds`: the countdown depends on the clock, so a key of it would drift between two
 *   pages; the scheduled time orders the same at any moment and stays put. `hibernating` (shown as 0)
 *   gets 0, before any scheduled time; not counting down is null. Rows showing the same countdown are
 *   in scheduled-time order, not instance id order.
 */
const ORDER_KEY_SQL: Record<Exclude<InstanceOrderKey, 'instance_id'>, RawBuilder<InstanceSortValue>> = {
  hostname: sql`hostname`,
  last_heartbeat: sql`last_heartbeat_at`,
  gpu_utilization: sql`utilization_percent`,
  idle_seconds: sql`(case when idle_since is null or last_heartbeat_at is null or last_heartbeat_at <= idle_since then 0
    else cast((last_heartbeat_at - idle_since) / 1000 as bigint) end)`,
  hibernate_in_seconds: sql`(case when status = 'hibernating' then 0 else scheduled_at end)`,
};

/** `%`, `_` and the escape character itself match only themselves. */
const escapeLike = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`);

/**
 * One condition per selector term over instance_labels, joined to the outer row's `idColumn`. A page
 * asks a correlated `exists` (an index lookup per row: the primary key or (key, value, instance_id)),
 * so the order's own index drives and stops at a full page. A count reads every match anyway: there a
 * `instance_id in (select ...)` reads the matching ids from (key, value, instance_id) and looks only those up,
 * instead of probing every instance (100k instances, `tier=gold` with 322 matches: 0.1 ms, not 20 ms).
 * `!=` matches instances without the key too; negations stay `not exists` (they match most rows).
 */
function labelConditions(
  terms: readonly LabelTerm[] | undefined,
  idColumn: 'instances.instance_id' | 'savings.instance_id',
  shape: 'exists' | 'in' = 'exists',
): RawBuilder<boolean>[] {
  return (terms ?? []).map(({ key, op, value }) => {
    const withValue = op === 'eq' || op === 'ne' ? sql` and l."value" = ${value}` : sql``;
    if (shape === 'in' && (op === 'eq' || op === 'exists')) {
      return sql<boolean>`${sql.ref(idColumn)} in (select l.instance_id from instance_labels l where l."key" = ${key}${withValue})`;
    }
    const found = sql<boolean>`exists (select 1 from instance_labels l where l.instance_id = ${sql.ref(idColumn)} and l."key" = ${key}${withValue})`;
    return op === 'eq' || op === 'exists' ? found : sql<boolean>`not ${found}`;
  });
}

/** The owner, status, search and label filters of a list (`exists` terms) and of its count (`in` terms). */
function listFilter(query: InstanceFilter, labelShape: 'exists' | 'in' = 'exists') {
  return (eb: ExpressionBuilder<Database, 'instances'>) => {
    const where = [];
    if (query.owner !== null) where.push(eb('owner', '=', query.owner));
    if (query.status !== undefined) where.push(eb('status', '=', query.status));
    if (query.search !== undefined) {
      // lower() on both sides: the same folding on each engine (ILIKE is PostgreSQL's only).
      const pattern = `%${escapeLike(query.search)}%`;
      const text = sql<boolean>`lower(hostname) like lower(${pattern}) escape '\\'`;
      const id = /^[0-9]+$/.test(query.search) ? Number(query.search) : NaN;
      where.push(Number.isSafeInteger(id) ? eb.or([eb('instance_id', '=', id), text]) : text);
    }
    where.push(...labelConditions(query.labels, 'instances.instance_id', labelShape));
    return eb.and(where);
  };
}

/** Every query of the store, written once in Kysely for both engines. */
export class KyselyRepository implements FleetRepository {
  constructor(
    protected readonly db: Kysely<Database>,
    private readonly rowLocks: boolean,
    /** Shared by a store and its transactions: the heartbeat's hot queries, compiled once. */
    protected readonly templates: QueryTemplates = new QueryTemplates(),
    private readonly onDurableCommit: () => Promise<void> = async () => {},
  ) {}

  requireDurableCommit(): Promise<void> {
    return this.onDurableCommit();
  }

  async getInstance(instanceId: number, options?: { forUpdate?: boolean }) {
    const row = await this.getInstanceRow(instanceId, options);
    return row && recordOf(row);
  }

  /** The stored row itself: for store/ and its tests, which check what is written where. */
  async getInstanceRow(instanceId: number, options?: { forUpdate?: boolean }) {
    let q = this.db.selectFrom('instances').selectAll().where('instance_id', '=', instanceId);
    if (options?.forUpdate && this.rowLocks) q = q.forUpdate();
    return q.executeTakeFirst();
  }

  async getLifecycle(instanceId: number, options?: { forUpdate?: boolean }) {
    const row = await this.getLifecycleRow(instanceId, options);
    return row && lifecycleOf(row);
  }

  protected async getLifecycleRow(instanceId: number, options?: { forUpdate?: boolean }): Promise<LifecycleRow | undefined> {
    const lock = options?.forUpdate === true && this.rowLocks;
    const query = this.templates.bind(lock ? 'lifecycle-locked' : 'lifecycle', [instanceId], ([id]) => {
      const q = this.db.selectFrom('instances').select(LIFECYCLE_COLUMNS).where('instance_id', '=', id as number);
      return (lock ? q.forUpdate() : q).compile();
    });
    const { rows } = await this.db.executeQuery(query);
    return rows[0];
  }

  async findInstanceIdByTokenHash(tokenHash: string) {
    const row = await this.db
      .selectFrom('instances')
      .select('instance_id')
      .where('agent_token_hash', '=', tokenHash)
      .executeTakeFirst();
    return row?.instance_id;
  }

  async insertInstance(instance: NewInstance) {
    await this.insertInstanceRow(newInstanceColumns(instance));
  }

  async insertInstanceIfAbsent(instance: NewInstance) {
    const result = await this.db
      .insertInto('instances')
      .values(newInstanceColumns(instance))
      .onConflict((oc) => oc.column('instance_id').doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
  }

  /** A row as given: for store/ and its tests, which need instances in any state. */
  async insertInstanceRow(row: NewInstanceRow) {
    await this.db.insertInto('instances').values(row).execute();
  }

  updateInstance(instanceId: number, expectedVersion: number, change: InstanceChange) {
    return this.updateInstanceColumns(instanceId, expectedVersion, columnsOf(change));
  }

  /** Compare-and-set on `version` with the columns themselves. */
  async updateInstanceColumns(instanceId: number, expectedVersion: number, patch: InstanceUpdate) {
    const columns = (Object.keys(patch) as (keyof InstanceUpdate)[]).filter((c) => patch[c] !== undefined && c !== 'version');
    const parameters = [...columns.map((c) => patch[c]), expectedVersion + 1, instanceId, expectedVersion];
    const query = this.templates.bind(`update:${columns.join(',')}`, parameters, (p) =>
      this.db
        .updateTable('instances')
        .set({ ...Object.fromEntries(columns.map((c, i) => [c, p[i]])), version: p[columns.length] as number })
        .where('instance_id', '=', p[columns.length + 1] as number)
        .where('version', '=', p[columns.length + 2] as number)
        .compile(),
    );
    const result = await this.db.executeQuery(query);
    return Number(result.numAffectedRows) === 1;
  }

  async listInstances(query: InstanceListQuery): Promise<InstanceListEntry[]> {
    return (await this.listInstanceRows(query)).map(listEntryOf);
  }

  private async listInstanceRows(query: InstanceListQuery): Promise<InstanceSummaryRow[]> {
    const gpus = sql<string | null>`case when temperature_celsius is null then gpus_json end`.as('gpus_json_if_no_temperature');
    const q = this.db.selectFrom('instances').select(SUMMARY_COLUMNS).select(gpus).where(listFilter(query)).limit(query.limit);
    const order = query.order ?? { key: 'instance_id', descending: false };
    const direction = order.descending ? 'desc' : 'asc';
    const beyond = order.descending ? '<' : '>';
    if (order.key === 'instance_id') {
      // The default order walks an index ((owner, [status,] instance_id) or the primary key) from the cursor.
      const after = query.after?.instanceId ?? query.afterInstanceId;
      return (after === undefined ? q : q.where('instance_id', beyond, after)).orderBy('instance_id', direction).execute();
    }
    const key = ORDER_KEY_SQL[order.key];
    let keyed = q.select(key.as('sort_key'));
    const after = query.after;
    if (after !== undefined) {
      // Past the cursor: further along the key, or the same key and further along the id, or (unknown
      // keys come last) any unknown key; from an unknown key, only unknown keys further along the id.
      keyed = keyed.where((eb) =>
        after.value === null
          ? eb.and([eb(key, 'is', null), eb('instance_id', beyond, after.instanceId)])
          : eb.or([
              eb(key, beyond, after.value),
              eb.and([eb(key, '=', after.value), eb('instance_id', beyond, after.instanceId)]),
              eb(key, 'is', null),
            ]),
      );
    }
    return keyed
      .orderBy(key, (ob) => (order.descending ? ob.desc() : ob.asc()).nullsLast())
      .orderBy('instance_id', direction)
      .execute();
  }

  async countInstances(query: InstanceFilter) {
    const row = await this.db
      .selectFrom('instances')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where(listFilter(query, 'in'))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async setLabels(instanceId: number, labels: Readonly<Labels>) {
    await this.db.deleteFrom('instance_labels').where('instance_id', '=', instanceId).execute();
    const rows = Object.entries(labels).map(([key, value]) => ({ instance_id: instanceId, key, value }));
    if (rows.length > 0) await this.db.insertInto('instance_labels').values(rows).execute();
    await this.db.updateTable('instances').set({ labels_json: JSON.stringify(labels) }).where('instance_id', '=', instanceId).execute();
  }

  async listPolicies() {
    const rows = await this.db.selectFrom('policies').selectAll().orderBy('priority', 'desc').execute();
    return rows.map((row) => ({
      name: row.name,
      priority: Number(row.priority),
      spec: JSON.parse(row.spec_json) as PolicySpec,
      createdAt: Number(row.created_at),
      updatedAt: Number(row.updated_at),
      updatedBy: row.updated_by,
    }));
  }

  async putPolicy(policy: StoredPolicy) {
    const row = {
      name: policy.name,
      priority: policy.priority,
      spec_json: JSON.stringify(policy.spec),
      created_at: policy.createdAt,
      updated_at: policy.updatedAt,
      updated_by: policy.updatedBy,
    };
    // An insert that loses a race for the name waits for the winner's commit, then finds it and
    // replaces it: exactly one writer creates.
    const inserted = await this.db.insertInto('policies').values(row).onConflict((oc) => oc.column('name').doNothing()).returning('name').executeTakeFirst();
    if (inserted) return true;
    await this.db
      .updateTable('policies')
      .set({ priority: row.priority, spec_json: row.spec_json, updated_at: row.updated_at, updated_by: row.updated_by })
      .where('name', '=', row.name)
      .execute();
    return false;
  }

  async deletePolicy(name: string) {
    const result = await this.db.deleteFrom('policies').where('name', '=', name).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async labelsOf(instanceIds: readonly number[]) {
    const labels = new Map<number, Labels>();
    for (let i = 0; i < instanceIds.length; i += 500) {
      const rows = await this.db
        .selectFrom('instance_labels')
        .select(['instance_id', 'key', 'value'])
        .where('instance_id', 'in', instanceIds.slice(i, i + 500))
        .orderBy('instance_id')
        .orderBy('key')
        .execute();
      for (const row of rows) {
        let own = labels.get(row.instance_id);
        if (!own) labels.set(row.instance_id, (own = {}));
        own[row.key] = row.value;
      }
    }
    return labels;
  }

  async countInstancesByStatus(owner: string | null) {
    let q = this.db
      .selectFrom('instance_counts')
      .select(['status', (eb) => eb.fn.sum<number>('n').as('n')])
      .groupBy('status');
    if (owner !== null) q = q.where('owner', '=', owner);
    const rows = await q.execute();
    return new Map(rows.map((r) => [r.status, Number(r.n)] as const).filter(([, n]) => n !== 0));
  }

  async dueInstanceIds(now: number, limit: number) {
    const rows = await this.db
      .selectFrom('instances')
      .select('instance_id')
      .where('deadline', 'is not', null)
      .where('deadline', '<=', now)
      .orderBy('deadline')
      .limit(limit)
      .execute();
    return rows.map((r) => r.instance_id);
  }

  async countOfflineSince(since: number) {
    // Matches the partial index instances_recently_offline (offline rows only).
    const row = await this.db
      .selectFrom('instances')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where(sql<boolean>`status = 'offline'`)
      .where('offline_since', '>=', since)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async insertEvents(events: readonly InstanceEvent[]) {
    if (events.length > 0) await this.db.insertInto('events').values(events.map(eventColumns)).execute();
  }

  async listEvents(instanceId: number, beforeId: number | undefined, limit: number) {
    let q = this.db.selectFrom('events').selectAll().where('instance_id', '=', instanceId);
    if (beforeId !== undefined) q = q.where('id', '<', beforeId);
    return (await q.orderBy('id', 'desc').limit(limit).execute()).map(storedEventOf);
  }

  async insertCommand(command: AgentCommand) {
    await this.db.insertInto('commands').values(commandColumns(command)).execute();
  }

  async openCommands(instanceId: number) {
    const rows = await this.db
      .selectFrom('commands')
      .selectAll()
      .where('instance_id', '=', instanceId)
      .where('state', 'in', ['pending', 'delivered'])
      .orderBy('issued_at')
      .orderBy('id')
      .execute();
    return rows.map(commandOf);
  }

  async listCommands(instanceId: number, limit: number) {
    const rows = await this.db
      .selectFrom('commands')
      .selectAll()
      .where('instance_id', '=', instanceId)
      .orderBy('issued_at', 'desc')
      .orderBy('id', 'desc')
      .limit(limit)
      .execute();
    return rows.map(commandOf);
  }

  async getCommand(commandId: string) {
    const row = await this.db.selectFrom('commands').selectAll().where('id', '=', commandId).executeTakeFirst();
    return row && commandOf(row);
  }

  async findCommandByIdempotencyKey(instanceId: number, idempotencyKey: string) {
    const row = await this.db
      .selectFrom('commands')
      .selectAll()
      .where('instance_id', '=', instanceId)
      .where('idempotency_key', '=', idempotencyKey)
      .executeTakeFirst();
    return row && commandOf(row);
  }

  async updateCommand(commandId: string, fromStates: readonly CommandState[], change: CommandChange) {
    const result = await this.db
      .updateTable('commands')
      .set(commandChangeColumns(change))
      .where('id', '=', commandId)
      .where('state', 'in', fromStates)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async insertOutbox(rows: OutboxRow[]) {
    if (rows.length > 0) await this.db.insertInto('outbox').values(rows).execute();
  }

  async claimOutbox(now: number, claimer: string, claimedUntil: number, limit: number, target: OutboxTarget) {
    // `state = 'pending'` as a literal: it is the predicate of the partial index outbox_due.
    let due = this.db
      .selectFrom('outbox')
      .select('id')
      .where(sql<boolean>`state = 'pending'`)
      .where('due_at', '<=', now)
      .where((eb) => eb.or([eb('claimed_until', 'is', null), eb('claimed_until', '<=', now)]))
      .where('cancel_requested', '=', 0)
      .orderBy('due_at')
      .limit(limit);
    if ('is' in target) due = due.where('target', '=', target.is);
    else if (target.notIn.length > 0) due = due.where('target', 'not in', target.notIn);
    if (this.rowLocks) due = due.forUpdate().skipLocked();
    const ids = (await due.execute()).map((r) => r.id);
    if (ids.length === 0) return [];
    const claimed = await this.db
      .updateTable('outbox')
      .set({ claimed_by: claimer, claimed_until: claimedUntil, attempts: sql<number>`attempts + 1` })
      .where('id', 'in', ids)
      .returningAll()
      .execute();
    // RETURNING follows no order: oldest first, as claimed.
    return claimed.sort((a, b) => a.due_at - b.due_at || a.id.localeCompare(b.id));
  }

  async closeAbandonedWithdrawals(now: number) {
    await this.db
      .updateTable('outbox')
      .set({ state: 'cancelled', completed_at: now, claimed_by: null, claimed_until: null })
      .where(sql<boolean>`state = 'pending'`)
      .where('cancel_requested', '=', 1)
      .where('claimed_until', '<=', now)
      .execute();
  }

  async finishOutbox(id: string, claimer: string, patch: Partial<OutboxRow>) {
    const result = await this.db
      .updateTable('outbox')
      .set(patch)
      .where('id', '=', id)
      .where('claimed_by', '=', claimer)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async cancelOutbox(instanceId: number, kind: string, now: number) {
    const pending = this.db
      .updateTable('outbox')
      .where('instance_id', '=', instanceId)
      .where('kind', '=', kind)
      .where(sql<boolean>`state = 'pending'`);
    const cancelled = await pending
      .set({ state: 'cancelled', completed_at: now, claimed_by: null, claimed_until: null })
      .where((eb) => eb.or([eb('claimed_until', 'is', null), eb('claimed_until', '<=', now)]))
      .executeTakeFirst();
    const flagged = await pending.set({ cancel_requested: 1 }).where('claimed_until', '>', now).executeTakeFirst();
    return { cancelled: Number(cancelled.numUpdatedRows), inFlight: Number(flagged.numUpdatedRows) };
  }

  async listOutbox(instanceId: number) {
    return this.db.selectFrom('outbox').selectAll().where('instance_id', '=', instanceId).orderBy('created_at').orderBy('id').execute();
  }

  async getOutbox(id: string) {
    return this.db.selectFrom('outbox').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async insertSavings(row: NewSavingsRow) {
    await this.db.insertInto('savings').values(row).execute();
  }

  async listSavings(query: SavingsQuery) {
    let q = this.db.selectFrom('savings').selectAll().where('ended_at', '>', query.from).where('started_at', '<', query.to);
    if (query.owner !== null) q = q.where('owner', '=', query.owner);
    if (query.instanceId !== undefined) q = q.where('instance_id', '=', query.instanceId);
    if (query.labels !== undefined && query.labels.length > 0) {
      // Labels are the instance's current owner's: an owner's past savings on an instance that has
      // since changed hands must not answer questions about the new owner's labels.
      if (query.owner !== null) q = q.where('instance_id', 'in', (eb) => eb.selectFrom('instances').select('instance_id').where('owner', '=', query.owner));
      for (const condition of labelConditions(query.labels, 'savings.instance_id')) q = q.where(condition);
    }
    return q.orderBy('id').execute();
  }

  async listOpenSavings(query: Omit<SavingsQuery, 'from' | 'to'>) {
    let q = this.db
      .selectFrom('instances')
      .select(['instance_id', 'owner', 'hostname', 'status', 'saving_since', 'gpu_count', 'price_per_hour'])
      .where('saving_since', 'is not', null);
    if (query.owner !== null) q = q.where('owner', '=', query.owner);
    if (query.instanceId !== undefined) q = q.where('instance_id', '=', query.instanceId);
    for (const condition of labelConditions(query.labels, 'instances.instance_id')) q = q.where(condition);
    return q.orderBy('instance_id').execute();
  }

  async listGpuReadings(afterInstanceId: number | undefined, limit: number) {
    let q = this.db
      .selectFrom('instances')
      .select([
        'instance_id',
        'hostname',
        'status',
        'scheduled_at',
        'gpu_count',
        'gpus_json',
        'utilization_percent',
        'memory_used_mb',
        'memory_total_mb',
        'temperature_celsius',
        'power_watts',
      ]);
    if (afterInstanceId !== undefined) q = q.where('instance_id', '>', afterInstanceId);
    return (await q.orderBy('instance_id').limit(limit).execute()).map(gpuReadingsOf);
  }

  async instancesKnownToProviderAs(providerInstanceId: string) {
    const asInstanceId = /^[1-9][0-9]{0,15}$/.test(providerInstanceId) ? Number(providerInstanceId) : null;
    const rows = await this.db
      .selectFrom('instances')
      .select('instance_id')
      .where((eb) =>
        eb.or([
          eb('provider_instance_id', '=', providerInstanceId),
          ...(asInstanceId !== null && Number.isSafeInteger(asInstanceId) ? [eb.and([eb('provider_instance_id', 'is', null), eb('instance_id', '=', asInstanceId)])] : []),
        ]),
      )
      .limit(10)
      .execute();
    return rows.map((r) => Number(r.instance_id));
  }

  async hostnamesOf(instanceIds: readonly number[]) {
    const names = new Map<number, string | null>();
    for (let i = 0; i < instanceIds.length; i += 500) {
      const rows = await this.db
        .selectFrom('instances')
        .select(['instance_id', 'hostname'])
        .where('instance_id', 'in', instanceIds.slice(i, i + 500))
        .execute();
      for (const row of rows) names.set(row.instance_id, row.hostname);
    }
    return names;
  }

  async findApiKey(keyHash: string) {
    return this.db.selectFrom('api_keys').selectAll().where('key_hash', '=', keyHash).executeTakeFirst();
  }

  async insertApiKey(row: ApiKeyRow) {
    await this.db.insertInto('api_keys').values(row).execute();
  }

  async countAdminKeys() {
    const row = await this.db
      .selectFrom('api_keys')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('is_admin', '=', 1)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }
}
