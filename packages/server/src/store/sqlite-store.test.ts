import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { instanceRow } from './store.contract.js';
import { SqliteStore } from './sqlite-store.js';

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
    for (let id = 1; id <= 20; id++) await store.insertInstance(instanceRow(id));
    const before = store.walSyncs;
    await store.transaction((repo) => repo.updateInstance(1, 0, { heartbeat_count: 1 }));
    expect(store.walSyncs).toBe(before); // a plain metrics write: no fsync

    await store.transaction(async (repo) => {
      await repo.updateInstance(1, 1, { status: 'active' });
      await repo.requireDurableCommit();
    });
    expect(store.walSyncs).toBe(before + 1);

    // Twenty durable transactions arriving together share one commit and one fsync.
    await Promise.all(
      Array.from({ length: 19 }, (_, i) =>
        store.transaction(async (repo) => {
          await repo.updateInstance(i + 2, 0, { status: 'idle' });
          await repo.requireDurableCommit();
        }),
      ),
    );
    expect(store.walSyncs).toBe(before + 2);
    await store.close();
  });

  it('with `always`, every commit is fsync\'d', async () => {
    const store = await open('always');
    await store.insertInstance(instanceRow(1));
    const before = store.walSyncs;
    await store.transaction((repo) => repo.updateInstance(1, 0, { heartbeat_count: 1 }));
    expect(store.walSyncs).toBe(before + 1);
    await store.close();
  });
});
