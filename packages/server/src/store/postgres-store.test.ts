import { sql, type Kysely } from 'kysely';
import { describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import type { Database } from './schema.js';
import type { FleetRepository } from './store.js';

// The repository's query builder (protected): the test asks PostgreSQL about the transaction itself.
const dbOf = (repo: FleetRepository) => (repo as unknown as { db: Kysely<Database> }).db;

const postgres = (await testBackends()).find((b) => b.name === 'postgres')!;

describe.skipIf(postgres.skipReason !== null)('PostgreSQL durability', () => {
  it('commits plain transactions without waiting for the WAL flush, durable ones with', async () => {
    const db = await postgres.open();
    try {
      const setting = (repo: FleetRepository) => sql<{ synchronous_commit: string }>`show synchronous_commit`.execute(dbOf(repo));
      const plain = await db.store.transaction(async (repo) => (await setting(repo)).rows[0]!.synchronous_commit);
      const durable = await db.store.transaction(async (repo) => {
        await repo.requireDurableCommit();
        return (await setting(repo)).rows[0]!.synchronous_commit;
      });
      expect([plain, durable]).toEqual(['off', 'on']);
    } finally {
      await db.store.close();
      await db.dispose();
    }
  });
});
