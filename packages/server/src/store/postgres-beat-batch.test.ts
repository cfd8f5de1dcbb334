import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import { PostgresBeatBatches } from './postgres-beat-batch.js';
import type { PostgresStore } from './postgres-store.js';
import type { InstanceUpdate } from './schema.js';

/**
 * The plain heartbeat's batched read and compare-and-set write on a real PostgreSQL: statements are
 * counted on their way to the server (every one is run), rows are read back from the table.
 */

const postgres = (await testBackends()).find((b) => b.name === 'postgres')!;

describe.skipIf(postgres.skipReason !== null)('PostgreSQL plain beat batches', () => {
  let db: Awaited<ReturnType<typeof postgres.open>>;
  let store: PostgresStore;
  let pool: pg.Pool;
  let statements: string[];
  let batches: PostgresBeatBatches;

  beforeEach(async () => {
    db = await postgres.open();
    store = db.store as PostgresStore;
    // bigint as Number, as the store reads it.
    const types = { getTypeParser: (oid: number, format?: string) => (oid === 20 ? Number : pg.types.getTypeParser(oid, format as 'text')) };
    pool = new pg.Pool({ connectionString: db.databaseUrl, max: 4, types: types as pg.CustomTypesConfig });
    statements = [];
    const recording = {
      query: (config: pg.QueryConfig) => {
        statements.push(config.text);
        return pool.query(config);
      },
    } as Pick<pg.Pool, 'query'>;
    batches = new PostgresBeatBatches(recording, (id, expected, patch) => {
      statements.push(`one row: ${id}`);
      return store.updateInstanceColumns(id, expected, patch);
    });
  });

  afterEach(async () => {
    await batches.drain();
    await pool.end();
    await store.close();
    await db.dispose();
  });

  const insert = async (...ids: number[]) => {
    for (const id of ids) {
      await pool.query(`insert into instances (instance_id, owner, agent_token_hash, registered_at, status) values ($1, 'alice', $2, 0, 'offline')`, [
        id,
        `token-${id}`,
      ]);
    }
  };
  const rowOf = async (id: number) => (await pool.query(`select * from instances where instance_id = $1`, [id])).rows[0];
  const metrics = (i: number): InstanceUpdate => ({
    utilization_percent: i + 0.25,
    memory_used_mb: i * 100,
    gpus_json: JSON.stringify([{ index: i, name: `GPU "${i}" \\ {a,b}` }]),
    heartbeat_count: i,
    agent_timestamp_ms: 1_700_000_000_000 + i,
    process_count: i % 3 === 0 ? null : i,
  });

  it('writes a turn of plain beats for different instances in one statement, each row its own patch', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => 1000 - i * 7);
    await insert(...ids);
    const results = await Promise.all(ids.map((id, i) => batches.write(id, 0, metrics(i))));
    expect(results).toEqual(ids.map(() => true));
    expect(statements).toHaveLength(1);
    for (const [i, id] of ids.entries()) {
      const row = await rowOf(id);
      expect(row).toMatchObject({ ...metrics(i), version: 1 });
    }
  });

  it('answers false for a stale version only, leaving that row untouched while the others are written', async () => {
    await insert(1, 2, 3);
    const results = await Promise.all([batches.write(1, 0, metrics(1)), batches.write(2, 5, metrics(2)), batches.write(3, 0, metrics(3))]);
    expect(results).toEqual([true, false, true]);
    expect(statements).toHaveLength(1);
    expect(await rowOf(2)).toMatchObject({ version: 0, heartbeat_count: 0, gpus_json: '[]', utilization_percent: null });
    expect(await rowOf(3)).toMatchObject({ ...metrics(3), version: 1 });
  });

  it('writes patches with different columns in one turn in one statement, keeping what a patch does not set', async () => {
    await insert(1, 2, 3, 4, 5);
    await pool.query(`update instances set hostname = 'before-' || instance_id, deadline = 7`);
    const results = await Promise.all([
      batches.write(1, 0, { ...metrics(1), hostname: 'gpu-1' }),
      batches.write(2, 0, metrics(2)),
      batches.write(3, 0, { ...metrics(3), deadline: 42, hostname: null }),
      batches.write(4, 0, { ...metrics(4), deadline: null }),
      // A status write fires the counters' trigger: it never shares a statement with rows that keep theirs.
      batches.write(5, 0, { ...metrics(5), status: 'online' }),
    ]);
    expect(results).toEqual([true, true, true, true, true]);
    expect(statements).toHaveLength(2);
    expect(await rowOf(1)).toMatchObject({ ...metrics(1), hostname: 'gpu-1', deadline: 7, version: 1 });
    expect(await rowOf(2)).toMatchObject({ ...metrics(2), hostname: 'before-2', deadline: 7, version: 1 });
    expect(await rowOf(3)).toMatchObject({ ...metrics(3), hostname: null, deadline: 42, version: 1 });
    expect(await rowOf(4)).toMatchObject({ ...metrics(4), hostname: 'before-4', deadline: null, version: 1 });
    expect(await rowOf(5)).toMatchObject({ ...metrics(5), hostname: 'before-5', status: 'online', version: 1 });
    const counts = await pool.query(`select status, sum(n)::int as n from instance_counts group by status having sum(n) <> 0 order by status`);
    expect(counts.rows).toEqual([
      { status: 'offline', n: 4 },
      { status: 'online', n: 1 },
    ]);
  });

  it('writes a batch of one, and answers false for an instance that does not exist', async () => {
    await insert(7);
    expect(await batches.write(7, 0, metrics(7))).toBe(true);
    expect(await batches.write(8, 0, metrics(8))).toBe(false);
    expect(statements).toHaveLength(2);
    expect(await rowOf(7)).toMatchObject({ ...metrics(7), version: 1 });
  });

  it('lets only one of two writes of the same instance in a turn succeed', async () => {
    await insert(5);
    const results = await Promise.all([batches.write(5, 0, metrics(1)), batches.write(5, 0, metrics(2))]);
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(statements).toHaveLength(1);
    expect(await rowOf(5)).toMatchObject({ ...metrics(results[0] ? 1 : 2), version: 1 });
  });

  it('fails the compare-and-set of a row a locked transaction changes while the batch waits for its lock', async () => {
    await insert(1, 2);
    const holder = await pool.connect();
    try {
      await holder.query('begin');
      await holder.query('select version from instances where instance_id = 1 for update');
      await holder.query(`update instances set hostname = 'operator', version = version + 1 where instance_id = 1`);
      const { rows } = await holder.query<{ pid: number }>('select pg_backend_pid() as pid');
      const writes = Promise.all([batches.write(1, 0, metrics(1)), batches.write(2, 0, metrics(2))]);
      // Committed only once the batch statement is waiting on the row lock: PostgreSQL then rechecks
      // the row as committed, whose version has moved.
      for (;;) {
        const waiting = await pool.query(`select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid))`, [rows[0]!.pid]);
        if (waiting.rowCount! > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      await holder.query('commit');
      expect(await writes).toEqual([false, true]);
    } finally {
      holder.release();
    }
    expect(await rowOf(1)).toMatchObject({ hostname: 'operator', version: 1, heartbeat_count: 0, gpus_json: '[]' });
    expect(await rowOf(2)).toMatchObject({ ...metrics(2), version: 1 });
  });

  it('falls back to one statement per row when the batch statement fails, failing only the bad row', async () => {
    await insert(1, 2, 3);
    const bad = { ...metrics(2), gpus_json: null } as unknown as InstanceUpdate; // NOT NULL column
    const results = await Promise.allSettled([batches.write(1, 0, metrics(1)), batches.write(2, 0, bad), batches.write(3, 0, metrics(3))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(statements).toEqual([expect.stringMatching(/^update/), 'one row: 1', 'one row: 2', 'one row: 3']);
    expect(await rowOf(1)).toMatchObject({ ...metrics(1), version: 1 });
    expect(await rowOf(2)).toMatchObject({ version: 0, gpus_json: '[]' });
  });

  it('reads a turn of unlocked lifecycles in one statement: each its row, undefined for a missing id', async () => {
    await insert(10, 20, 30);
    await pool.query(`update instances set hostname = 'h' || instance_id, version = instance_id where instance_id in (10, 20, 30)`);
    const [a, b, missing, c, again] = await Promise.all([batches.read(10), batches.read(20), batches.read(99), batches.read(30), batches.read(10)]);
    expect(statements).toHaveLength(1);
    expect([a?.hostname, b?.hostname, c?.hostname]).toEqual(['h10', 'h20', 'h30']);
    expect([a?.version, b?.version, c?.version]).toEqual([10, 20, 30]);
    expect(missing).toBeUndefined();
    expect(again).toEqual(a);
    expect(again).not.toBe(a);
  });

  it('runs the store’s own unlocked reads and plain writes through one statement per turn', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => i + 1);
    await insert(...ids);
    const storePool = (store as unknown as { pool: pg.Pool }).pool;
    let checkouts = 0;
    storePool.on('acquire', () => (checkouts += 1));
    const read = await Promise.all(ids.map((id) => store.getLifecycle(id)));
    expect(read.map((r) => r?.instanceId)).toEqual(ids);
    expect(checkouts).toBe(1);
    const written = await Promise.all(ids.map((id) => store.writePlainBeat(id, 0, { heartbeatCount: id * 2 })));
    expect(written.every(Boolean)).toBe(true);
    expect(checkouts).toBe(2);
    // A locked read inside a transaction is its own statement, as before.
    await store.transaction((repo) => repo.getLifecycle(1, { forUpdate: true }));
    expect((await rowOf(20)).heartbeat_count).toBe(40);
  });
});
