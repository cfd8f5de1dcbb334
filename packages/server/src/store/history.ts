import { sql, type CreateTableBuilder, type Kysely } from 'kysely';

export type HistoryDialect = 'sqlite' | 'postgres';

/** Rollups summarise this much time per row. */
export const ROLLUP_BUCKET_MS = 5 * 60_000;

/** The metrics a sample and a rollup keep; GPU ones first, then the instance's. */
export const GPU_METRICS = ['utilization_percent', 'memory_used_mb', 'temperature_celsius', 'power_watts'] as const;
export const HISTORY_METRICS = [...GPU_METRICS, 'process_count', 'active_users'] as const;
export type HistoryMetric = (typeof HISTORY_METRICS)[number];

/**
 * One GPU of one heartbeat. `gpu_index` -1 holds a beat that reported no GPU at all (its process count
 * and active users are still kept). null = unknown, never zero.
 */
export type HistorySample = { instance_id: number; at: number; gpu_index: number } & Record<HistoryMetric, number | null> & {
  /** The agent's last activity on the server clock (ms); null when none or not recorded. */
  last_activity_at?: number | null;
  /** 1 when a collector failed on this beat (its facts are unknown); null when not recorded. */
  collector_error?: number | null;
};

/** Five minutes of one GPU: how many samples, and each metric's min/avg/max over the non-null ones. */
export type RollupRow = { instance_id: number; bucket_at: number; gpu_index: number; samples: number } & {
  [K in `${HistoryMetric}_${'min' | 'avg' | 'max'}`]: number | null;
} & Partial<Record<RollupFact, number | null>>;

/**
 * What else a policy replay needs of a bucket (migration 0008), so that a replay over rollups is never
 * less cautious than one over the raw beats: the latest last activity, whether any collector failed,
 * how many samples had an unknown utilization or process count (a maximum alone would hide an
 * unknown), the longest silence before a sample of the bucket (ms since the instance's previous
 * sample, a silence that made the server count it offline included), and its first and last sample's
 * time. Null in buckets rolled up before 0008: a replay takes such a bucket as unknown.
 */
export const ROLLUP_FACTS = ['last_activity_at_max', 'collector_error_max', 'utilization_unknown', 'process_count_unknown', 'silence_max', 'first_at', 'last_at'] as const;
export type RollupFact = (typeof ROLLUP_FACTS)[number];

const ROLLUP_VALUE_COLUMNS = [...HISTORY_METRICS.flatMap((m) => [`${m}_min`, `${m}_avg`, `${m}_max`] as const), ...ROLLUP_FACTS];

/** Adds the replay facts to the rollups (migration 0008). */
export async function addRollupFacts(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('metric_rollups').addColumn('last_activity_at_max', 'bigint').execute();
  await db.schema.alterTable('metric_rollups').addColumn('collector_error_max', 'integer').execute();
  await db.schema.alterTable('metric_rollups').addColumn('utilization_unknown', 'integer').execute();
  await db.schema.alterTable('metric_rollups').addColumn('process_count_unknown', 'integer').execute();
  await db.schema.alterTable('metric_rollups').addColumn('silence_max', 'bigint').execute();
  await db.schema.alterTable('metric_rollups').addColumn('first_at', 'bigint').execute();
  await db.schema.alterTable('metric_rollups').addColumn('last_at', 'bigint').execute();
}

/**
 * Samples per multi-row INSERT: 9 parameters each stay under SQLite's 32,766 and PostgreSQL's 65,535
 * bound parameters.
 */
export const MAX_ROWS_PER_INSERT = 2000;

/** Instances rolled up per statement (a few hundred milliseconds at most on SQLite; see `rollUp`). */
export const ROLLUP_INSTANCES_PER_STATEMENT = 1000;

/**
 * The history tables (migration `0004_metrics_history`). Keyed instance first, then time, so a read of
 * one instance's range, its pruning and its rollup are each one range of the key. No foreign key: a
 * sample insert must not look up the instance. SQLite stores them WITHOUT ROWID (the key is the
 * table: no second b-tree). `if not exists`: tests may create them on a store migrated before 0004.
 */
