import pg from 'pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { KyselyRepository } from './kysely-repository.js';
import { migrateToLatest } from './migrate.js';
import { columnsOf } from './instance-mapping.js';
import { PostgresBeatBatches, pooledStatements } from './postgres-beat-batch.js';
import type { Database } from './schema.js';
import type { Durability, FleetRepository, FleetStore, InstanceChange, LifecycleRow } from './store.js';

const INT8_OID = 20;

/**
 * PostgreSQL, rows locked FOR UPDATE. With `transitions` durability the sessions run with
 * synchronous_commit=off (a commit survives a crash of the process, not of PostgreSQL's machine, like
 * SQLite's default), and a transaction that needs more turns it back on for itself.
 */
export class PostgresStore extends KyselyRepository implements FleetStore {
  readonly dialect = 'postgres' as const;
  readonly optimisticPlainBeats = true;

  /** The plain heartbeat's unlocked reads and writes, shared among the beats of one turn. */
  private readonly beats: PostgresBeatBatches;

  private constructor(
    readonly kysely: Kysely<Database>,
    private readonly pool: pg.Pool,
  ) {
    super(kysely, true);
    this.beats = new PostgresBeatBatches(pooledStatements(this.pool), (id, expected, patch) =>
      this.updateInstanceColumns(id, expected, patch),
    );
  }

  /** `schema`, when given, is created if missing and used as the search path (tests isolate runs so). */
  static async open(
    connectionString: string,
    options: { schema?: string; poolSize?: number; durability?: Durability } = {},
  ): Promise<PostgresStore> {
    if (options.schema !== undefined && !/^[a-z_][a-z0-9_]*$/.test(options.schema)) {
      throw new Error(`invalid schema name: ${options.schema}`);
    }
    const pool = new pg.Pool({
      connectionString,
      max: options.poolSize ?? 10,
      ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
      // Times are epoch milliseconds in bigint columns: well inside Number's safe range.
      types: {
        getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
          oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
      },
    });
    if ((options.durability ?? 'transitions') === 'transitions') {
      // Queued on the new connection before anything the pool hands it out for.
      pool.on('connect', (client) => void client.query('set synchronous_commit = off').catch(() => {}));
    }
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    if (options.schema) await sql`create schema if not exists ${sql.id(options.schema)}`.execute(kysely);
    let schema = options.schema;
    if (schema === undefined) {
      const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(kysely);
      if (!rows[0]?.schema) throw new Error('PostgreSQL: the search_path names no existing schema; create it first');
      schema = rows[0].schema;
    }
    await migrateToLatest(kysely, 'postgres', schema);
    return new PostgresStore(kysely, pool);
  }

  transaction<T>(work: (repo: FleetRepository) => Promise<T>): Promise<T> {
    return this.kysely.transaction().execute((trx) =>
      work(
        new KyselyRepository(trx, true, this.templates, async () => {
          await sql`set local synchronous_commit = on`.execute(trx);
        }),
      ),
    );
  }

  /**
   * Unlocked reads on the store itself (committed state) share one statement per turn: each caller
   * asked before that statement ran, so it still sees every commit made before it asked. Locked reads
   * and every read in a transaction are one row each, as before.
   */
  protected override getLifecycleRow(instanceId: number, options?: { forUpdate?: boolean }): Promise<LifecycleRow | undefined> {
    return options?.forUpdate ? super.getLifecycleRow(instanceId, options) : this.beats.read(instanceId);
  }

  /**
   * The turn's plain beats share one autocommit UPDATE, a compare-and-set per row
   * (postgres-beat-batch.ts); synchronous_commit as the session has it.
   */
  writePlainBeat(instanceId: number, expectedVersion: number, change: InstanceChange): Promise<boolean> {
    return this.beats.write(instanceId, expectedVersion, columnsOf(change));
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.kysely);
  }

  async close(): Promise<void> {
    await this.beats.drain();
    await this.kysely.destroy();
  }
}
