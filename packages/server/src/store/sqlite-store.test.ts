import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { instanceRow } from './store.contract.js';
import { openReadOnlyConnection } from './sqlite-reader.js';
import { SqliteStore } from './sqlite-store.js';

/** Rows as stored, written through `kysely` (the writer). */
const insertRows = (store: SqliteStore, count: number) =>
  store.kysely
    .insertInto('instances')
    .values(Array.from({ length: count }, (_, i) => instanceRow(i + 1)))
    .execute();

describe('SQLite durability', () => {
  const dirs: string[] = [];
  const open = async (durability?: 'transitions' | 'always') => {
    const dir = mkdtempSync(join(tmpdir(), 'dumont-sqlite-'));
    dirs.push(dir);
    return SqliteStore.open(join(dir, 'd.db'), durability ? { durability } : {});
  };
  afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('fsyncs the WAL only for transactions that ask for it, once per group commit', async () => {
    const store = await open();
    await insertRows(store, 20);
    const before = store.walSyncs;
    await store.transaction((repo) => repo.updateInstance(1, 0, { hostname: 'plain' }));
    expect(store.walSyncs).toBe(before); // it did not ask for durability: no fsync

    await store.transaction(async (repo) => {
      await repo.updateInstance(1, 1, { hostname: 'durable' });
      await repo.requireDurableCommit();
    });
    expect(store.walSyncs).toBe(before + 1);

    // Twenty durable transactions arriving together share one commit and one fsync.
    await Promise.all(
      Array.from({ length: 19 }, (_, i) =>
        store.transaction(async (repo) => {
          await repo.updateInstance(i + 2, 0, { hostname: 'together' });
          await repo.requireDurableCommit();
        }),
      ),
    );
    expect(store.walSyncs).toBe(before + 2);
    await store.close();
  });

  it('with `always`, every commit is fsync\'d', async () => {
    const store = await open('always');
    await insertRows(store, 1);
    const before = store.walSyncs;
    await store.transaction((repo) => repo.updateInstance(1, 0, { hostname: 'plain' }));
    expect(store.walSyncs).toBe(before + 1);
    await store.close();
  });
});

describe('SQLite reads outside a transaction', () => {
  const dirs: string[] = [];
  const fileInTempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'dumont-sqlite-'));
    dirs.push(dir);
    return join(dir, 'd.db');
  };
  afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

  /** A group-commit batch that has renamed instance 1 and stays open (uncommitted) until released. */
  async function holdBatchOpen(store: SqliteStore) {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let renamed!: () => void;
    const inside = new Promise<void>((resolve) => (renamed = resolve));
    let ownWrite: string | null | undefined;
    const committed = store.transaction(async (repo) => {
      expect(await repo.updateInstance(1, 0, { hostname: 'renamed' })).toBe(true);
      ownWrite = (await repo.getInstance(1))?.hostname;
      renamed();
      await released;
    });
    await inside;
    return { release, committed, ownWrite: () => ownWrite };
  }

  const WAITING = Symbol('still waiting');
  const within = <T>(promise: Promise<T>, ms: number) =>
    Promise.race([promise, new Promise<typeof WAITING>((resolve) => setTimeout(() => resolve(WAITING), ms))]);

  it('answers reads from the last commit while a batch is open, and sees the batch once it commits', async () => {
    const store = await SqliteStore.open(fileInTempDir());
    await insertRows(store, 3);
    const batch = await holdBatchOpen(store);
    // Inside the transaction its own write is visible: its reads stay on the writer.
    expect(batch.ownWrite()).toBe('renamed');

    const page = await within(store.listInstances({ owner: null, limit: 10 }), 2000);
    if (page === WAITING) throw new Error('listInstances waited for the open batch');
    expect(page.map((entry) => entry.hostname)).toEqual(['gpu-1', 'gpu-2', 'gpu-3']);
    const one = await within(store.getInstance(1), 2000);
    if (one === WAITING) throw new Error('getInstance waited for the open batch');
    expect(one?.hostname).toBe('gpu-1');
    // Modules with tables of their own read through `kysely`: their SELECTs do not wait either.
    const viaKysely = await within(store.kysely.selectFrom('instances').select('hostname').where('instance_id', '=', 1).executeTakeFirst(), 2000);
    if (viaKysely === WAITING) throw new Error('a SELECT through kysely waited for the open batch');
    expect(viaKysely?.hostname).toBe('gpu-1');

    // A write through `kysely` goes to the writer: it waits for the batch, then succeeds.
    const write = sql`update instances set hostname = 'written' where instance_id = 2`.execute(store.kysely);
    expect(await within(write, 100)).toBe(WAITING);

    batch.release();
    await batch.committed;
    expect((await store.getInstance(1))?.hostname).toBe('renamed');
    await write;
    expect((await store.getInstance(2))?.hostname).toBe('written');
    await store.close();
  });

  it('sees every transaction as soon as it has resolved', async () => {
    const store = await SqliteStore.open(fileInTempDir());
    await insertRows(store, 1);
    for (let version = 0; version < 50; version++) {
      await store.transaction((repo) => repo.updateInstance(1, version, { hostname: `name-${version}` }));
      expect((await store.getInstance(1))?.hostname).toBe(`name-${version}`);
      expect((await store.listInstances({ owner: null, limit: 1 }))[0]?.hostname).toBe(`name-${version}`);
    }
    await store.close();
  });

  it('opens a reader that refuses a write at once, even while the writer holds its lock', async () => {
    const file = fileInTempDir();
    const store = await SqliteStore.open(file);
    await insertRows(store, 1);
    const batch = await holdBatchOpen(store);
    const reader = openReadOnlyConnection(file);
    try {
      // A writable connection would wait this long for the writer's lock, blocking the event loop.
      expect(reader.pragma('busy_timeout', { simple: true })).toBeGreaterThanOrEqual(1000);
      expect(reader.prepare('select hostname from instances where instance_id = 1').get()).toEqual({ hostname: 'gpu-1' });
      const started = performance.now();
      let code: string | undefined;
      try {
        reader.prepare(`update instances set hostname = 'from-reader' where instance_id = 1`).run();
      } catch (error) {
        code = (error as { code?: string }).code;
      }
      expect(code).toBe('SQLITE_READONLY');
      expect(performance.now() - started).toBeLessThan(500);
    } finally {
      reader.close();
    }
    batch.release();
    await batch.committed;
    expect((await store.getInstance(1))?.hostname).toBe('renamed');
    await store.close();
  });

  it('keeps `:memory:` on its one connection: reads wait for the open batch', async () => {
    const store = await SqliteStore.open(':memory:');
    await insertRows(store, 2);
    const batch = await holdBatchOpen(store);
    const read = store.getInstance(1);
    expect(await within(read, 100)).toBe(WAITING);
    batch.release();
    await batch.committed;
    expect((await read)?.hostname).toBe('renamed');
    expect((await store.listInstances({ owner: null, limit: 10 })).map((entry) => entry.hostname)).toEqual(['renamed', 'gpu-2']);
    await store.close();
  });
});
