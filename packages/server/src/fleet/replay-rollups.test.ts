import type { Kysely } from 'kysely';
import { judgeIdle } from '@dumont/protocol';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { loadConfig } from '../config.js';
import { replay, type ReplayBeat } from '../policy/replay.js';
import { HistoryStore, type HistorySample, type RollupRow } from '../store/history.js';
import type { FleetStore } from '../store/store.js';
import { testBackends } from '../test-support/backends.js';
import { replayInstance } from '../test-support/replay-fixtures.js';
import { HistoryRecorder } from './history-recorder.js';
import { beatsOf, MAX_REPLAY_THRESHOLDS, ReplayService, rollupBeatsOf } from './replay-service.js';

/**
 * A replay beyond raw retention reads the 5-minute rollups. These tests write raw samples to the real
 * tables, roll them up with the server's own query, prune the raw ones, and check that the replay
 * over what is left gives exact known answers, and (property) never hibernates where the raw beats
 * it summarises were not idle for the whole threshold.
 */

const T0 = Date.parse('2026-11-02T08:00:00Z');
const S = 1000;
const MIN = 60 * S;
const H = 60 * MIN;
const BEAT = 30 * S;
const alice = { kind: 'operator', owner: 'alice', admin: false } as const;
const iso = (ms: number) => new Date(ms).toISOString();
const TIMING = { heartbeatIntervalMs: BEAT, offlineAfterMs: 90 * S };

interface BeatSpec {
  at: number;
  utilizations: (number | null)[];
  processCount?: number | null;
  lastActivityAt?: number | null;
  collectorError?: boolean;
}

function rowsOf(instanceId: number, beats: readonly BeatSpec[]): HistorySample[] {
  return beats.flatMap((beat): HistorySample[] => {
    const common = {
      instance_id: instanceId,
      at: beat.at,
      process_count: beat.processCount === undefined ? 0 : beat.processCount,
      active_users: 0,
      last_activity_at: beat.lastActivityAt ?? null,
      collector_error: beat.collectorError ? 1 : 0,
    };
    if (beat.utilizations.length === 0) {
      return [{ ...common, gpu_index: -1, utilization_percent: null, memory_used_mb: null, temperature_celsius: null, power_watts: null }];
    }
    return beat.utilizations.map((utilization, gpu) => ({ ...common, gpu_index: gpu, utilization_percent: utilization, memory_used_mb: 10, temperature_celsius: 40, power_watts: 60 }));
  });
}

