import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { InstancesTable, InstanceUpdate } from './schema.js';
import { LIFECYCLE_COLUMNS, type LifecycleRow } from './store.js';

/**
 * PostgreSQL: the plain heartbeat's unlocked read and compare-and-set write, shared by every beat that
 * arrives in the same turn of the event loop. At thousands of beats a second one statement per beat
 * costs a pooled connection and a round trip each; one statement for the turn's beats costs one.
 */

/** Rows in one statement at most: larger turns are cut into several (each a statement). */
export const BEAT_BATCH_CAP = 500;

type PgType = 'bigint' | 'integer' | 'double precision' | 'text';

/**
 * The type of each column a patch may set (migrations.ts). The rows travel as one array parameter per
 * column, and an array parameter needs its type spelled out: PostgreSQL cannot infer it from the use.
 * Typed over the whole table, so a column added to schema.ts fails to compile until it is listed.
 */
const COLUMN_TYPES: Record<Exclude<keyof InstancesTable, 'instance_id' | 'version'>, PgType> = {
  owner: 'text',
  agent_token_hash: 'text',
  hostname: 'text',
  registered_at: 'bigint',
  status: 'text',
  last_heartbeat_at: 'bigint',
  online_since: 'bigint',
  idle_since: 'bigint',
  scheduled_at: 'bigint',
  postponed_until: 'bigint',
  hibernate_issued_at: 'bigint',
  hibernate_command_id: 'text',
  offline_since: 'bigint',
  deadline: 'bigint',
  hibernation_enabled: 'integer',
  threshold_minutes: 'double precision',
  ignore_gpu_processes: 'integer',
  heartbeat_count: 'bigint',
  agent_timestamp: 'text',
  agent_timestamp_ms: 'bigint',
  utilization_percent: 'double precision',
  memory_used_mb: 'double precision',
  memory_total_mb: 'double precision',
  temperature_celsius: 'double precision',
  power_watts: 'double precision',
  gpus_json: 'text',
  gpu_count: 'integer',
  process_count: 'integer',
  active_users: 'integer',
  last_activity: 'text',
  agent_version: 'text',
  collector_errors_json: 'text',
  open_commands: 'integer',
  provider: 'text',
  provider_instance_id: 'text',
  price_per_hour: 'double precision',
  dry_run: 'integer',
  provider_state: 'text',
  provider_error: 'text',
  provider_updated_at: 'bigint',
  wake_requested_at: 'bigint',
  saving_since: 'bigint',
  threshold_set_by_admin: 'integer',
  enabled_set_by_admin: 'integer',
  dry_run_set_by_admin: 'integer',
  labels_json: 'text',
};
const isPatchable = (column: string): column is keyof typeof COLUMN_TYPES => Object.hasOwn(COLUMN_TYPES, column);

/**
 * Collects the calls of one turn per key and hands each key's calls to `run` together: on the next
 * setImmediate, or at once when a key reaches the cap. Each caller gets its own entry of the result
 * (a promise there settles that caller alone); a rejected `run` rejects every caller of its batch.
 */
class TurnBatcher<T, R> {
  private readonly open = new Map<string, { item: T; resolve: (r: R | Promise<R>) => void; reject: (e: unknown) => void }[]>();
  private readonly inFlight = new Set<Promise<void>>();
  private scheduled = false;

  constructor(private readonly run: (key: string, items: T[]) => Promise<(R | Promise<R>)[]>) {}

