import { Migrator, type Kysely } from 'kysely';
import { migrationProvider, type Dialect } from './migrations.js';
import type { Database } from './schema.js';

/**
 * Applies pending migrations. On PostgreSQL the bookkeeping tables live in `schema` (the connection's
 * current schema): left unnamed, the migrator would find another schema's tables and skip its own.
 */
export async function migrateToLatest(db: Kysely<Database>, dialect: Dialect, schema?: string): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: migrationProvider(dialect),
    ...(schema ? { migrationTableSchema: schema } : {}),
  });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${String(error)}`);
  }
}
