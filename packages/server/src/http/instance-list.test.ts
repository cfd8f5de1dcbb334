import { INSTANCE_SORTS, type InstanceSort, type InstanceSummary } from '@dumont/protocol';
import { rowsOf } from '../test-support/rows.js';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { encodeCursor } from '../fleet/cursor.js';
import { expectedOrder, instanceRow } from '../store/store.contract.js';
import type { NewInstanceRow } from '../store/schema.js';
import type { InstanceOrderKey } from '../store/store.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer, T0 } from '../test-support/test-server.js';

type ListBody = { instances: InstanceSummary[]; count: number; next_cursor: string | null; [k: string]: unknown };

const LIST = '/api/v1/agent/instances';
const ids = (body: ListBody) => body.instances.map((i) => i.instance_id);
const cursorOf = (body: object) => Buffer.from(JSON.stringify(body)).toString('base64url');

/** Every page of `query`, following next_cursor. */
async function walk(t: TestServer, query: string, token: string): Promise<{ rows: InstanceSummary[]; first: ListBody }> {
  const rows: InstanceSummary[] = [];
  let first: ListBody | undefined;
  let cursor: string | null = null;
  for (let pages = 0; pages < 1000; pages++) {
    const res = await t.request('GET', `${LIST}?${query}${cursor ? `&cursor=${cursor}` : ''}`, { token });
    expect(res.status, res.text).toBe(200);
    const body = res.json as ListBody;
    first ??= body;
    rows.push(...body.instances);
    cursor = body.next_cursor;
    if (cursor === null) return { rows, first };
  }
  throw new Error('paging does not end');
}

/** The shown value a sort orders by (hibernate_in_seconds: the countdown, which the scheduled time orders). */
const shown = (row: InstanceSummary, key: InstanceOrderKey) =>
  ({
    instance_id: row.instance_id,
    hostname: row.hostname,
    last_heartbeat: row.last_heartbeat,
    idle_seconds: row.idle_seconds,
    hibernate_in_seconds: row.hibernate_in_seconds,
    gpu_utilization: row.gpu_utilization,
  })[key];

const matchesSearch = (row: NewInstanceRow, q: string) =>
  (/^[0-9]+$/.test(q) && Number(q) === row.instance_id) || (row.hostname != null && row.hostname.toLowerCase().includes(q.toLowerCase()));

