import Database from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { migrationProvider } from './migrations.js';
import { newInstanceRow } from './schema.js';

/**
 * Migration 0011 on a database that already has labelled instances: the copy of each instance's labels
 * on its row (what the heartbeat matches policies with) starts equal to its labels, not empty.
 */
describe('migration 0011 (policies, labels on the instance row)', () => {
  let db: Kysely<any>;
  afterEach(async () => {
    await db?.destroy();
  });

  it('backfills labels_json from instance_labels for instances registered before it', async () => {
    const sqlite = new Database(':memory:');
    sqlite.pragma('foreign_keys = ON');
    db = new Kysely<any>({ dialect: new SqliteDialect({ database: sqlite }) });
    const migrator = new Migrator({ db, provider: migrationProvider('sqlite') });
    const before = await migrator.migrateTo('0010_admin_limits');
    expect(before.error).toBeUndefined();
    for (const id of [1, 2, 3]) {
      const { labels_json: _labels, ...row } = newInstanceRow({ instance_id: id, owner: 'alice', agent_token_hash: `h${id}`, registered_at: 0 });
      await db.insertInto('instances').values(row).execute();
    }
    await db
      .insertInto('instance_labels')
      .values([
        { instance_id: 1, key: 'team', value: 'vision' },
        { instance_id: 1, key: 'kind', value: 'notebook' },
        { instance_id: 3, key: 'spot', value: '' },
      ])
      .execute();

    const after = await migrator.migrateToLatest();
    expect(after.error).toBeUndefined();
    const rows = await db.selectFrom('instances').select(['instance_id', 'labels_json']).orderBy('instance_id').execute();
    expect(rows.map((r) => [r.instance_id, JSON.parse(r.labels_json)])).toEqual([
      [1, { kind: 'notebook', team: 'vision' }],
      [2, {}],
      [3, { spot: '' }],
    ]);
    expect(await db.selectFrom('policies').selectAll().execute()).toEqual([]);
  });
});