/** Beats every 30 s in [from, to) but in `gaps`, each GPU at `utilization(at)`. */
function steady(gpus: number, from: number, to: number, utilization: (at: number) => number, gaps: [number, number][] = []): BeatSpec[] {
  const beats: BeatSpec[] = [];
  for (let at = from; at < to; at += BEAT) {
    if (gaps.some(([a, b]) => at >= a && at < b)) continue;
    beats.push({ at, utilizations: Array.from({ length: gpus }, () => utilization(at)) });
  }
  return beats;
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`policy replay over rollups, beyond raw retention (${backend.name})`, () => {
    let db: Awaited<ReturnType<typeof backend.open>>;
    let store: FleetStore;
    let history: HistoryStore;
    let service: ReplayService;
    // Raw samples are kept 24 h: from T0 + 6 h on. The recorded 2.5 h at T0 survive only as rollups.
    const clock = new ManualClock(T0 + 30 * H);
    const config = loadConfig({});

    beforeEach(async () => {
      db = await backend.open();
      store = db.store;
      history = new HistoryStore(store.kysely, store.dialect);
      for (const [instanceId, gpus, price] of [[1, 2, 2], [2, 1, 1], [6, 1, null], [8, 1, null]] as const) await replayInstance(store, instanceId, 'alice', gpus, price, T0);
      const end = T0 + 150 * MIN;
      await history.insertSamples([
        // Idle two hours, then busy: 2 GPUs at $2/h.
        ...rowsOf(1, steady(2, T0, end, (at) => (at < T0 + 120 * MIN ? 1 : 90))),
        // Idle but for one beat at 50 % at 1:02:30.
        ...rowsOf(6, steady(1, T0, end, (at) => (at === T0 + 62.5 * MIN ? 50 : 0))),
        // Idle, silent 1:30–1:32 (two and a half minutes between beats: offline).
        ...rowsOf(8, steady(1, T0, end, () => 0, [[T0 + 90 * MIN, T0 + 92 * MIN]])),
        // Within raw retention: idle 40 minutes.
        ...rowsOf(2, steady(1, T0 + 6 * H, T0 + 6 * H + 40 * MIN, () => 0)),
      ]);
      await history.rollUp(T0, end);
      expect((await history.prune(T0 + 6 * H, 0)).samples).toBe((2 * 300 + 300 + 296) as number);
      service = new ReplayService(store, history, clock, config);
    });
    afterEach(async () => {
      await store.close();
      await db.dispose();
    });

    it('replays the rollups with exact figures: a bucket with a busy beat is busy, one with a silence unknown', async () => {
      const result = await service.replay(alice, { thresholdMinutes: [10, 30], warningSeconds: 0, from: T0, to: T0 + 180 * MIN, instanceIds: [1, 6, 8] });
      expect(result.raw_from).toBe(iso(T0 + 180 * MIN));
      // The first bucket is each instance's first: the silence before it is unknown, so idle time
      // starts at 0:05. Instance 1: off 0:15 (0:35) to 2:00. Instance 6: the bucket of its 1:02:30
      // spike is busy from 1:00, idle again from 1:05. Instance 8: the bucket of its silence is
      // unknown from its first beat (1:32), idle again from 1:35. Both stay off until `to` (3:00).
      expect(result.policies.map(({ threshold_minutes, hibernations, gpu_hours_saved, usd_saved, regrets, instances }) => ({ threshold_minutes, hibernations, gpu_hours_saved, usd_saved, regrets, instances }))).toEqual([
        {
          threshold_minutes: 10,
          hibernations: 5,
          gpu_hours_saved: 3.5 + 2.5 + 2.5333,
          usd_saved: 3.5,
          regrets: [{ instance_id: 6, hibernated_at: iso(T0 + 15 * MIN), busy_again_at: iso(T0 + 60 * MIN) }],
          instances: [
            { instance_id: 1, hibernations: 1, gpu_hours_saved: 3.5, usd_saved: 3.5, regret_count: 0 },
            { instance_id: 6, hibernations: 2, gpu_hours_saved: 2.5, usd_saved: 0, regret_count: 1 },
            { instance_id: 8, hibernations: 2, gpu_hours_saved: 2.5333, usd_saved: 0, regret_count: 0 },
          ],
        },
        {
          threshold_minutes: 30,
          hibernations: 5,
          gpu_hours_saved: 2.8333 + 1.8333 + 1.8667,
          usd_saved: 2.8333,
          regrets: [
            { instance_id: 6, hibernated_at: iso(T0 + 35 * MIN), busy_again_at: iso(T0 + 60 * MIN) },
            { instance_id: 8, hibernated_at: iso(T0 + 35 * MIN), busy_again_at: iso(T0 + 92 * MIN) },
          ],
          instances: [
            { instance_id: 1, hibernations: 1, gpu_hours_saved: 2.8333, usd_saved: 2.8333, regret_count: 0 },
            { instance_id: 6, hibernations: 2, gpu_hours_saved: 1.8333, usd_saved: 0, regret_count: 1 },
            { instance_id: 8, hibernations: 2, gpu_hours_saved: 1.8667, usd_saved: 0, regret_count: 1 },
          ],
        },
      ]);
    });

    it('a range across the raw-retention boundary replays rollups before it and raw samples after', async () => {
      const result = await service.replay(alice, { thresholdMinutes: [10], warningSeconds: 0, from: T0, to: T0 + 7 * H, instanceIds: [1, 2] });
      expect(result.raw_from).toBe(iso(T0 + 6 * H));
      // Instance 1 as above; instance 2's raw beats start at 6:00: off from 6:10 to `to`, 50 minutes at $1/h.
      expect(result.policies[0]!.instances).toEqual([
        { instance_id: 1, hibernations: 1, gpu_hours_saved: 3.5, usd_saved: 3.5, regret_count: 0 },
        { instance_id: 2, hibernations: 1, gpu_hours_saved: 0.8333, usd_saved: 0.8333, regret_count: 0 },
      ]);
    });

    it('rolls up the same rows one instance per statement as all at once', async () => {
      await history.insertSamples([...rowsOf(1, steady(2, T0 + 6 * H, T0 + 6 * H + 20 * MIN, () => 3)), ...rowsOf(6, steady(1, T0 + 6 * H + 7 * MIN, T0 + 6 * H + 30 * MIN, () => 40))]);
      const range = [T0 + 6 * H, T0 + 7 * H] as const;
      const all = async () => (await Promise.all([1, 2, 6, 8].map((id) => history.rollups(id, range[0], range[1], { beats: true })))).flat();
      await history.rollUp(...range);
      const together = await all();
      expect(new Set(together.map((r) => r.instance_id))).toEqual(new Set([1, 2, 6]));
      await (store.kysely as Kysely<any>).deleteFrom('metric_rollups').where('bucket_at', '>=', range[0]).execute();
      expect(await all()).toEqual([]);
      await history.rollUp(...range, { instancesPerStatement: 1 });
      expect(await all()).toEqual(together);
    });

    it('a bucket partly pruned and rolled up again (a restart) keeps the rollup made while it was whole', async () => {
      const start = T0 + 6 * H; // instance 2's raw beats, 6:00–6:40
      await history.rollUp(start, start + 5 * MIN);
      const whole = await history.rollups(2, start, start + 1);
      expect(whole).toMatchObject([{ samples: 10, first_at: start, last_at: start + 4.5 * MIN, silence_max: 5 * MIN }]);
      await history.prune(start + 2.5 * MIN, 0);
      await history.rollUp(start - 30 * 24 * H, start + 5 * MIN);
      expect(await history.rollups(2, start, start + 1)).toEqual(whole);
    });

    it('the history of only a `to`: the raw retention’s length before it, from rollups', async () => {
      const result = await service.replay(alice, { thresholdMinutes: [10], warningSeconds: 0, to: T0 + 180 * MIN, instanceIds: [1] });
      expect(result).toMatchObject({ from: iso(T0 + 180 * MIN - 24 * H), to: iso(T0 + 180 * MIN), raw_from: iso(T0 + 180 * MIN) });
      expect(result.policies[0]!.instances).toEqual([{ instance_id: 1, hibernations: 1, gpu_hours_saved: 3.5, usd_saved: 3.5, regret_count: 0 }]);
    });

    it('refuses a range older than the rollups are kept, naming from and the setting', async () => {
      await expect(service.replay(alice, { thresholdMinutes: [10], from: clock.now() - 31 * 24 * H })).rejects.toMatchObject({ code: 'invalid_request', field: 'from', message: expect.stringContaining('DUMONT_HISTORY_DAYS') });
    });
  });
}