  add(key: string, item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      let batch = this.open.get(key);
      if (!batch) this.open.set(key, (batch = []));
      batch.push({ item, resolve, reject });
      if (batch.length >= BEAT_BATCH_CAP) this.send(key);
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Sends what is waiting and resolves when every batch sent so far is answered (before closing the pool). */
  async drain(): Promise<void> {
    this.flush();
    await Promise.all(this.inFlight);
  }

  private flush(): void {
    this.scheduled = false;
    for (const key of [...this.open.keys()]) this.send(key);
  }

  private send(key: string): void {
    const batch = this.open.get(key)!;
    this.open.delete(key);
    const sent = this.run(key, batch.map((b) => b.item)).then(
      (results) => batch.forEach((b, i) => b.resolve(results[i]!)),
      (error: unknown) => batch.forEach((b) => b.reject(error)),
    );
    this.inFlight.add(sent);
    void sent.finally(() => this.inFlight.delete(sent));
  }
}

interface PlainWrite {
  instanceId: number;
  expectedVersion: number;
  patch: InstanceUpdate;
}

type Column = keyof typeof COLUMN_TYPES;

/**
 * Columns an `update of` trigger watches (the status counters, migrations.ts). Naming one in a SET
 * list fires the trigger even for a row whose value stays, so a patch that sets one is batched only
 * with patches of exactly its columns.
 */
const TRIGGER_COLUMNS: ReadonlySet<string> = new Set<Column>(['status', 'owner']);

/** What the batches run on: the store's pool (a statement there takes any free connection). */
type Queryable = Pick<pg.Pool, 'query'>;

/**
 * The pool's `query`, with the connection taken before the statement is sent, as Kysely does: on a new
 * connection the store queues `set synchronous_commit` first, and pg deprecates queuing a second query
 * behind it (`pool.query` would, on a connection it has just opened).
 */
export function pooledStatements(pool: pg.Pool): Queryable {
  return {
    query: (async (config: pg.QueryConfig) => {
      const client = await pool.connect();
      try {
        const result = await client.query(config);
        client.release();
        return result;
      } catch (error) {
        // As pg's own pool.query: a connection that failed a statement is not handed out again.
        client.release(error as Error);
        throw error;
      }
    }) as Queryable['query'],
  };
}

const MAX_STATEMENTS = 64;

/** A named statement per SQL text: pg prepares it once per connection, later runs send only parameters. */
function named(text: string): { name: string; text: string } {
  return { name: `dumont_beat_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`, text };
}

const LIFECYCLE_BY_IDS = named(
  `select ${LIFECYCLE_COLUMNS.map((c) => `"${c}"`).join(', ')} from "instances" where "instance_id" = any($1::bigint[])`,
);

export class PostgresBeatBatches {
  /** SQL per (columns, columns only some rows set); bounded, as a patch's columns are the caller's to choose. */
  private readonly statements = new Map<string, { name: string; text: string }>();
  private readonly writes = new TurnBatcher<PlainWrite, boolean>((_, items) => this.runWrites(items));
  private readonly reads = new TurnBatcher<number, LifecycleRow | undefined>((_, ids) => this.runReads(ids));

  constructor(
    private readonly pool: Queryable,
    /** The one-row compare-and-set: for a patch no batch can carry, and for each row of a batch that failed. */
    private readonly updateOne: (instanceId: number, expectedVersion: number, patch: InstanceUpdate) => Promise<boolean>,
  ) {}

  /**
   * The compare-and-set of `updateInstance`, batched with the turn's other writes. Patches differ in
   * their columns (the deadline moves every other beat, the hostname when it changed), so a batch
   * sets the union of its rows' columns, and a column only some rows set is kept as it is in the
   * others (`case when`): one statement per turn, where one per column set measured a third slower
   * (the turn's beats split into two or three statements). A kept value costs no index write of its
   * own: PostgreSQL decides whether an update touches the indexes by the values that changed, not by
   * the SET list.
   */
  write(instanceId: number, expectedVersion: number, patch: InstanceUpdate): Promise<boolean> {
    const columns = (Object.keys(patch) as (keyof InstanceUpdate)[]).filter((c) => patch[c] !== undefined && c !== 'version');
    if (!columns.every(isPatchable)) return this.updateOne(instanceId, expectedVersion, patch);
    const key = columns.some((c) => TRIGGER_COLUMNS.has(c)) ? columns.sort().join(',') : '*';
    return this.writes.add(key, { instanceId, expectedVersion, patch });
  }

  /** An unlocked read of committed state, batched with the turn's other such reads. */
  read(instanceId: number): Promise<LifecycleRow | undefined> {
    return this.reads.add('', instanceId);
  }