export async function createHistoryTables(db: Kysely<any>, dialect: HistoryDialect): Promise<void> {
  const noRowid = (builder: CreateTableBuilder<any, any>) => (dialect === 'sqlite' ? builder.modifyEnd(sql`without rowid`) : builder);
  let samples: CreateTableBuilder<any, any> = db.schema
    .createTable('metric_samples')
    .ifNotExists()
    .addColumn('instance_id', 'bigint', (c) => c.notNull())
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addColumn('gpu_index', 'integer', (c) => c.notNull());
  for (const metric of GPU_METRICS) samples = samples.addColumn(metric, 'double precision');
  samples = samples
    .addColumn('process_count', 'integer')
    .addColumn('active_users', 'integer')
    .addPrimaryKeyConstraint('metric_samples_pk', ['instance_id', 'at', 'gpu_index']);
  await noRowid(samples).execute();

  let rollups: CreateTableBuilder<any, any> = db.schema
    .createTable('metric_rollups')
    .ifNotExists()
    .addColumn('instance_id', 'bigint', (c) => c.notNull())
    .addColumn('bucket_at', 'bigint', (c) => c.notNull())
    .addColumn('gpu_index', 'integer', (c) => c.notNull())
    .addColumn('samples', 'integer', (c) => c.notNull());
  for (const metric of HISTORY_METRICS) {
    for (const column of [`${metric}_min`, `${metric}_avg`, `${metric}_max`]) rollups = rollups.addColumn(column, 'double precision');
  }
  rollups = rollups.addPrimaryKeyConstraint('metric_rollups_pk', ['instance_id', 'bucket_at', 'gpu_index']);
  await noRowid(rollups).execute();
}

/** Every query of the metrics history, written once for both engines. */
export class HistoryStore {
  constructor(
    private readonly db: Kysely<any>,
    readonly dialect: HistoryDialect,
  ) {}

  /**
   * Appends samples, MAX_ROWS_PER_INSERT per statement. A sample already stored (same instance, time
   * and GPU: a beat retried within the same millisecond) is kept as it was.
   */
  async insertSamples(rows: readonly HistorySample[]): Promise<void> {
    for (let start = 0; start < rows.length; start += MAX_ROWS_PER_INSERT) {
      await this.db
        .insertInto('metric_samples')
        .values(rows.slice(start, start + MAX_ROWS_PER_INSERT))
        .onConflict((oc) => oc.columns(['instance_id', 'at', 'gpu_index']).doNothing())
        .execute();
    }
  }

