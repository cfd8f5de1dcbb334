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
    // Kysely looks for its bookkeeping tables by reading the tables and columns of every schema; DDL in
    // another schema meanwhile (another database user, a parallel test run creating or dropping its
    // own) can fail that read with whatever the catalogue was caught in the middle of: "schema does not
    // exist", "column … does not exist", "cache lookup failed". The read changes nothing, so it is tried
    // again, whatever the error; a failing migration step (`failed`) is never retried.
    if (attempt < 5 && !failed && !namesOwnSchema(error, schema)) {
      // Long enough for a neighbour's DDL statement to finish.
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
      continue;
    }
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${String(error)}`);
  }
}

/** An error about our own schema is ours to report, not a neighbour's DDL to wait out. */
function namesOwnSchema(error: unknown, ownSchema: string | undefined): boolean {
  return ownSchema !== undefined && String((error as { message?: unknown } | null)?.message).includes(`"${ownSchema}"`);
}
