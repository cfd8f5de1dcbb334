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
    // someone else drops meanwhile (another database user, a parallel test run) fails that read, with
    // "schema does not exist" or, caught mid-drop, "cache lookup failed". Our own schema cannot vanish
    // under us, so the read is simply tried again. A failing migration step is never retried.
    if (attempt < 5 && !failed && isOtherSchemaVanished(error, schema)) continue;
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${String(error)}`);
  }
}

function isOtherSchemaVanished(error: unknown, ownSchema: string | undefined): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  const vanished = code === '3F000' || code === '42P01' || (code === 'XX000' && /cache lookup failed/.test(String(message)));
  return vanished && (ownSchema === undefined || !String(message).includes(`"${ownSchema}"`));
}