  /**
   * (Re)computes the rollups of every bucket that starts in [from, to) from the raw samples, so running
   * it twice over the same buckets, or from two replicas, converges on the same rows. A stored rollup is
   * replaced only by one of more samples (a late flush folded in): a bucket whose raw samples were
   * partly pruned, rolled up again after a restart, keeps the rollup made while it was whole. Read through the
   * instances table: each instance's samples are then one range of the key, not a scan of the table.
   * One statement per `instancesPerStatement` instances, with a turn of the event loop between them:
   * on SQLite a statement holds the process, and a large fleet's heartbeats must not wait for all of it.
   */
  async rollUp(from: number, to: number, options: { instancesPerStatement?: number } = {}): Promise<number> {
    const chunk = options.instancesPerStatement ?? ROLLUP_INSTANCES_PER_STATEMENT;
    let after: number | null = null;
    let rows = 0;
    for (;;) {
      let page = this.db.selectFrom('instances').select('instance_id').orderBy('instance_id').limit(chunk);
      if (after !== null) page = page.where('instance_id', '>', after);
      const ids = (await page.execute()).map((r) => Number(r.instance_id));
      if (ids.length === 0) return rows;
      rows += await this.rollUpInstances(from, to, ids[0]!, ids[ids.length - 1]!);
      if (ids.length < chunk) return rows;
      after = ids[ids.length - 1]!;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** `rollUp` of the instances with ids in [firstId, lastId]. */
  private async rollUpInstances(from: number, to: number, firstId: number, lastId: number): Promise<number> {
    const bucket = sql.raw(String(ROLLUP_BUCKET_MS));
    const aggregates = [
      ...HISTORY_METRICS.map((m) => sql`min(s.${sql.ref(m)}), cast(avg(s.${sql.ref(m)}) as double precision), max(s.${sql.ref(m)})`),
      sql`max(s.last_activity_at), max(s.collector_error)`,
      sql`sum(case when s.utilization_percent is null then 1 else 0 end), sum(case when s.process_count is null then 1 else 0 end)`,
      sql`max(s.silence), min(s.at), max(s.at)`,
    ];
    const columns = ['instance_id', 'bucket_at', 'gpu_index', 'samples', ...ROLLUP_VALUE_COLUMNS];
    const updates = ['samples', ...ROLLUP_VALUE_COLUMNS].map((c) => sql`${sql.ref(c)} = excluded.${sql.ref(c)}`);
    // Buckets are aligned to the epoch, so [from, to) is widened to whole buckets.
    const start = Math.floor(from / ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS;
    const end = Math.ceil(to / ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS;
    // A sample's silence is the time since the instance's previous sample (rows of one beat share
    // `at`: 0). One bucket before the range is read for it; a sample with none there had a silence of
    // at least that long. The window runs in key order (instance, at, gpu): no sort.
    const lookBack = start - ROLLUP_BUCKET_MS;
    const result = await sql`
      insert into metric_rollups (${sql.join(columns.map((c) => sql.ref(c)))})
      select s.instance_id, (s.at / ${bucket}) * ${bucket}, s.gpu_index, count(*), ${sql.join(aggregates)}
      from (
        select m.*, m.at - coalesce(lag(m.at) over (partition by m.instance_id order by m.at, m.gpu_index), ${lookBack}) as silence
        from instances i join metric_samples m on m.instance_id = i.instance_id
        where i.instance_id >= ${firstId} and i.instance_id <= ${lastId} and m.at >= ${lookBack} and m.at < ${end}
      ) s
      where s.at >= ${start}
      group by 1, 2, 3
      on conflict (instance_id, bucket_at, gpu_index) do update set ${sql.join(updates)}
      where excluded.samples > metric_rollups.samples`.execute(this.db);
    return Number(result.numAffectedRows ?? 0);
  }

  /** Deletes raw samples older than `rawBefore` and rollups older than `rollupsBefore`; answers how many. */
  async prune(rawBefore: number, rollupsBefore: number): Promise<{ samples: number; rollups: number }> {
    // `instance_id in (…)` lets SQLite seek each instance's old range instead of reading the whole table.
    const ids = (eb: any) => eb.selectFrom('instances').select('instance_id');
    const samples = await this.db
      .deleteFrom('metric_samples')
      .where((eb) => eb.and([eb('instance_id', 'in', ids(eb)), eb('at', '<', rawBefore)]))
      .executeTakeFirst();
    const rollups = await this.db
      .deleteFrom('metric_rollups')
      .where((eb) => eb.and([eb('instance_id', 'in', ids(eb)), eb('bucket_at', '<', rollupsBefore)]))
      .executeTakeFirst();
    return { samples: Number(samples.numDeletedRows), rollups: Number(rollups.numDeletedRows) };
  }

  /**
   * One instance's samples with `from <= at <= to`, oldest first: its GPUs' only, or with `beats`
   * also the row of a beat that reported no GPU (`gpu_index` -1), so that every beat is there.
   */
  async samples(instanceId: number, from: number, to: number, options: { beats?: boolean } = {}): Promise<HistorySample[]> {
    return this.db
      .selectFrom('metric_samples')
      .selectAll()
      .where('instance_id', '=', instanceId)
      .where('at', '>=', from)
      .where('at', '<=', to)
      .where('gpu_index', '>=', options.beats ? -1 : 0)
      .orderBy('at')
      .orderBy('gpu_index')
      .execute() as Promise<HistorySample[]>;
  }

  /**
   * One instance's GPU rollups of the buckets that overlap [from, to], oldest first; with `beats` also
   * the rows of beats that reported no GPU (`gpu_index` -1).
   */
  async rollups(instanceId: number, from: number, to: number, options: { beats?: boolean } = {}): Promise<RollupRow[]> {
    return this.db
      .selectFrom('metric_rollups')
      .selectAll()
      .where('instance_id', '=', instanceId)
      .where('bucket_at', '>', from - ROLLUP_BUCKET_MS)
      .where('bucket_at', '<=', to)
      .where('gpu_index', '>=', options.beats ? -1 : 0)
      .orderBy('bucket_at')
      .orderBy('gpu_index')
      .execute() as Promise<RollupRow[]>;
  }
}