describe('beats rebuilt from rollups', () => {
  const bucket = (gpuIndex: number, fields: Partial<RollupRow>): RollupRow =>
    ({
      instance_id: 1,
      bucket_at: T0,
      gpu_index: gpuIndex,
      samples: 10,
      utilization_percent_max: 2,
      process_count_max: 0,
      last_activity_at_max: null,
      collector_error_max: 0,
      utilization_unknown: 0,
      process_count_unknown: 0,
      silence_max: BEAT,
      first_at: T0 + 3 * S,
      last_at: T0 + 3 * S + 9 * BEAT,
      ...fields,
    }) as RollupRow;

  it('spreads the samples from the first to the last, each GPU at its maximum', () => {
    const beats = rollupBeatsOf([bucket(0, { utilization_percent_max: 4 }), bucket(1, { utilization_percent_max: 1 })], TIMING);
    expect(beats.map((b) => b.at)).toEqual(Array.from({ length: 10 }, (_, k) => T0 + 3 * S + k * BEAT));
    expect(beats.every((b) => b.utilizations.join() === '4,1' && b.processCount === 0 && !b.collectorError && b.lastActivityAt === null)).toBe(true);
  });

  it('a silence as long as the offline window, or a bucket from before its silences were kept, is unknown', () => {
    for (const rows of [[bucket(0, { silence_max: 90 * S })], [bucket(0, { silence_max: null, first_at: null, last_at: null })]]) {
      const beats = rollupBeatsOf(rows, TIMING);
      expect(beats.length).toBeGreaterThan(0);
      expect(beats.every((b) => b.collectorError && b.utilizations.every((u) => u === null))).toBe(true);
    }
  });

  it('an unknown sample, a GPU missing from a beat, a beat without GPUs or a collector error is never hidden by a maximum', () => {
    expect(rollupBeatsOf([bucket(0, { utilization_unknown: 1 }), bucket(1, {})], TIMING)[0]!.utilizations).toEqual([null, 2]);
    expect(rollupBeatsOf([bucket(0, {}), bucket(1, { samples: 9 })], TIMING)[0]!.utilizations).toEqual([2, null]);
    expect(rollupBeatsOf([bucket(-1, { utilization_percent_max: null, samples: 1 }), bucket(0, {})], TIMING)[0]!.utilizations).toEqual([]);
    expect(rollupBeatsOf([bucket(0, { process_count_unknown: 2 })], TIMING)[0]!.processCount).toBeNull();
    expect(rollupBeatsOf([bucket(0, { collector_error_max: 1 })], TIMING).every((b) => b.collectorError)).toBe(true);
  });

  it('the latest activity counts as "now" on every beat up to it', () => {
    const activity = T0 + 3 * S + 4 * BEAT + 10 * S;
    const beats = rollupBeatsOf([bucket(0, { last_activity_at_max: activity })], TIMING);
    expect(beats.map((b) => b.lastActivityAt)).toEqual(beats.map((b) => Math.min(b.at, activity)));
  });
});

