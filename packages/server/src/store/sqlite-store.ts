import { closeSync, fdatasyncSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { KyselyRepository } from './kysely-repository.js';
import { migrateToLatest } from './migrate.js';
import type { Database } from './schema.js';
import type { FleetRepository, FleetStore } from './store.js';

/**
 * Embedded SQLite in WAL mode with synchronous=NORMAL: a commit survives a crash of the process at
 * once, and survives a power cut after `syncDurable()` (an fdatasync of the WAL, exactly what
 * synchronous=FULL would do at every commit).
 */
export class SqliteStore extends KyselyRepository implements FleetStore {
  readonly dialect = 'sqlite' as const;
  private walFd: number | null = null;

  private constructor(
    private readonly kysely: Kysely<Database>,
    private readonly sqlite: SQLite.Database,
    private readonly file: string,
  ) {
    super(kysely, false);
  }

  static async open(file: string): Promise<SqliteStore> {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    const sqlite = new SQLite(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    const kysely = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
    const store = new SqliteStore(kysely, sqlite, file);
    await migrateToLatest(kysely, 'sqlite');
    if (file !== ':memory:') store.walFd = openSync(`${file}-wal`, 'r');
    return store;
  }

  transaction<T>(work: (repo: FleetRepository) => Promise<T>): Promise<T> {
    return this.kysely.transaction().execute((trx) => work(new KyselyRepository(trx, false)));
  }

  async syncDurable(): Promise<void> {
    if (this.walFd !== null) fdatasyncSync(this.walFd);
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
