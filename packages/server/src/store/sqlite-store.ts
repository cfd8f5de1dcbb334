import { closeSync, fdatasync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, SqliteDialect, sql, type SqliteDatabase, type SqliteStatement } from 'kysely';
import { GroupCommit } from './group-commit.js';
import { KyselyRepository } from './kysely-repository.js';
import { migrateToLatest } from './migrate.js';
import type { Database } from './schema.js';
import type { FleetRepository, FleetStore } from './store.js';

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
 * once, and survives a power cut after `syncDurable()` (an fdatasync of the WAL, exactly what
 * synchronous=FULL would do at every commit).
 */
export class SqliteStore extends KyselyRepository implements FleetStore {
  readonly dialect = 'sqlite' as const;
  private walFd: number | null = null;
  private readonly groupCommit: GroupCommit;
  /** Commits so far, and how many of them an fdatasync has covered: lets concurrent syncs share one. */
  private commits = 0;
  private synced = 0;
  private syncing: Promise<void> | null = null;

  private constructor(
    private readonly kysely: Kysely<Database>,
    private readonly sqlite: SQLite.Database,
    private readonly file: string,
  ) {
    super(kysely, false);
    this.groupCommit = new GroupCommit(kysely);
  }

  static async open(file: string): Promise<SqliteStore> {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    const kysely = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
    const store = new SqliteStore(kysely, sqlite, file);
    await migrateToLatest(kysely, 'sqlite');
    if (file !== ':memory:') store.walFd = openSync(`${file}-wal`, 'r');
    return store;
  }

  async transaction<T>(work: (repo: FleetRepository) => Promise<T>): Promise<T> {
    const result = await this.groupCommit.run((trx) => work(new KyselyRepository(trx, false, this.templates)));
    this.commits += 1;
    return result;
  }

  /** One fdatasync (off the event loop) covers every commit made before it started. */
  async syncDurable(): Promise<void> {
    const fd = this.walFd;
    if (fd === null) return;
    const target = this.commits;
    while (this.synced < target) {
      if (!this.syncing) {
        const covering = this.commits;
        this.syncing = new Promise<void>((resolve, reject) =>
          fdatasync(fd, (error) => (error ? reject(error) : resolve())),
        ).then(() => {
          this.synced = Math.max(this.synced, covering);
        });
        this.syncing.finally(() => {
          this.syncing = null;
        }).catch(() => {});
      }
      await this.syncing;
    }
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.kysely);
  }

  async close(): Promise<void> {
    if (this.walFd !== null) closeSync(this.walFd);
    this.walFd = null;
    await this.kysely.destroy();
  }

  override toString(): string {
    return `sqlite:${this.file}`;
  }
}
