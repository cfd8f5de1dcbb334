import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { loadConfig } from '../config.js';
import { HistoryStore, type HistorySample } from '../store/history.js';
import type { FleetStore } from '../store/store.js';
import { testBackends } from '../test-support/backends.js';
import { replayInstance } from '../test-support/replay-fixtures.js';
import { beatsOf, ReplayService } from './replay-service.js';

/**
 * The replay over a generated history with known answers, on each engine: the samples and savings
 * are written to the real tables, read back by the service, and every figure is checked exactly.
 */

const T0 = Date.parse('2026-11-02T08:00:00Z');
const MIN = 60_000;
const BEAT = 30_000;
const alice = { kind: 'operator', owner: 'alice', admin: false } as const;
const iso = (ms: number) => new Date(ms).toISOString();

/** Beats every 30 s in [from, to), each GPU at `utilization(at)`, no GPU process. */
function samples(instanceId: number, gpus: number, from: number, to: number, utilization: (at: number) => number): HistorySample[] {
  const rows: HistorySample[] = [];
  for (let at = from; at < to; at += BEAT) {
    for (let gpu = 0; gpu < gpus; gpu++) {
      rows.push({ instance_id: instanceId, at, gpu_index: gpu, utilization_percent: utilization(at), memory_used_mb: 10, temperature_celsius: 40, power_watts: 60, process_count: 0, active_users: 0 });
    }
  }
  return rows;
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`policy replay over the stored history (${backend.name})`, () => {
    let db: Awaited<ReturnType<typeof backend.open>>;
    let store: FleetStore;
    let service: ReplayService;
    let history: HistoryStore;
    const clock = new ManualClock(T0 + 3 * 60 * MIN);
    const config = loadConfig({});

    beforeEach(async () => {
      db = await backend.open();
      store = db.store;
      history = new HistoryStore(store.kysely, store.dialect);
      // [id, owner, GPUs, price per hour]: the GPU count the replay multiplies by is the instance's (its last beat's).
      const fleet = [[1, 'alice', 2, 2], [5, 'alice', 1, null], [6, 'alice', 1, null], [8, 'alice', 1, null], [2, 'alice', 1, 1], [3, 'bob', 1, 5], [4, 'alice', 1, null], [9, 'alice', 1, null], [10, 'alice', 1, 3]] as const;
      for (const [id, owner, gpus, price] of fleet) await replayInstance(store, id, owner, gpus, price, T0);
      const end = T0 + 150 * MIN;
      await history.insertSamples([
        // Idle two hours, then busy: 2 GPUs at $2/h.
        ...samples(1, 2, T0, end, (at) => (at < T0 + 120 * MIN ? 1 : 90)),
        // Busy throughout.
        ...samples(2, 1, T0, end, () => 60),
        // Another owner's idle machine: never in alice's replay.
        ...samples(3, 1, T0, end, () => 0),
        // Idle 20 minutes, then busy: a 10-minute threshold regrets it, a 30-minute one never fires.
        ...samples(4, 1, T0, end, (at) => (at < T0 + 20 * MIN ? 2 : 70)),
      ]);
      // What actually ran: instance 1 hibernated 0:40–2:00, instance 4 0:12–0:20, bob's machine too.
      await store.insertSavings({ instance_id: 1, owner: 'alice', kind: 'hibernated', started_at: T0 + 40 * MIN, ended_at: T0 + 120 * MIN, gpu_count: 2, price_per_hour: 2 });
      await store.insertSavings({ instance_id: 4, owner: 'alice', kind: 'hibernated', started_at: T0 + 12 * MIN, ended_at: T0 + 20 * MIN, gpu_count: 1, price_per_hour: null });
      await store.insertSavings({ instance_id: 3, owner: 'bob', kind: 'hibernated', started_at: T0, ended_at: T0 + 100 * MIN, gpu_count: 1, price_per_hour: 5 });
      service = new ReplayService(store, history, clock, config);
    });
    afterEach(async () => {
      await store.close();
      await db.dispose();
    });

    it('replays each threshold with exact figures beside what actually ran', async () => {
      const result = await service.replay(alice, { thresholdMinutes: [10, 30], warningSeconds: 0, regretMinutes: 60, from: T0, to: T0 + 180 * MIN });
      expect(result.from).toBe(iso(T0));
      expect(result.to).toBe(iso(T0 + 180 * MIN));
      expect(result.policies).toEqual([
        {
          threshold_minutes: 10,
          utilization_percent: 5,
          warning_seconds: 0,
          // Instance 1 off from 0:10 to 2:00 (1.8333 h × 2 GPUs × $2), instance 4 from 0:10 to 0:20.
          hibernations: 2,
          gpu_hours_saved: 3.8334,
          usd_saved: 3.6667,
          regrets: [{ instance_id: 4, hibernated_at: iso(T0 + 10 * MIN), busy_again_at: iso(T0 + 20 * MIN) }],
          instances: [
            { instance_id: 1, hibernations: 1, gpu_hours_saved: 3.6667, usd_saved: 3.6667, regret_count: 0 },
            { instance_id: 4, hibernations: 1, gpu_hours_saved: 0.1667, usd_saved: 0, regret_count: 1 },
          ],
        },
        {
          threshold_minutes: 30,
          utilization_percent: 5,
          warning_seconds: 0,
          hibernations: 1,
          gpu_hours_saved: 3,
          usd_saved: 3,
          regrets: [],
          instances: [{ instance_id: 1, hibernations: 1, gpu_hours_saved: 3, usd_saved: 3, regret_count: 0 }],
        },
      ]);
      // 1:20 × 2 GPUs × $2 and 0:08 × 1 GPU; the 8-minute stop was woken within the hour: a regret.
      expect(result.actual).toEqual({
        hibernations: 2,
        gpu_hours_saved: 2.8,
        usd_saved: 2.6667,
        regrets: [{ instance_id: 4, hibernated_at: iso(T0 + 12 * MIN), busy_again_at: iso(T0 + 20 * MIN) }],
        instances: [
          { instance_id: 1, hibernations: 1, gpu_hours_saved: 2.6667, usd_saved: 2.6667, regret_count: 0 },
          { instance_id: 4, hibernations: 1, gpu_hours_saved: 0.1333, usd_saved: 0, regret_count: 1 },
        ],
      });
    });

    it('a recorded activity, a collector error or a beat without GPUs keeps a machine from counting as idle', async () => {
      const end = T0 + 150 * MIN;
      const at25 = T0 + 25 * MIN;
      await history.insertSamples([
        // Someone worked on it until 0:50 (GPUs idle all along): the idle streak starts there.
        ...samples(5, 1, T0, end, () => 1).map((s) => ({ ...s, last_activity_at: Math.min(s.at, T0 + 50 * MIN), collector_error: 0 })),
        // A collector failed at 0:25: that beat's facts are unknown, the streak starts again after it.
        ...samples(6, 1, T0, end, () => 1).map((s) => ({ ...s, last_activity_at: null, collector_error: s.at === at25 ? 1 : 0 })),
        // The beat at 0:25 reported no GPU at all (only the host row, gpu_index -1).
        ...samples(8, 1, T0, end, () => 1)
          .map((s) => (s.at === at25 ? { ...s, gpu_index: -1, utilization_percent: null } : s))
          .map((s) => ({ ...s, last_activity_at: null, collector_error: 0 })),
      ]);
      const result = await service.replay(alice, { thresholdMinutes: [10, 30], warningSeconds: 0, from: T0, to: T0 + 180 * MIN, instanceIds: [5, 6, 8] });
      const hours = (minutes: number) => Math.round((minutes / 60) * 10_000) / 10_000;
      // 10 minutes: off at 0:10, and the unknown beat at 0:25 is demand (a regret), then off again at
      // 0:35:30 until the end. 30 minutes: the unknown beat comes first and restarts the streak.
      const unknownBeat = (threshold: number) =>
        threshold === 10
          ? { hibernations: 2, gpu_hours_saved: hours(15 + 144.5), usd_saved: 0, regret_count: 1 }
          : { hibernations: 1, gpu_hours_saved: hours(180 - 55.5), usd_saved: 0, regret_count: 0 };
      const figures = (threshold: number) => [
        { instance_id: 5, hibernations: 1, gpu_hours_saved: hours(180 - 50 - threshold), usd_saved: 0, regret_count: 0 },
        { instance_id: 6, ...unknownBeat(threshold) },
        { instance_id: 8, ...unknownBeat(threshold) },
      ];
      expect(result.policies.map((p) => p.instances)).toEqual([figures(10), figures(30)]);
      expect(result.policies.map((p) => p.gpu_hours_saved)).toEqual([7.3166, 5.8167]);
    });

    it('counts what actually ran as a replayed policy: hibernations that began in the range, regrets woken before `to`', async () => {
      // Instance 1 was off 0:40–2:00: begun before 1:00, so not in a replay from 1:00, whose policies
      // cannot save from an earlier hibernation either.
      const later = await service.replay(alice, { thresholdMinutes: [10], warningSeconds: 0, from: T0 + 60 * MIN, to: T0 + 180 * MIN });
      expect(later.actual).toEqual({ hibernations: 0, gpu_hours_saved: 0, usd_saved: 0, regrets: [], instances: [] });
      // Instance 4 was off 0:12–0:20: up to 0:15 it is a hibernation still off, not a regret.
      const early = await service.replay(alice, { thresholdMinutes: [10], warningSeconds: 0, from: T0, to: T0 + 15 * MIN, instanceIds: [4] });
      expect(early.actual).toEqual({
        hibernations: 1,
        gpu_hours_saved: 0.05,
        usd_saved: 0,
        regrets: [],
        instances: [{ instance_id: 4, hibernations: 1, gpu_hours_saved: 0.05, usd_saved: 0, regret_count: 0 }],
      });
    });

    it('flapping around the utilization threshold, and a silent gap', async () => {
      const end = T0 + 150 * MIN;
      await history.insertSamples([
        // 4.9 % (idle) for 19.5 minutes, then one beat at 5 % (busy), every 20 minutes.
        ...samples(9, 1, T0, end, (at) => ((at - T0) % (20 * MIN) === 19.5 * MIN ? 5 : 4.9)),
        // Idle, but silent from 0:20 to 0:40: offline, so silence never counts as idle time.
        ...samples(10, 1, T0, end, () => 0).filter((s) => s.at < T0 + 20 * MIN || s.at >= T0 + 40 * MIN),
      ]);
      const result = await service.replay(alice, { thresholdMinutes: [10, 30], warningSeconds: 0, from: T0, to: T0 + 180 * MIN, instanceIds: [9, 10] });
      const hours = (minutes: number) => Math.round((minutes / 60) * 10_000) / 10_000;
      // 10 minutes: instance 9 is stopped 10 minutes into each of its streaks and woken 9.5 minutes
      // later by the 5 % beat (7 times; the eighth streak ends with the samples, at 2:29:30, before its
      // 2:30 deadline). Instance 10 is stopped at 0:10, before its silence, and never woken.
      // 30 minutes: instance 9's streaks are too short; instance 10's restarts after the silence, at 0:40.
      const flapping = Array.from({ length: 7 }, (_, k) => ({ instance_id: 9, hibernated_at: iso(T0 + (20 * k + 10) * MIN), busy_again_at: iso(T0 + (20 * k + 19.5) * MIN) }));
      expect(result.policies.map(({ hibernations, gpu_hours_saved, usd_saved, regrets, instances }) => ({ hibernations, gpu_hours_saved, usd_saved, regrets, instances }))).toEqual([
        {
          hibernations: 8,
          gpu_hours_saved: hours(7 * 9.5) + hours(170),
          usd_saved: 8.5,
          regrets: flapping,
          instances: [
            { instance_id: 9, hibernations: 7, gpu_hours_saved: hours(7 * 9.5), usd_saved: 0, regret_count: 7 },
            { instance_id: 10, hibernations: 1, gpu_hours_saved: hours(170), usd_saved: 8.5, regret_count: 0 },
          ],
        },
        {
          hibernations: 1,
          gpu_hours_saved: hours(110),
          usd_saved: 5.5,
          regrets: [],
          instances: [{ instance_id: 10, hibernations: 1, gpu_hours_saved: hours(110), usd_saved: 5.5, regret_count: 0 }],
        },
      ]);
    });

    it('the server warning delays each hibernation, and named instances limit the replay', async () => {
      const result = await service.replay(alice, { thresholdMinutes: [10], regretMinutes: 60, from: T0, to: T0 + 180 * MIN, instanceIds: [1] });
      // Fired 5 minutes (DUMONT_HIBERNATION_WARNING_SECONDS) after the threshold: off 0:15–2:00.
      expect(result.policies[0]).toMatchObject({ warning_seconds: 300, hibernations: 1, gpu_hours_saved: 3.5, usd_saved: 3.5, regrets: [] });
      expect(result.actual).toMatchObject({ hibernations: 1, gpu_hours_saved: 2.6667, regrets: [] });
    });

    it('refuses what it cannot answer, naming the field, and never shows another owner\'s machine', async () => {
      const refused = async (query: Parameters<ReplayService['replay']>[1]) => {
        try {
          await service.replay(alice, query);
        } catch (error) {
          return { code: (error as { code?: string }).code, field: (error as { field?: string }).field };
        }
        return null;
      };
      expect(await refused({ thresholdMinutes: [0] })).toEqual({ code: 'invalid_request', field: 'threshold_minutes' });
      expect(await refused({ thresholdMinutes: [] })).toEqual({ code: 'invalid_request', field: 'threshold_minutes' });
      expect(await refused({ thresholdMinutes: [10], from: T0 + 60 * MIN, to: T0 + 60 * MIN })).toEqual({ code: 'invalid_request', field: 'to' });
      expect(await refused({ thresholdMinutes: [10], from: clock.now() - 31 * 24 * 60 * MIN })).toEqual({ code: 'invalid_request', field: 'from' });
      expect(await refused({ thresholdMinutes: [10], utilizationPercent: 0 })).toEqual({ code: 'invalid_request', field: 'utilization_percent' });
      expect(await refused({ thresholdMinutes: [10], instanceIds: [3] })).toEqual({ code: 'not_found', field: 'instance' });
      expect(await refused({ thresholdMinutes: [10], instanceIds: [99] })).toEqual({ code: 'not_found', field: 'instance' });
      // An admin sees bob's idle machine too: one more hibernation at the same threshold.
      const all = await service.replay({ kind: 'operator', owner: 'root', admin: true }, { thresholdMinutes: [30], warningSeconds: 0, from: T0, to: T0 + 180 * MIN });
      expect(all.policies[0]!.hibernations).toBe(2);
    });
  });
}

describe('beats from stored samples', () => {
  it('one beat per time, GPUs in index order, no GPU row means unknown utilization', () => {
    const row = (at: number, gpu_index: number, utilization_percent: number | null) =>
      ({ instance_id: 1, at, gpu_index, utilization_percent, memory_used_mb: null, temperature_celsius: null, power_watts: null, process_count: 3, active_users: null }) as HistorySample;
    expect(beatsOf([row(2, 1, 50), row(1, 0, 1), { ...row(2, 0, 2), last_activity_at: 2, collector_error: 1 }, row(3, -1, null)])).toEqual([
      { at: 1, utilizations: [1], processCount: 3, lastActivityAt: null, collectorError: false },
      { at: 2, utilizations: [2, 50], processCount: 3, lastActivityAt: 2, collectorError: true },
      { at: 3, utilizations: [], processCount: 3, lastActivityAt: null, collectorError: false },
    ]);
  });
});
