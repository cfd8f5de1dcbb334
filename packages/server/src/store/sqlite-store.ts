import { closeSync, fdatasync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, SqliteDriver, sql, type SqliteDatabase, type SqliteStatement } from 'kysely';
import { GroupCommit } from './group-commit.js';
import { KyselyRepository } from './kysely-repository.js';
import { migrateToLatest } from './migrate.js';
import { openReadOnlyConnection, ReadRoutingDriver, readRoutingDialect } from './sqlite-reader.js';
import type { Database } from './schema.js';
import type { Durability, FleetRepository, FleetStore, InstanceChange } from './store.js';

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
 *
 * Two connections to a database file: the writer, which runs every write, raw statement and
 * transaction in order, and a read-only reader for every SELECT outside a transaction — the store's
 * own reads and those of the modules that use `kysely` (history, sessions). The group commit holds
 * the writer's transaction open while its batch runs; WAL lets the reader see the last commit
 * meanwhile instead of waiting for this one. A transaction has committed before its promise resolves,
 * so a read after it sees it. `:memory:` cannot be opened twice: there, reads share the one connection
 * and wait for the open batch, as everything did before.
 */
export class SqliteStore extends KyselyRepository implements FleetStore {
  readonly dialect = 'sqlite' as const;
  /**
   * No: every beat runs as a member of the group commit. Reading a plain beat on the read-only
   * connection and writing it as one statement was built and measured on a 100k fleet at 3,333 beats/s,
   * and its beats were slower (p99 29–37 ms against 20 ms), list pages too (docs/PERFORMANCE.md).
   */
  readonly optimisticPlainBeats = false;
  private walFd: number | null = null;
  private readonly groupCommit: GroupCommit;
  /** fdatasyncs of the WAL so far (each covers a whole group commit). */
  walSyncs = 0;

  private constructor(
    readonly kysely: Kysely<Database>,
    durability: Durability,
  ) {
    super(kysely, false);
    this.groupCommit = new GroupCommit(kysely, () => this.syncWal(), durability === 'always');
  }

  static async open(file: string, options: { durability?: Durability } = {}): Promise<SqliteStore> {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    const driver = new ReadRoutingDriver(new SqliteDriver({ database: withStatementCache(sqlite) }));
    const kysely = new Kysely<Database>({ dialect: readRoutingDialect(driver) });
    const store = new SqliteStore(kysely, options.durability ?? 'transitions');
    // On the writer alone: the reader opens on a database already in WAL mode with its schema.
    await migrateToLatest(kysely, 'sqlite');
    if (file !== ':memory:') {
      const reader = new SqliteDriver({ database: withStatementCache(openReadOnlyConnection(file)) });
      await reader.init();
      driver.attachReader(reader);
      store.walFd = openSync(`${file}-wal`, 'r');
    }
    return store;
  }

  transaction<T>(work: (repo: FleetRepository) => Promise<T>): Promise<T> {
    return this.groupCommit.run(({ db, requireDurable }) =>
      work(new KyselyRepository(db, false, this.templates, async () => requireDurable())),
    );
  }

  /** Through the group commit like any write: the savepoint isolates a failing one. */
  writePlainBeat(instanceId: number, expectedVersion: number, change: InstanceChange): Promise<boolean> {
    return this.transaction((repo) => repo.updateInstance(instanceId, expectedVersion, change));
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