  drain(): Promise<void> {
    return Promise.all([this.writes.drain(), this.reads.drain()]).then(() => {});
  }

  /**
   * `unnest` of one array per column: the SQL text depends on the columns, not on the batch size, so
   * it is prepared once. Rows are sent in instance id order, so concurrent batches (other replicas)
   * lock shared rows in the same order. RETURNING names the position of the row that was written,
   * not its instance: two writes of one instance in a batch share one target row, which PostgreSQL
   * updates once, so only the write it took may answer true; the other goes the locked way.
   */
  private async runWrites(items: PlainWrite[]): Promise<(boolean | Promise<boolean>)[]> {
    const setBy = new Map<Column, number>();
    for (const { patch } of items) {
      for (const c of Object.keys(patch) as Column[]) if (patch[c] !== undefined && isPatchable(c)) setBy.set(c, (setBy.get(c) ?? 0) + 1);
    }
    const columns = [...setBy.keys()].sort();
    const partial = columns.filter((c) => setBy.get(c)! < items.length);
    const order = items.map((_, i) => i).sort((a, b) => items[a]!.instanceId - items[b]!.instanceId);
    const values = [
      order.map((i) => items[i]!.instanceId),
      order.map((i) => items[i]!.expectedVersion),
      ...columns.map((c) => order.map((i) => items[i]!.patch[c] ?? null)),
      ...partial.map((c) => order.map((i) => items[i]!.patch[c] !== undefined)),
    ];
    try {
      const { rows } = await this.pool.query<{ position: number }>({ ...this.updateStatement(columns, partial), values });
      const written = new Set(rows.map((r) => Number(r.position) - 1));
      const results: boolean[] = new Array(items.length);
      order.forEach((item, position) => (results[item] = written.has(position)));
      return results;
    } catch {
      // The statement wrote nothing (it is atomic): each row alone, so that a row PostgreSQL refuses
      // fails its own beat only. Had it committed unseen (a lost connection), each version has moved
      // and each compare-and-set answers false: the beats are redone under the lock, not twice.
      return items.map((w) => this.updateOne(w.instanceId, w.expectedVersion, w.patch));
    }
  }

  private updateStatement(columns: readonly Column[], partial: readonly Column[]) {
    const key = `${columns.join(',')}|${partial.join(',')}`;
    let statement = this.statements.get(key);
    if (!statement) {
      const arrays = [
        '$1::bigint[]',
        '$2::bigint[]',
        ...columns.map((c, i) => `$${i + 3}::${COLUMN_TYPES[c]}[]`),
        ...partial.map((_, i) => `$${columns.length + i + 3}::boolean[]`),
      ];
      const names = ['instance_id', 'expected', ...columns.map((c) => `"${c}"`), ...partial.map((c) => `"${c}?"`), 'position'];
      const sets = [
        ...columns.map((c) => (partial.includes(c) ? `"${c}" = case when v."${c}?" then v."${c}" else i."${c}" end` : `"${c}" = v."${c}"`)),
        '"version" = v.expected + 1',
      ];
      statement = named(
        `update "instances" as i set ${sets.join(', ')} from unnest(${arrays.join(', ')}) with ordinality as v(${names.join(', ')})` +
          ' where i."instance_id" = v.instance_id and i."version" = v.expected returning v.position',
      );
      if (this.statements.size >= MAX_STATEMENTS) this.statements.delete(this.statements.keys().next().value!);
      this.statements.set(key, statement);
    }
    return statement;
  }

  private async runReads(ids: number[]): Promise<(LifecycleRow | undefined)[]> {
    const { rows } = await this.pool.query<LifecycleRow>({ ...LIFECYCLE_BY_IDS, values: [ids] });
    const byId = new Map(rows.map((r) => [Number(r.instance_id), r]));
    const handedOut = new Set<number>();
    return ids.map((id) => {
      const row = byId.get(id);
      if (!row) return undefined;
      // Two reads of one instance get a row each: a caller may change what it was given.
      if (handedOut.has(id)) return { ...row };
      handedOut.add(id);
      return row;
    });
  }
}
