import { MAX_HISTORY_POINTS, type HeartbeatRequest } from '@dumont/protocol';
import type { Kysely, KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { ManualClock } from '../clock.js';
import { createHistoryTables, HistoryStore } from '../store/history.js';
import type { FleetStore } from '../store/store.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer, T0 } from '../test-support/test-server.js';
import { HistoryRecorder, samplesOf } from './history-recorder.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** The store's own query builder (the server's history shares the store's database and connections). */
const kyselyOf = (store: FleetStore) => (store as unknown as { kysely: Kysely<any> }).kysely;

/** Counts the INSERT statements the database receives: the real queries, only observed. */
class InsertCounter implements KyselyPlugin {
  inserts = 0;
  transformQuery({ node }: PluginTransformQueryArgs): RootOperationNode {
    if (node.kind === 'InsertQueryNode') this.inserts += 1;
    return node;
  }
  async transformResult({ result }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return result;
  }
}

const twoGpus = (instance_id: number, util0: number, util1: number | null) => ({
  instance_id,
  process_count: 2,
  active_users: 1,
  gpus: [
    { index: 0, uuid: 'GPU-aaaa', utilization_percent: util0, memory_used_mb: 1000 + util0, memory_total_mb: 80_000, temperature_celsius: 50, power_watts: 200 },
    // The collector could not read this GPU's utilization or power: unknown, which must never read as 0.
    { index: 1, uuid: 'GPU-bbbb', utilization_percent: util1, memory_used_mb: 500, memory_total_mb: 80_000, temperature_celsius: 40, power_watts: null },
  ],
});

/** A whole heartbeat, for feeding the recorder directly. */
const asBeat = (body: ReturnType<typeof twoGpus>): HeartbeatRequest => ({ hostname: 'gpu-test', timestamp: new Date(T0).toISOString(), ...body });

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`metrics history (${backend.name})`, () => {
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

    const count = async (table: 'metric_samples' | 'metric_rollups') => {
      const row = await kyselyOf(t.server.store).selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
      return Number(row.n);
    };
    const metrics = (id: number, query = '', token?: string) =>
      t.request('GET', `/api/v1/agent/instances/${id}/metrics${query}`, token === undefined ? {} : { token });

    it('keeps each GPU of each beat off the heartbeat path and answers raw samples, null staying null', async () => {
      const token = await t.register(7);
      expect((await t.beat(token, twoGpus(7, 10, null))).status).toBe(200);
      t.clock.advance(30_000);
      expect((await t.beat(token, twoGpus(7, 30, 55))).status).toBe(200);
      // Answered before anything was written: the samples wait in the batch.
      expect(await count('metric_samples')).toBe(0);
      await t.server.history.flush();
      expect(await count('metric_samples')).toBe(4);
      const instanceRows = await kyselyOf(t.server.store).selectFrom('metric_samples').select(['process_count', 'active_users']).execute();
      expect(instanceRows.every((r) => Number(r.process_count) === 2 && Number(r.active_users) === 1)).toBe(true);

      const res = await metrics(7);
      expect(res.status).toBe(200);
      const now = T0 + 30_000;
      expect(res.json).toMatchObject({ instance_id: 7, from: new Date(now - HOUR).toISOString(), to: new Date(now).toISOString(), resolution: 'raw', step_seconds: 0 });
      expect(res.json.gpus).toEqual([
        {
          index: 0,
          uuid: 'GPU-aaaa',
          points: [
            { at: new Date(T0).toISOString(), utilization_percent: 10, memory_used_mb: 1010, temperature_celsius: 50, power_watts: 200 },
            { at: new Date(now).toISOString(), utilization_percent: 30, memory_used_mb: 1030, temperature_celsius: 50, power_watts: 200 },
          ],
        },
        {
          index: 1,
          uuid: 'GPU-bbbb',
          points: [
            { at: new Date(T0).toISOString(), utilization_percent: null, memory_used_mb: 500, temperature_celsius: 40, power_watts: null },
            { at: new Date(now).toISOString(), utilization_percent: 55, memory_used_mb: 500, temperature_celsius: 40, power_watts: null },
          ],
        },
      ]);
      // An explicit range that holds only the first beat.
      const first = await metrics(7, `?from=${new Date(T0 - 60_000).toISOString()}&to=${new Date(T0 + 1000).toISOString()}`);
      expect(first.json.gpus.map((g: { points: unknown[] }) => g.points.length)).toEqual([1, 1]);
    });

    it('answers 5-minute rollups with min/avg/max beyond raw retention, and prunes what is past retention', async () => {
      const token = await t.register(8);
      // 10 minutes of beats every 30 s: GPU 0 climbs 0, 5, …, 95; GPU 1 never reports power.
      for (let i = 0; i < 20; i++) {
        expect((await t.beat(token, twoGpus(8, i * 5, 40))).status).toBe(200);
        t.clock.advance(30_000);
      }
      await t.server.history.flush();
      t.clock.advance(5 * 60_000);
      await t.server.history.maintain();
      expect(await count('metric_rollups')).toBeGreaterThan(0);
      expect(await count('metric_samples')).toBe(40);

      // A day later the raw samples are gone; the rollups answer.
      t.clock.advance(DAY);
      await t.server.history.maintain();
      expect(await count('metric_samples')).toBe(0);
      const res = await metrics(8, `?from=${new Date(T0 - 60_000).toISOString()}&to=${new Date(T0 + 15 * 60_000).toISOString()}`);
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ resolution: 'rollup', step_seconds: 300 });
      const [gpu0, gpu1] = res.json.gpus;
      expect(gpu0.uuid).toBe('GPU-aaaa');
      // T0 is on a 5-minute boundary: buckets hold beats 0–9 and 10–19.
      expect(gpu0.points).toHaveLength(2);
      expect(gpu0.points[0]).toMatchObject({
        at: new Date(T0).toISOString(),
        utilization_percent: 22.5,
        utilization_percent_min: 0,
        utilization_percent_max: 45,
        memory_used_mb_min: 1000,
        memory_used_mb_max: 1045,
      });
      expect(gpu0.points[1]).toMatchObject({ utilization_percent: 72.5, utilization_percent_min: 50, utilization_percent_max: 95 });
      expect(gpu1.points[0]).toMatchObject({ utilization_percent: 40, power_watts: null, power_watts_min: null, power_watts_max: null });

      // Past DUMONT_HISTORY_DAYS (30 by default) the rollups go too.
      t.clock.advance(30 * DAY);
      await t.server.history.maintain();
      expect(await count('metric_rollups')).toBe(0);
    });

    it('refuses bad ranges with a 400 naming the field', async () => {
      await t.register(9);
      const at = (ms: number) => new Date(ms).toISOString();
      const cases: [string, string][] = [
        [`?from=${at(T0)}&to=${at(T0 - 1000)}`, 'to'],
        [`?from=${at(T0)}&to=${at(T0)}`, 'to'],
        ['?from=yesterday', 'from'],
        ['?to=2026-13-45T99:00:00Z', 'to'],
        [`?from=${at(T0 - 31 * DAY)}&to=${at(T0)}`, 'from'],
      ];
      for (const [query, field] of cases) {
        const res = await metrics(9, query);
        expect(res.status, query).toBe(400);
        expect(res.json, query).toMatchObject({ error: 'invalid_request', field });
      }
      expect((await metrics(9, `?from=${at(T0 - 30 * DAY)}&to=${at(T0)}`)).status).toBe(200);
    });

    it("shows an owner only its own instances' history", async () => {
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      const bobKey = await createApiKey(t.server.store, 'bob', false, T0);
      const token = await t.register(11, 'gpu-11', aliceKey);
      await t.beat(token, twoGpus(11, 10, 20));
      await t.server.history.flush();
      expect((await metrics(11, '', aliceKey)).json.gpus).toHaveLength(2);
      const other = await metrics(11, '', bobKey);
      expect(other.status).toBe(404);
      expect(other.json).toMatchObject({ error: 'not_found', field: 'instance_id' });
      expect(other.text).not.toContain('alice');
      // The same answer as an instance that does not exist.
      expect((await metrics(12, '', bobKey)).json).toMatchObject({ error: 'not_found', field: 'instance_id' });
      expect((await metrics(11, '', null as unknown as string)).status).toBe(401);
    });

    it('averages a range that holds more than 1000 samples per GPU into at most 1000 points', async () => {
      await t.register(12);
      // 1800 samples per GPU over the last 7.5 hours (one every 15 s, the fastest the server keeps),
      // written straight into the batch.
      const start = T0 - 7.5 * HOUR;
      for (let i = 0; i < 1800; i++) t.server.history.record(12, start + i * 15_000, asBeat(twoGpus(12, i % 2 === 0 ? 0 : 100, null)));
      await t.server.history.flush();
      const res = await metrics(12, `?from=${new Date(start).toISOString()}&to=${new Date(T0).toISOString()}`);
      expect(res.json.resolution).toBe('raw');
      expect(res.json.step_seconds).toBeGreaterThan(0);
      for (const gpu of res.json.gpus) {
        expect(gpu.points.length).toBeGreaterThan(500);
        expect(gpu.points.length).toBeLessThanOrEqual(MAX_HISTORY_POINTS);
      }
      // Each step of GPU 0 averages alternating 0 and 100 samples; the spread keeps both ends.
      const middle = res.json.gpus[0].points[100];
      expect(middle).toMatchObject({ utilization_percent_min: 0, utilization_percent_max: 100 });
      expect(middle.utilization_percent).toBeGreaterThan(0);
      expect(middle.utilization_percent).toBeLessThan(100);
      expect(res.json.gpus[1].points[100]).toMatchObject({ utilization_percent: null, utilization_percent_min: null });
    });

    it('writes a batch of beats with one INSERT', async () => {
      const counter = new InsertCounter();
      const store = t.server.store;
      const history = new HistoryStore(kyselyOf(store).withPlugin(counter), store.dialect);
      const clock = new ManualClock(T0);
      const recorder = new HistoryRecorder(history, clock, { historyRawHours: 24, historyDays: 30 });
      await t.register(13);
      for (let i = 0; i < 300; i++) recorder.record(13, T0 + i * 1000, asBeat(twoGpus(13, i % 100, 5)));
      expect(counter.inserts).toBe(0);
      await recorder.flush();
      expect(counter.inserts).toBe(1);
      expect(await count('metric_samples')).toBe(600);
      // Nothing pending: a flush writes nothing.
      await recorder.flush();
      expect(counter.inserts).toBe(1);
    });

    it('creates its tables idempotently on a migrated store', async () => {
      await createHistoryTables(kyselyOf(t.server.store), t.server.store.dialect);
      expect(await count('metric_samples')).toBe(0);
    });
  });
}

