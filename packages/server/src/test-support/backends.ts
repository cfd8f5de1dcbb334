import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { FleetStore } from '../store/store.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { PostgresStore } from '../store/postgres-store.js';

/** A backend the store and HTTP suites run against: each `open()` is a fresh, isolated database. */
export interface TestBackend {
  name: 'sqlite' | 'postgres';
  /** Why this backend is skipped here, or null when it runs. */
  skipReason: string | null;
  /** A new empty database; `reopen` gives a second handle on the same data (a restart). */
  open(): Promise<{ store: FleetStore; reopen(): Promise<FleetStore>; databaseUrl: string; dispose(): Promise<void> }>;
}

export const TEST_DATABASE_URL = process.env.DUMONT_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const sqlite: TestBackend = {
  name: 'sqlite',
  skipReason: null,
  async open() {
    const dir = mkdtempSync(join(tmpdir(), 'dumont-test-'));
    const file = join(dir, 'dumont.db');
    return {
      store: await SqliteStore.open(file),
      reopen: () => SqliteStore.open(file),
      databaseUrl: `sqlite:${file}`,
      async dispose() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

async function postgresReachable(): Promise<string | null> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('select 1');
    return null;
  } catch (error) {
    return `PostgreSQL at DUMONT_TEST_DATABASE_URL is unreachable (${(error as Error).message})`;
  } finally {
    await client.end().catch(() => {});
  }
}

async function postgres(): Promise<TestBackend> {
  const unreachable = await postgresReachable();
  if (unreachable && process.env.CI === 'true') {
    throw new Error(`${unreachable}; under CI=true the PostgreSQL suites must run`);
  }
  if (unreachable) console.warn(`skipping PostgreSQL suites: ${unreachable}`);
  return {
    name: 'postgres',
    skipReason: unreachable,
    async open() {
      // Each database of a test lives in its own schema, so concurrent runs never see each other's rows.
      const schema = `dumont_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
      const store = await PostgresStore.open(TEST_DATABASE_URL, { schema, poolSize: 4 });
      const url = new URL(TEST_DATABASE_URL);
      url.searchParams.set('options', `-c search_path=${schema}`);
      return {
        store,
        reopen: () => PostgresStore.open(TEST_DATABASE_URL, { schema, poolSize: 4 }),
        databaseUrl: url.toString(),
        async dispose() {
          const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
          await client.connect();
          await client.query(`drop schema if exists "${schema}" cascade`);
          await client.end();
        },
      };
    },
  };
}

export async function testBackends(): Promise<TestBackend[]> {
  return [sqlite, await postgres()];
}
