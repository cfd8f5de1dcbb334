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
  for (let attempt = 1; ; attempt++) {
    const { error, results } = await migrator.migrateToLatest();
    const failed = results?.find((r) => r.status === 'Error');
    if (!error && !failed) return;
    // Kysely looks for its bookkeeping tables by reading the catalogue of every schema; a schema that
    // someone else drops meanwhile (another database user, a parallel test run) fails that read. Our
    // own schema cannot vanish under us, so the read is simply tried again.
    if (attempt < 5 && !failed && isOtherSchemaVanished(error, schema)) continue;
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${String(error)}`);
  }
}

function isOtherSchemaVanished(error: unknown, ownSchema: string | undefined): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  return code === '3F000' && (ownSchema === undefined || !String(message).includes(`"${ownSchema}"`));
}