describe('DUMONT_HISTORY=off (the benchmark baseline)', () => {
  it('records nothing and answers an empty history; a value other than on/off is refused', async () => {
    const backend = (await testBackends()).find((b) => b.name === 'sqlite')!;
    const db = await backend.open();
    const t = await new TestServer(async () => db.store, { DUMONT_HISTORY: 'off' }).start();
    try {
      const token = await t.register(9);
      expect((await t.beat(token, twoGpus(9, 10, 20))).status).toBe(200);
      await t.server.history.flush();
      const rows = await kyselyOf(t.server.store).selectFrom('metric_samples').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
      expect(Number(rows.n)).toBe(0);
      const res = await t.request('GET', '/api/v1/agent/instances/9/metrics');
      expect(res.status).toBe(200);
      expect(res.json.gpus.every((g: { points: unknown[] }) => g.points.length === 0)).toBe(true);
    } finally {
      await t.close();
      await db.dispose();
    }
    expect(() => new TestServer(async () => db.store, { DUMONT_HISTORY: 'maybe' })).toThrow('DUMONT_HISTORY=maybe: must be on or off');
  });
});

describe('sampling', () => {
  it('keeps at most one sample per instance per interval: a fast or retrying agent adds no rows', async () => {
    const backend = (await testBackends()).find((b) => b.name === 'sqlite')!;
    const db = await backend.open();
    const t = await new TestServer(async () => db.store).start();
    try {
      const token = await t.register(11);
      // Beats 5 s apart: with the default 30 s heartbeat interval one sample per 15 s is kept.
      for (let i = 0; i < 7; i++) {
        expect((await t.beat(token, twoGpus(11, 10 + i, 20))).status).toBe(200);
        t.clock.advance(5000);
      }
      await t.server.history.flush();
      const rows = await kyselyOf(t.server.store).selectFrom('metric_samples').select('at').execute();
      // Beats at 0, 5, …, 30 s: kept at 0, 15 and 30 s, two GPUs each.
      expect(rows.map((r) => Number(r.at) - T0).sort((a, b) => a - b)).toEqual([0, 0, 15_000, 15_000, 30_000, 30_000]);
    } finally {
      await t.close();
      await db.dispose();
    }
  });
});


describe('what a sample keeps for a replay', () => {
  it('the last activity on the server clock (its age on the agent clock) and whether a collector failed', () => {
    const beat = {
      instance_id: 3,
      timestamp: '2026-11-02T08:10:00Z',
      last_activity: '2026-11-02T08:09:00Z',
      gpus: [{ index: 0, utilization_percent: 1 }, { index: 1, utilization_percent: 2 }],
      collector_errors: [{ collector: 'sessions', message: 'utmp unreadable' }],
    } as HeartbeatRequest;
    // The agent's clock runs 5 minutes behind ours: the activity is a minute old either way.
    const at = Date.parse('2026-11-02T08:15:00Z');
    const rows = samplesOf(3, at, beat);
    expect(rows.map((r) => [r.gpu_index, r.last_activity_at, r.collector_error])).toEqual([
      [0, at - 60_000, 1],
      [1, at - 60_000, 1],
    ]);
    const quiet = samplesOf(3, at, { instance_id: 3, timestamp: '2026-11-02T08:10:00Z' } as HeartbeatRequest);
    expect(quiet).toMatchObject([{ gpu_index: -1, last_activity_at: null, collector_error: 0 }]);
  });
});