describe('a replay over rollups never hibernates where the raw beats were not idle for the threshold (property)', () => {
  let db: Awaited<ReturnType<Awaited<ReturnType<typeof testBackends>>[number]['open']>>;
  let history: HistoryStore;
  let nextId = 1000;
  beforeAll(async () => {
    db = await (await testBackends()).find((b) => b.name === 'sqlite')!.open();
    history = new HistoryStore(db.store.kysely, db.store.dialect);
  });
  afterAll(async () => {
    await db.store.close();
    await db.dispose();
  });

  const utilization: fc.Arbitrary<number | null> = fc.oneof({ weight: 12, arbitrary: fc.constantFrom(0, 1, 3, 4.9) }, { weight: 2, arbitrary: fc.constantFrom(5, 30, 99) }, { weight: 1, arbitrary: fc.constant(null) });
  const step = fc.record({
    // Jittered beats.
    delay: fc.integer({ min: 25 * S, max: 35 * S }),
    utilizations: fc.oneof({ weight: 20, arbitrary: fc.array(utilization, { minLength: 2, maxLength: 2 }) }, { weight: 1, arbitrary: fc.constant<(number | null)[]>([]) }),
    processCount: fc.oneof({ weight: 30, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1, null) }),
    active: fc.oneof({ weight: 40, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    collectorError: fc.oneof({ weight: 40, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  });
  // Idle most of the time so that hibernations happen: long runs of the same step.
  const history$ = fc.array(fc.tuple(step, fc.integer({ min: 1, max: 40 }), fc.boolean()), { minLength: 3, maxLength: 25 });
  // Now and then a silence before a beat (by its position), some as long as the offline window.
  const silences$ = fc.array(fc.tuple(fc.nat(400), fc.integer({ min: 20 * S, max: 5 * MIN })), { maxLength: 8 });

  it('holds over random histories', async () => {
    let hibernations = 0;
    await fc.assert(
      fc.asyncProperty(history$, silences$, fc.constantFrom(1, 2, 5, 10), fc.integer({ min: 0, max: 4 * MIN }), async (runs, silences, thresholdMinutes, offset) => {
        const instanceId = nextId++;
        const beats: BeatSpec[] = [];
        let at = T0 + offset;
        let lastActivity: number | null = null;
        for (const [spec, repeat, quiet] of runs) {
          for (let i = 0; i < repeat; i++) {
            at += spec.delay + silences.filter(([index]) => index === beats.length).reduce((total, [, extra]) => total + extra, 0);
            if (spec.active && !quiet) lastActivity = at - 5 * S;
            beats.push({
              at,
              utilizations: quiet ? spec.utilizations.map(() => 0) : spec.utilizations,
              processCount: quiet ? 0 : spec.processCount,
              lastActivityAt: lastActivity,
              collectorError: !quiet && spec.collectorError,
            });
          }
        }
        // The rollup reads each instance's samples through the instances table.
        await db.store.insertInstance({ instanceId, owner: 'alice', agentTokenHash: `hash-${instanceId}`, hostname: `gpu-${instanceId}`, registeredAt: T0, settings: {} });
        await history.insertSamples(rowsOf(instanceId, beats));
        const to = at + 1;
        await history.rollUp(T0, to);
        const fromRollups = rollupBeatsOf(await history.rollups(instanceId, T0, to, { beats: true }), TIMING);
        const raw = beatsOf(await history.samples(instanceId, T0, to, { beats: true }));
        const settings = { offlineAfterSeconds: 90, hibernateTimeoutSeconds: 600, freshnessSeconds: 30, wakeTimeoutSeconds: 600 };
        const report = replay(
          [{ instanceId, gpuCount: 2, pricePerHour: null, beats: fromRollups }],
          { thresholdMinutes, utilizationPercent: 5, warningSeconds: 0, ignoreGpuProcesses: false },
          { from: T0, to, regretMinutes: 60, settings },
        );
        const rule = { idleUtilizationPercent: 5, ignoreGpuProcesses: false };
        const quietSince = (beat: ReplayBeat, since: number) =>
          judgeIdle({ utilizations: beat.utilizations, processCount: beat.processCount, failedCollectors: beat.collectorError ? ['x'] : [] }, rule).idle &&
          (beat.lastActivityAt === null || beat.lastActivityAt <= since);
        hibernations += report.instances[0]!.timeline.length;
        for (const { hibernated_at } of report.instances[0]!.timeline) {
          const h = Date.parse(hibernated_at);
          const start = h - thresholdMinutes * MIN;
          // A raw idle streak began at or before h − T and ran, without an offline silence, through h.
          const before = raw.filter((b) => b.at <= start);
          const streak = raw.filter((b) => b.at > start && b.at <= h);
          const opening = before[before.length - 1];
          expect(opening, `no raw beat before ${iso(start)}`).toBeDefined();
          const span = [opening!, ...streak];
          for (const beat of span) expect(quietSince(beat, start), `raw beat ${iso(beat.at)} busy before hibernating at ${hibernated_at}`).toBe(true);
          const times = [...span.map((b) => b.at), h];
          for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!, `silence before ${iso(times[i]!)}`).toBeLessThan(90 * S);
        }
      }),
      { numRuns: 150 },
    );
    // The histories are idle enough that the replay does hibernate (else the property says nothing).
    expect(hibernations).toBeGreaterThan(100);
  });
});

describe('what the recorder keeps for a replay', () => {
  let db: Awaited<ReturnType<Awaited<ReturnType<typeof testBackends>>[number]['open']>>;
  let history: HistoryStore;
  beforeEach(async () => {
    db = await (await testBackends()).find((b) => b.name === 'sqlite')!.open();
    history = new HistoryStore(db.store.kysely, db.store.dialect);
    await db.store.insertInstance({ instanceId: 1, owner: 'alice', agentTokenHash: 'hash-1', hostname: 'gpu-1', registeredAt: T0, settings: {} });
  });
  afterEach(async () => {
    await db.store.close();
    await db.dispose();
  });
  const beat = (utilization: number | null, processes = 0, lastActivity: string | null = null) => ({
    hostname: 'gpu-1',
    timestamp: new Date(T0).toISOString(),
    instance_id: 1,
    process_count: processes,
    ...(lastActivity ? { last_activity: lastActivity } : {}),
    gpus: [{ index: 0, utilization_percent: utilization }],
  });

  it('a beat sooner than the sampling interval is kept when it may be busier than the last one kept', async () => {
    const clock = new ManualClock(T0);
    const recorder = new HistoryRecorder(history, clock, { historyRawHours: 24, historyDays: 30 }, { minSampleIntervalMs: 15 * S });
    const at = (seconds: number) => T0 + seconds * S;
    recorder.record(1, at(0), beat(1));
    recorder.record(1, at(5), beat(0)); // quieter: dropped
    recorder.record(1, at(6), beat(60)); // a busy GPU: kept
    recorder.record(1, at(7), beat(null)); // unknown: kept
    recorder.record(1, at(8), beat(0, 1)); // a GPU process: kept
    recorder.record(1, at(9), beat(0, 1, new Date(T0 - 10 * S).toISOString())); // activity 10 s before the beat: kept
    recorder.record(1, at(10), beat(0, 1, new Date(T0 - 10 * S).toISOString())); // the same activity: dropped
    recorder.record(1, at(30), beat(0)); // the interval has passed: kept
    await recorder.flush();
    expect((await history.samples(1, T0, T0 + H)).map((s) => (s.at - T0) / S)).toEqual([0, 6, 7, 8, 9, 30]);
  });

  it('maintenance writes what was recorded before it rolls up its bucket', async () => {
    const clock = new ManualClock(T0);
    const recorder = new HistoryRecorder(history, clock, { historyRawHours: 24, historyDays: 30 });
    for (let i = 0; i < 10; i++) recorder.record(1, T0 + i * BEAT, beat(1));
    clock.set(T0 + 6 * MIN);
    await recorder.maintain();
    expect(await history.rollups(1, T0, T0 + 1)).toMatchObject([{ samples: 10 }]);
  });
});

describe('the replay service on SQLite', () => {
  let db: Awaited<ReturnType<Awaited<ReturnType<typeof testBackends>>[number]['open']>>;
  let service: ReplayService;
  const clock = new ManualClock(T0 + 3 * H);
  beforeAll(async () => {
    db = await (await testBackends()).find((b) => b.name === 'sqlite')!.open();
    const history = new HistoryStore(db.store.kysely, db.store.dialect);
    for (const [instanceId, ignoreGpuProcesses] of [[1, false], [2, true], [3, false], [4, false]] as const) {
      await db.store.insertInstance({ instanceId, owner: 'alice', agentTokenHash: `hash-${instanceId}`, hostname: null, registeredAt: T0, settings: { ignoreGpuProcesses, pricePerHour: 1 } });
      // Idle GPUs, but a resident GPU process throughout.
      await history.insertSamples(rowsOf(instanceId, steady(1, T0, T0 + 2 * H, () => 0).map((b) => ({ ...b, processCount: 1 }))));
    }
    service = new ReplayService(db.store, history, clock, loadConfig({}));
  });
  afterAll(async () => {
    await db.store.close();
    await db.dispose();
  });

  it("judges each instance by its own 'ignore GPU processes' setting, as the running policy does", async () => {
    const result = await service.replay(alice, { thresholdMinutes: [10], warningSeconds: 0, from: T0, to: T0 + 3 * H });
    expect(result.policies[0]!.instances.map((i) => i.instance_id)).toEqual([2]);
  });

  it('a `to` after now is now: nothing that has not happened is counted', async () => {
    const later = await service.replay(alice, { thresholdMinutes: [10], warningSeconds: 0, from: T0, to: T0 + 1000 * H, instanceIds: [2] });
    const now = await service.replay(alice, { thresholdMinutes: [10], warningSeconds: 0, from: T0, to: clock.now(), instanceIds: [2] });
    expect(later.to).toBe(iso(clock.now()));
    expect(later).toEqual(now);
    expect(now.policies[0]!.usd_saved).toBe(Math.round(((3 * 60 - 10) / 60) * 10_000) / 10_000);
  });

  it(`takes at most ${MAX_REPLAY_THRESHOLDS} thresholds, naming the field`, async () => {
    const thresholds = Array.from({ length: MAX_REPLAY_THRESHOLDS + 1 }, (_, i) => i + 1);
    await expect(service.replay(alice, { thresholdMinutes: thresholds, from: T0 })).rejects.toMatchObject({ code: 'invalid_request', field: 'threshold_minutes' });
    expect((await service.replay(alice, { thresholdMinutes: thresholds.slice(1), from: T0 })).policies).toHaveLength(MAX_REPLAY_THRESHOLDS);
  });

  it('lets the event loop turn between instances (on SQLite every query answers at once)', async () => {
    let turns = 0;
    let running = true;
    const spin = () => {
      if (!running) return;
      turns += 1;
      setImmediate(spin);
    };
    setImmediate(spin);
    const before = turns;
    await service.replay(alice, { thresholdMinutes: [10, 20, 30], from: T0 });
    running = false;
    expect(turns - before).toBeGreaterThanOrEqual(4);
  });
});
