import { closeSync, fdatasync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, SqliteDialect, sql, type SqliteDatabase, type SqliteStatement } from 'kysely';
import { GroupCommit } from './group-commit.js';
import { KyselyRepository } from './kysely-repository.js';
import { migrateToLatest } from './migrate.js';
import type { Database, InstanceUpdate } from './schema.js';
import { LIFECYCLE_COLUMNS, type Durability, type FleetRepository, type FleetStore, type LifecycleRow } from './store.js';

const STATEMENT_CACHE_SIZE = 256;

/**
 * Kysely prepares every query anew; preparing costs more than running a point query. The store's
 * queries come in a few dozen shapes, so their statements are kept (least recently used out).
 */
function withStatementCache(db: SQLite.Database): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    close: () => db.close(),
    prepare(text: string) {
      let statement = cache.get(text);
      if (statement) {
        cache.delete(text);
      } else {
        statement = db.prepare(text) as unknown as SqliteStatement;
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
      }
      cache.set(text, statement);
      return statement;
    },
  };
}

/**
 * Embedded SQLite in WAL mode with synchronous=NORMAL: a commit survives a crash of the process at
 * once. A transaction that asks for a durable commit is answered after an fdatasync of the WAL (what
 * synchronous=FULL does at every commit), shared by the whole group commit it belonged to.
 */
export class SqliteStore extends KyselyRepository implements FleetStore {
  readonly dialect = 'sqlite' as const;
  readonly optimisticPlainBeats = false;
  private walFd: number | null = null;
  private readonly groupCommit: GroupCommit;
  /** fdatasyncs of the WAL so far (each covers a whole group commit). */
  walSyncs = 0;

  private constructor(
    readonly kysely: Kysely<Database>,
    durability: Durability,
    private readonly sqlite: SQLite.Database,
    private readonly statements: SqliteDatabase,
  ) {
    super(kysely, false);
    this.groupCommit = new GroupCommit(kysely, () => this.syncWal(), durability === 'always', () => sqlite.inTransaction);
  }

  /**
   * The plain beat's unlocked read, on the one connection. Outside a transaction it runs at once and
   * sees committed rows only. While a group commit is open (between its BEGIN and COMMIT, which a read
   * can fall into: both are promise chains) it goes through Kysely, which lends the connection to one
   * user at a time and so waits for the batch to end. Either way it never sees uncommitted writes.
   */
  override async getLifecycle(instanceId: number, options?: { forUpdate?: boolean }) {
    if (this.sqlite.inTransaction) return super.getLifecycle(instanceId, options);
    const query = this.templates.bind('lifecycle', [instanceId], ([id]) =>
      this.kysely.selectFrom('instances').select(LIFECYCLE_COLUMNS).where('instance_id', '=', id as number).compile(),
    );
    const rows = this.statements.prepare(query.sql).all(query.parameters) as LifecycleRow[];
    return rows[0];
  }

  static async open(file: string, options: { durability?: Durability } = {}): Promise<SqliteStore> {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    const statements = withStatementCache(sqlite);
    const kysely = new Kysely<Database>({ dialect: new SqliteDialect({ database: statements }) });
    const store = new SqliteStore(kysely, options.durability ?? 'transitions', sqlite, statements);
    await migrateToLatest(kysely, 'sqlite');
    if (file !== ':memory:') store.walFd = openSync(`${file}-wal`, 'r');
    return store;
  }

  transaction<T>(work: (repo: FleetRepository) => Promise<T>): Promise<T> {
    return this.groupCommit.run(({ db, requireDurable }) =>
      work(new KyselyRepository(db, false, this.templates, async () => requireDurable())),
    );
  }

  /**
   * One UPDATE in the next group commit, next to the transactions of that batch: no savepoint, no
   * repository. The caller's unlocked read (`getLifecycle` above) saw committed rows only, so
   * `expectedVersion` is a committed version; every write bumps it and versions only grow, so the
   * compare-and-set fails whenever anything wrote the row since the read — committed before this batch
   * or earlier in it. (Had the read seen a write that later rolled back, a later write could reach the
   * same version number with other facts; that is why the read must not.)
   */
  async writePlainBeat(instanceId: number, expectedVersion: number, patch: InstanceUpdate): Promise<boolean> {
    const result = await this.groupCommit.runStatement(this.instanceUpdateQuery(instanceId, expectedVersion, patch));
    return Number(result.numAffectedRows) === 1;
  }

  private syncWal(): Promise<void> {
    const fd = this.walFd;
    if (fd === null) return Promise.resolve();
    this.walSyncs += 1;
    return new Promise((resolve, reject) => fdatasync(fd, (error) => (error ? reject(error) : resolve())));
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.kysely);
  }

  async close(): Promise<void> {
    if (this.walFd !== null) closeSync(this.walFd);
    this.walFd = null;
    await this.kysely.destroy();
  }
}
