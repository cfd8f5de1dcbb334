import { sql, type Kysely } from 'kysely';

/**
 * Dashboard login sessions (migration `0005_sessions`). A row holds the hash of the session token the
 * browser's cookie carries, never the token, and the hash of the API key that opened it, so that a
 * session ends with its key.
 */
export interface SessionRow {
  token_hash: string;
  key_hash: string;
  owner: string;
  is_admin: number;
  created_at: number;
  expires_at: number;
}

interface SessionsDatabase {
  sessions: SessionRow;
}

export async function createSessionsTable(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('sessions')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('key_hash', 'text', (c) => c.notNull())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('is_admin', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('sessions_expires').on('sessions').column('expires_at').execute();
}

export class SessionStore {
  private readonly db: Kysely<SessionsDatabase>;

  constructor(db: Kysely<any>) {
    this.db = db as Kysely<SessionsDatabase>;
  }

  async insert(row: SessionRow): Promise<void> {
    await this.db.insertInto('sessions').values(row).execute();
  }

  /** The live session with this token hash; an expired one is as good as none. */
  async find(tokenHash: string, now: number): Promise<SessionRow | undefined> {
    const row = await this.db.selectFrom('sessions').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    if (!row || Number(row.expires_at) <= now) return undefined;
    return { ...row, created_at: Number(row.created_at), expires_at: Number(row.expires_at), is_admin: Number(row.is_admin) };
  }

  async delete(tokenHash: string): Promise<void> {
    await this.db.deleteFrom('sessions').where('token_hash', '=', tokenHash).execute();
  }

  /** Removes expired sessions; returns how many. */
  async pruneExpired(now: number): Promise<number> {
    const result = await this.db.deleteFrom('sessions').where('expires_at', '<=', now).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async count(): Promise<number> {
    const row = await this.db.selectFrom('sessions').select(sql<number>`count(*)`.as('n')).executeTakeFirstOrThrow();
    return Number(row.n);
  }
}