describe('instance list: every sort and search pages without skipping or repeating (sqlite, property)', () => {
  let t: TestServer;
  let dispose: () => Promise<void>;
  beforeAll(async () => {
    const sqlite = (await testBackends()).find((b) => b.name === 'sqlite')!;
    const db = await sqlite.open();
    dispose = db.dispose;
    t = await new TestServer(async () => db.store).start();
  });
  afterAll(async () => {
    await t.close();
    await dispose();
  });

  // Small domains on purpose: many ties and nulls. Hostnames use characters whose byte order is JS order.
  const hostname = fc.option(fc.stringMatching(/^[aB1_%]{1,3}$/), { nil: null, freq: 4 });
  const time = fc.option(fc.integer({ min: 0, max: 4 }).map((k) => T0 - k * 30_000 - (k % 2) * 499), { nil: null, freq: 4 });
  const instance = fc.record({
    hostname,
    status: fc.constantFrom('active', 'idle', 'hibernating', 'offline'),
    last_heartbeat_at: time,
    idle_since: time,
    scheduled_at: fc.option(fc.integer({ min: -3, max: 3 }).map((k) => T0 + k * 10_000), { nil: null, freq: 3 }),
    utilization_percent: fc.option(fc.constantFrom(0, 7.5, 100), { nil: null, freq: 3 }),
  });
  let run = 0;

  it('matches the expected order and the shown numbers for a random fleet, sort, search and page size', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(instance, { minLength: 0, maxLength: 30 }),
        fc.constantFrom(...INSTANCE_SORTS),
        fc.option(fc.constantFrom('a', 'b1', '_', '%', '1', '2', '12'), { nil: undefined, freq: 2 }),
        fc.integer({ min: 1, max: 7 }),
        async (fleet, sort, q, limit) => {
          // Each run is its own owner with its own ids: the same server, nothing to clean up.
          run += 1;
          const owner = `owner-${run}`;
          const key = await createApiKey(t.server.store, owner, false, T0);
          const rows = fleet.map((f, i) => instanceRow(run * 1000 + i, { ...f, owner }));
          for (const row of rows) await rowsOf(t.server.store).insertInstanceRow(row);
          const query = `sort=${encodeURIComponent(sort)}&limit=${limit}${q === undefined ? '' : `&q=${encodeURIComponent(q)}`}`;
          const { rows: walked, first } = await walk(t, query, key);

          const matching = q === undefined ? rows : rows.filter((r) => matchesSearch(r, q));
          const orderKey = sort.replace(/^-/, '') as InstanceOrderKey;
          const descending = sort.startsWith('-');
          expect(walked.map((r) => r.instance_id)).toEqual(expectedOrder(matching, orderKey, descending));
          expect(first.count).toBe(matching.length);
          // What the dashboard sees: the shown values in order, unknown ones last.
          const values = walked.map((r) => shown(r, orderKey));
          const known = values.filter((v) => v !== null);
          expect(values.slice(0, known.length)).toEqual(known);
          const sorted = [...known].sort((a, b) => (a! < b! ? -1 : a! > b! ? 1 : 0));
          expect(known).toEqual(descending ? sorted.reverse() : sorted);
        },
      ),
      { numRuns: 150 },
    );
  });
});

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`instance list: search, sort, count, temperature (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      t = await new TestServer(async () => db.store).start();
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    it('sorts by the shown idle seconds, longest idle first, after real heartbeats', async () => {
      const tokens = new Map<number, string>();
      for (const id of [1, 2, 3, 4]) tokens.set(id, await t.register(id, `host-${id}`));
      const idleBeat = (id: number) => t.beat(tokens.get(id)!, { instance_id: id, hostname: `host-${id}`, gpu_metrics: { utilization_percent: 0 }, process_count: 0 });
      await idleBeat(2);
      t.clock.advance(20_000);
      await idleBeat(3);
      t.clock.advance(40_000);
      await idleBeat(2);
      await idleBeat(3);
      await t.beat(tokens.get(1)!, { instance_id: 1, hostname: 'host-1', gpu_metrics: { utilization_percent: 90 }, process_count: 2 });
      const body = (await t.request('GET', `${LIST}?sort=-idle_seconds`)).json as ListBody;
      expect(body.instances.map((i) => [i.instance_id, i.idle_seconds])).toEqual([
        [2, 60],
        [3, 40],
        [4, 0],
        [1, 0],
      ]);
      const ascending = (await t.request('GET', `${LIST}?sort=idle_seconds`)).json as ListBody;
      expect(ids(ascending)).toEqual([1, 4, 3, 2]);
      const utilization = (await t.request('GET', `${LIST}?sort=-gpu_utilization`)).json as ListBody;
      expect(ids(utilization)).toEqual([1, 3, 2, 4]);
      expect(utilization.instances[3]!.gpu_utilization).toBeNull();
    });

    it('counts what matches status and q, keeps the per-status counts for the whole fleet, and pages a search', async () => {
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      for (const [id, hostname] of [
        [11, 'train-A100-01'],
        [12, 'train-a100-02'],
        [13, 'infer-h100'],
        [100, 'train-h100-11'],
      ] as const) {
        await t.register(id, hostname, aliceKey);
      }
      await t.register(14, 'train-bob', await createApiKey(t.server.store, 'bob', false, T0));
      const train = (await t.request('GET', `${LIST}?q=TRAIN&limit=2`, { token: aliceKey })).json as ListBody;
      expect(ids(train)).toEqual([11, 12]);
      expect(train).toMatchObject({ count: 3, offline_count: 4, active_count: 0 });
      const rest = (await t.request('GET', `${LIST}?q=TRAIN&limit=2&cursor=${train.next_cursor}`, { token: aliceKey })).json as ListBody;
      expect(ids(rest)).toEqual([100]);
      expect(rest.next_cursor).toBeNull();
      const byId = (await t.request('GET', `${LIST}?q=11`, { token: aliceKey })).json as ListBody;
      expect(ids(byId)).toEqual([11, 100]);
      expect(byId.count).toBe(2);
      const none = (await t.request('GET', `${LIST}?q=train&status=active`, { token: aliceKey })).json as ListBody;
      expect(none).toMatchObject({ instances: [], count: 0, offline_count: 4 });
      const percent = (await t.request('GET', `${LIST}?q=${encodeURIComponent('%')}`, { token: aliceKey })).json as ListBody;
      expect(percent.count).toBe(0);
    });

    it('shows the hottest reporting GPU as temperature_celsius, null when none reported one', async () => {
      const beats: Record<number, Record<string, unknown> | null> = {
        1: { gpus: [{ index: 0, temperature_celsius: 40 }, { index: 1, temperature_celsius: 71.5 }] },
        2: { gpus: [{ index: 0, temperature_celsius: null }, { index: 1, temperature_celsius: 55 }, { index: 2 }] },
        3: { gpus: [{ index: 0, utilization_percent: 3 }, { index: 1, temperature_celsius: null }] },
        4: { gpu_metrics: { utilization_percent: 5, temperature_celsius: 60 } },
        5: { gpu_metrics: { utilization_percent: 5 } },
        6: { gpus: [{ index: 0, temperature_celsius: -5 }, { index: 1, temperature_celsius: 0 }, { index: 2 }] },
        7: null,
      };
      for (const [id, beat] of Object.entries(beats)) {
        const token = await t.register(Number(id));
        if (beat) expect((await t.beat(token, { instance_id: Number(id), ...beat })).status).toBe(200);
      }
      const body = (await t.request('GET', LIST)).json as ListBody;
      expect(body.instances.map((i) => [i.instance_id, i.temperature_celsius])).toEqual([
        [1, 71.5],
        [2, 55],
        [3, null],
        [4, 60],
        [5, null],
        [6, 0],
        [7, null],
      ]);
    });

    it('keeps old default cursors, refuses a cursor of another sort or one it could not have issued, and an unknown sort', async () => {
      for (const id of [1, 2, 3]) await t.register(id, `h${4 - id}`);
      const old = (await t.request('GET', `${LIST}?limit=1&cursor=${encodeCursor(1)}`)).json as ListBody;
      expect(ids(old)).toEqual([2]);
      expect(old.next_cursor).toBe(encodeCursor(2));
      const explicit = (await t.request('GET', `${LIST}?sort=instance_id&limit=1&cursor=${encodeCursor(1)}`)).json as ListBody;
      expect(ids(explicit)).toEqual([2]);
      const down = (await t.request('GET', `${LIST}?sort=-instance_id&limit=2`)).json as ListBody;
      expect(ids(down)).toEqual([3, 2]);
      expect(ids((await t.request('GET', `${LIST}?sort=-instance_id&cursor=${down.next_cursor}`)).json)).toEqual([1]);

      const byHost = (await t.request('GET', `${LIST}?sort=hostname&limit=1`)).json as ListBody;
      expect(ids(byHost)).toEqual([3]);
      const refusals: [string, string][] = [
        [`sort=-hostname&cursor=${byHost.next_cursor}`, 'cursor'],
        [`cursor=${byHost.next_cursor}`, 'cursor'],
        [`sort=hostname&cursor=${encodeCursor(1)}`, 'cursor'],
        [`sort=-instance_id&cursor=${encodeCursor(1)}`, 'cursor'],
        [`sort=last_heartbeat&cursor=${cursorOf({ s: 'last_heartbeat', k: 1e300, p: 1 })}`, 'cursor'],
        [`sort=last_heartbeat&cursor=${cursorOf({ s: 'last_heartbeat', k: 1.5, p: 1 })}`, 'cursor'],
        [`sort=idle_seconds&cursor=${cursorOf({ s: 'idle_seconds', k: 'x', p: 1 })}`, 'cursor'],
        [`sort=idle_seconds&cursor=${cursorOf({ s: 'idle_seconds', p: 1 })}`, 'cursor'],
        [`sort=hostname&cursor=${cursorOf({ s: 'hostname', k: 'a\u0000b', p: 1 })}`, 'cursor'],
        [`sort=hostname&cursor=${cursorOf({ s: 'hostname', k: 5, p: 1 })}`, 'cursor'],
        [`sort=gpu_utilization&cursor=${cursorOf({ s: 'gpu_utilization', k: 5, p: 1.5 })}`, 'cursor'],
        [`sort=gpu_utilization&cursor=${cursorOf([1])}`, 'cursor'],
        ['sort=status', 'sort'],
        ['sort=-', 'sort'],
        ['sort=--hostname', 'sort'],
        ['sort=HOSTNAME', 'sort'],
        ['q=', 'q'],
        [`q=${'x'.repeat(256)}`, 'q'],
        ['q=a%00b', 'q'],
      ];
      for (const [query, field] of refusals) {
        const res = await t.request('GET', `${LIST}?${query}`);
        expect(res.status, query).toBe(400);
        expect(res.json, query).toMatchObject({ error: 'invalid_request', field });
      }
      const forged = (await t.request('GET', `${LIST}?sort=hostname&cursor=${cursorOf({ s: 'hostname', k: 'h2', p: 0 })}`)).json as ListBody;
      expect(ids(forged)).toEqual([2, 1]);
      expect((await t.request('GET', `${LIST}?q=${'x'.repeat(255)}`)).json.count).toBe(0);
    });

    it('keeps a walk by countdown steady while the clock moves between pages', async () => {
      // Countdowns of 0 to 25 s, ties, one hibernating (0), two not counting down.
      const rows = [1, 2, 3, 4, 5, 6, 7, 8].map((id) =>
        instanceRow(id, {
          status: id === 3 ? 'hibernating' : 'idle',
          scheduled_at: id % 4 === 0 ? null : T0 + (id % 3) * 10_000 + (id % 2) * 5_000,
        }),
      );
      for (const row of rows) await rowsOf(t.server.store).insertInstanceRow(row);
      for (const sort of ['hibernate_in_seconds', '-hibernate_in_seconds'] as const) {
        const seen: number[] = [];
        let cursor: string | null = null;
        do {
          const body = (await t.request('GET', `${LIST}?sort=${sort}&limit=3${cursor ? `&cursor=${cursor}` : ''}`)).json as ListBody;
          seen.push(...ids(body));
          cursor = body.next_cursor;
          // Every countdown shown drops by 7 s or reaches 0 before the next page.
          t.clock.advance(7_300);
        } while (cursor !== null);
        expect(seen, sort).toEqual(expectedOrder(rows, 'hibernate_in_seconds', sort.startsWith('-')));
        t.clock.set(T0);
      }
      const first = (await t.request('GET', `${LIST}?sort=-hibernate_in_seconds`)).json as ListBody;
      expect(first.instances.map((i) => [i.instance_id, i.hibernate_in_seconds])).toEqual([
        [5, 25],
        [2, 20],
        [7, 15],
        [1, 15],
        [6, 0],
        [3, 0],
        [8, null],
        [4, null],
      ]);
    });

    it('follows a host renamed by its agent in search and in the hostname order (written only when it changes)', async () => {
      const a = await t.register(1, 'alpha');
      const b = await t.register(2, 'bravo');
      const beat = (token: string, id: number, hostname: string) =>
        t.beat(token, { instance_id: id, hostname, gpu_metrics: { utilization_percent: 50 }, process_count: 1 });
      expect((await beat(a, 1, 'alpha')).status).toBe(200);
      expect((await beat(b, 2, 'bravo')).status).toBe(200);
      t.clock.advance(30_000);
      expect((await beat(a, 1, 'zulu')).status).toBe(200);
      t.clock.advance(30_000);
      expect((await beat(a, 1, 'zulu')).status).toBe(200); // unchanged: not rewritten, still there
      const byName = (await t.request('GET', `${LIST}?sort=hostname`)).json as ListBody;
      expect(byName.instances.map((i) => i.hostname)).toEqual(['bravo', 'zulu']);
      expect(ids((await t.request('GET', `${LIST}?q=zul`)).json)).toEqual([1]);
      expect(ids((await t.request('GET', `${LIST}?q=alpha`)).json)).toEqual([]);
    });

    it('accepts every sort with status and q together', async () => {
      for (const id of [1, 2]) await t.register(id, `node-${id}`);
      for (const sort of INSTANCE_SORTS as readonly InstanceSort[]) {
        const res = await t.request('GET', `${LIST}?sort=${sort}&status=offline&q=node&limit=1`);
        expect(res.status, sort).toBe(200);
        const all = await walk(t, `sort=${sort}&status=offline&q=node&limit=1`, t.adminKey);
        expect(all.rows.map((r) => r.instance_id).sort(), sort).toEqual([1, 2]);
      }
    });
  });
}
