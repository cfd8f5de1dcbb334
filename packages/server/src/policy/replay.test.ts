import { judgeIdle } from '@dumont/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { replay, type ReplayBeat, type ReplayInstance, type ReplayOptions, type ReplayPolicy, type ReplaySettings } from './replay.js';

const S = 1000;
const MIN = 60 * S;
const HOUR = 60 * MIN;
const T0 = Date.parse('2026-01-01T00:00:00Z');
/** Agents beat every 30 s. */
const BEAT = 30 * S;
const iso = (ms: number) => new Date(ms).toISOString();

const config = loadConfig({});
/** The server's defaults, not a copy of them; the hand-computed answers below assume these values. */
const settings: ReplaySettings = {
  offlineAfterSeconds: config.offlineAfterSeconds,
  hibernateTimeoutSeconds: config.hibernateTimeoutSeconds,
  freshnessSeconds: config.freshnessSeconds,
  wakeTimeoutSeconds: config.wakeTimeoutSeconds,
};
const P30: ReplayPolicy = {
  thresholdMinutes: config.idleThresholdMinutes,
  utilizationPercent: config.idleUtilizationPercent,
  warningSeconds: config.hibernationWarningSeconds,
  ignoreGpuProcesses: false,
};
const policyWith = (thresholdMinutes: number, extra: Partial<ReplayPolicy> = {}): ReplayPolicy => ({ ...P30, thresholdMinutes, ...extra });
const options = (to: number, regretMinutes = 60, from = T0): ReplayOptions => ({ from, to, regretMinutes, settings });

type Reading = Omit<ReplayBeat, 'at'>;
const idle: Reading = { utilizations: [0, 1], processCount: 0, lastActivityAt: null };
const busy: Reading = { utilizations: [85, 0], processCount: 2, lastActivityAt: null };
const justBelow: Reading = { utilizations: [4.9], processCount: 0, lastActivityAt: null };
const atThreshold: Reading = { utilizations: [5], processCount: 0, lastActivityAt: null };

/** Beats every 30 s in [from, to). */
const beats = (from: number, to: number, reading: Reading): ReplayBeat[] => {
  const out: ReplayBeat[] = [];
  for (let at = from; at < to; at += BEAT) out.push({ at, ...reading });
  return out;
};
const instance = (instanceId: number, list: ReplayBeat[], gpuCount = 2, pricePerHour: number | null = 2.4): ReplayInstance => ({
  instanceId,
  gpuCount,
  pricePerHour,
  beats: list,
});

describe('policy replay: a generated history with known answers', () => {
  it('runs on the defaults the answers were computed with', () => {
    expect([config.offlineAfterSeconds, config.idleThresholdMinutes, config.hibernationWarningSeconds, config.idleUtilizationPercent]).toEqual([
      90, 30, 300, 5,
    ]);
  });

  it('(a) idle 2 h then busy: one hibernation at threshold + warning, saved until busy again', () => {
    // First idle beat T0 starts the streak; the beat at T0 + 30 min schedules (idle ≥ threshold); the
    // beat at T0 + 35 min (scheduled + 300 s warning) fires. Both are on the 30-s grid.
    const a = instance(1, [...beats(T0, T0 + 2 * HOUR, idle), ...beats(T0 + 2 * HOUR, T0 + 3 * HOUR, busy)]);
    const report = replay([a], P30, options(T0 + 3 * HOUR));
    // Off from 0:35 to 2:00 = 85 min; 2 GPUs; 2.4 $/h.
    expect(report.instances).toEqual([
      {
        instance_id: 1,
        beats_replayed: 360,
        hibernations: 1,
        hibernated_hours: 1.4167,
        gpu_hours_saved: 2.8333,
        usd_saved: 3.4,
        regrets: [],
        timeline: [{ hibernated_at: iso(T0 + 35 * MIN), busy_again_at: iso(T0 + 2 * HOUR) }],
      },
    ]);
    expect(report).toMatchObject({ threshold_minutes: 30, hibernations: 1, hibernated_hours: 1.4167, gpu_hours_saved: 2.8333, usd_saved: 3.4, regrets: [] });
  });

  it('(a) a regret iff busy again within regret minutes (inclusive), on both sides of the boundary', () => {
    const busyAfter = (offMs: number) =>
      instance(1, [...beats(T0, T0 + 35 * MIN + offMs, idle), ...beats(T0 + 35 * MIN + offMs, T0 + 3 * HOUR, busy)]);
    const exactly = replay([busyAfter(60 * MIN)], P30, options(T0 + 3 * HOUR, 60));
    expect(exactly.regrets).toEqual([{ instance_id: 1, hibernated_at: iso(T0 + 35 * MIN), busy_again_at: iso(T0 + 95 * MIN) }]);
    expect(exactly.gpu_hours_saved).toBe(2);
    expect(exactly.usd_saved).toBe(2.4);

    const oneBeatLater = replay([busyAfter(60 * MIN + BEAT)], P30, options(T0 + 3 * HOUR, 60));
    expect(oneBeatLater.hibernations).toBe(1);
    expect(oneBeatLater.regrets).toEqual([]);
    // The same history is a regret under a longer regret window.
    expect(replay([busyAfter(60 * MIN + BEAT)], P30, options(T0 + 3 * HOUR, 60.5)).regrets).toHaveLength(1);
  });

  it('(b) busy throughout: nothing', () => {
    const report = replay([instance(2, beats(T0, T0 + 3 * HOUR, busy))], P30, options(T0 + 3 * HOUR));
    expect(report).toMatchObject({ hibernations: 0, hibernated_hours: 0, gpu_hours_saved: 0, usd_saved: 0, regrets: [] });
    expect(report.instances[0]).toMatchObject({ beats_replayed: 360, hibernations: 0, timeline: [] });
  });

  it('(c) flapping around the threshold: 5 % is busy, 4.9 % idle; each 5 % beat restarts the streak', () => {
    // 20 min at 4.9 %, one beat at 5 %, then 4.9 % to the end: the streak starts at 0:20:30, so the
    // hibernation fires at 0:55:30 (not 0:35), and the machine stays off until `to` (3:00).
    const once = instance(3, [...beats(T0, T0 + 20 * MIN, justBelow), { at: T0 + 20 * MIN, ...atThreshold }, ...beats(T0 + 20 * MIN + BEAT, T0 + 3 * HOUR, justBelow)], 1, null);
    const report = replay([once], P30, options(T0 + 3 * HOUR));
    // 3:00 − 0:55:30 = 124.5 min = 2.075 h; 1 GPU; unknown price saves no money.
    expect(report.instances[0]).toMatchObject({
      hibernations: 1,
      hibernated_hours: 2.075,
      gpu_hours_saved: 2.075,
      usd_saved: 0,
      timeline: [{ hibernated_at: iso(T0 + 55 * MIN + 30 * S), busy_again_at: null }],
    });

    // A 5 % beat every 20 min: streaks of 20 min never reach 30.
    const flapping: ReplayBeat[] = [];
    for (let start = T0; start < T0 + 3 * HOUR; start += 20 * MIN + BEAT) {
      flapping.push(...beats(start, start + 20 * MIN, justBelow), { at: start + 20 * MIN, ...atThreshold });
    }
    expect(replay([instance(3, flapping, 1)], P30, options(T0 + 3 * HOUR)).hibernations).toBe(0);
  });

  it('(d) a silence as long as the offline window restarts the idle streak; a shorter one does not', () => {
    const withGap = (gapStart: number, gapEnd: number) => instance(4, [...beats(T0, gapStart, idle), ...beats(gapEnd, T0 + 3 * HOUR, idle)]);
    const timelineOf = (i: ReplayInstance) => replay([i], P30, options(T0 + 3 * HOUR)).instances[0]!.timeline;

    // 20 min silent (idle before and after): the streak restarts at 0:40, the hibernation fires at 1:15.
    expect(timelineOf(withGap(T0 + 20 * MIN, T0 + 40 * MIN))).toEqual([{ hibernated_at: iso(T0 + 75 * MIN), busy_again_at: null }]);
    // Two beats missed (0:20 and 0:20:30): 90 s between beats, as long as the offline window, so the
    // streak restarts at 0:21 and the hibernation fires at 0:56.
    expect(timelineOf(withGap(T0 + 20 * MIN, T0 + 21 * MIN))).toEqual([{ hibernated_at: iso(T0 + 56 * MIN), busy_again_at: null }]);
    // One beat missed (60 s between beats): the streak goes on, the hibernation fires at 0:35 as without a gap.
    expect(timelineOf(withGap(T0 + 20 * MIN, T0 + 20 * MIN + BEAT))).toEqual([{ hibernated_at: iso(T0 + 35 * MIN), busy_again_at: null }]);
  });

  it('(e) several thresholds on one history: figures fall as the threshold grows', () => {
    // Idle stretches of 12, 25, 45 and 70 min, each ended by one busy beat. A stretch of L minutes
    // hibernates iff L > threshold + 5 min warning, and then saves L − (threshold + 5) minutes.
    const history: ReplayBeat[] = [];
    let t = T0;
    for (const minutes of [12, 25, 45, 70]) {
      history.push(...beats(t, t + minutes * MIN, idle), { at: t + minutes * MIN, ...busy });
      t += minutes * MIN + BEAT;
    }
    const to = t;
    const rows = [5, 10, 20, 30, 60].map((threshold) => {
      const r = replay([instance(5, history, 1, 3)], policyWith(threshold), options(to, 60));
      return [threshold, r.hibernations, r.gpu_hours_saved, r.usd_saved, r.regrets.length];
    });
    expect(rows).toEqual([
      // 2 + 15 + 35 + 60 = 112 min (each ≤ 60: all regrets)
      [5, 4, 1.8667, 5.6, 4],
      // 10 + 30 + 55 = 95 min
      [10, 3, 1.5833, 4.75, 3],
      // 25 is not > 25: 20 + 45 = 65 min
      [20, 2, 1.0833, 3.25, 2],
      // 10 + 35 = 45 min
      [30, 2, 0.75, 2.25, 2],
      // 5 min
      [60, 1, 0.0833, 0.25, 1],
    ]);
  });

  it('(f) fractional minutes: a 0.5-minute threshold on a 5-minute history', () => {
    // Streak from 0:00; the beat at 0:30 has 30 s idle = the threshold: scheduled for 0:45 (15 s
    // warning); the next beat, 1:00, fires. Busy from 3:00: off 2 min.
    const i = instance(6, [...beats(T0, T0 + 3 * MIN, idle), ...beats(T0 + 3 * MIN, T0 + 5 * MIN, busy)], 1, 1.2);
    const report = replay([i], policyWith(0.5, { warningSeconds: 15 }), options(T0 + 5 * MIN, 2));
    expect(report).toMatchObject({
      threshold_minutes: 0.5,
      hibernations: 1,
      gpu_hours_saved: 0.0333,
      usd_saved: 0.04,
      regrets: [{ instance_id: 6, hibernated_at: iso(T0 + MIN), busy_again_at: iso(T0 + 3 * MIN) }],
    });
    // No warning: scheduled and fired by the same beat, 0:30.
    expect(replay([i], policyWith(0.5, { warningSeconds: 0 }), options(T0 + 5 * MIN)).instances[0]!.timeline[0]!.hibernated_at).toBe(iso(T0 + 30 * S));
  });

  it('a fleet: totals are the sums of the instances; an instance without beats contributes nothing', () => {
    const a = instance(1, [...beats(T0, T0 + 2 * HOUR, idle), ...beats(T0 + 2 * HOUR, T0 + 3 * HOUR, busy)]);
    const b = instance(2, beats(T0, T0 + 3 * HOUR, busy));
    const quiet = instance(9, []);
    const report = replay([a, b, quiet], P30, options(T0 + 3 * HOUR));
    expect(report).toMatchObject({ hibernations: 1, gpu_hours_saved: 2.8333, usd_saved: 3.4 });
    expect(report.instances.map((i) => [i.instance_id, i.beats_replayed, i.hibernations])).toEqual([
      [1, 360, 1],
      [2, 360, 0],
      [9, 0, 0],
    ]);
  });

  it('ignores beats outside [from, to): idleness before `from` does not count, savings stop at `to`', () => {
    const i = instance(7, beats(T0 - HOUR, T0 + 2 * HOUR, idle), 1, 1);
    const report = replay([i], P30, options(T0 + HOUR));
    expect(report.instances[0]).toMatchObject({
      beats_replayed: 120,
      hibernated_hours: 0.4167, // 1:00 − 0:35
      timeline: [{ hibernated_at: iso(T0 + 35 * MIN), busy_again_at: null }],
    });
  });

  it('new activity wakes the replayed machine like a busy GPU', () => {
    const list = [
      ...beats(T0, T0 + 50 * MIN, idle),
      { at: T0 + 50 * MIN, ...idle, lastActivityAt: T0 + 50 * MIN - 10 * S },
      ...beats(T0 + 50 * MIN + BEAT, T0 + 2 * HOUR, idle),
    ];
    const timeline = replay([instance(8, list)], P30, options(T0 + 2 * HOUR)).instances[0]!.timeline;
    // Woken at 0:50 by the activity at 0:49:50; the wake beat starts a new streak: next hibernation 35 min later.
    expect(timeline).toEqual([
      { hibernated_at: iso(T0 + 35 * MIN), busy_again_at: iso(T0 + 50 * MIN) },
      { hibernated_at: iso(T0 + 85 * MIN), busy_again_at: null },
    ]);
  });

  it('refuses bad input', () => {
    const ok = options(T0 + HOUR);
    expect(() => replay([], policyWith(0), ok)).toThrow(/threshold/);
    expect(() => replay([], policyWith(-1), ok)).toThrow(/threshold/);
    expect(() => replay([], P30, options(T0))).toThrow(/range/);
    expect(() => replay([], { ...P30, utilizationPercent: 0 }, ok)).toThrow(/utilization/);
    expect(() => replay([], P30, { ...ok, regretMinutes: -1 })).toThrow(/regret/);
    const unsorted = instance(1, [{ at: T0 + BEAT, ...idle }, { at: T0, ...idle }]);
    expect(() => replay([unsorted], P30, ok)).toThrow(/increasing/);
  });
});

describe('policy replay: properties', () => {
  const reading = fc.record({
    utilizations: fc.array(fc.constantFrom<number | null>(0, 2, 4.9, 5, 40, null), { minLength: 1, maxLength: 2 }),
    processCount: fc.constantFrom<number | null>(0, 0, 0, 1, null),
    activityAgoSeconds: fc.option(fc.integer({ min: 0, max: 600 }), { nil: null, freq: 8 }),
  });
  const history = fc.array(
    fc.record({ gapSeconds: fc.constantFrom(30, 30, 30, 30, 30, 60, 90, 600), reading, repeat: fc.integer({ min: 1, max: 20 }) }),
    { maxLength: 40 },
  );

  it('(g) hibernates only at the end of an unbroken idle streak long enough; skips only idle beats while off', () => {
    let hibernationsSeen = 0;
    let wakesSeen = 0;
    fc.assert(
      fc.property(
        history,
        fc.constantFrom(0.5, 1, 2, 5),
        fc.constantFrom(0, 30, 60, 300),
        fc.boolean(),
        (runs, thresholdMinutes, warningSeconds, ignoreGpuProcesses) => {
          const list: ReplayBeat[] = [];
          let t = T0;
          for (const run of runs) {
            for (let k = 0; k < run.repeat; k += 1) {
              t += run.gapSeconds * S;
              const { activityAgoSeconds, ...facts } = run.reading;
              list.push({ at: t, ...facts, lastActivityAt: activityAgoSeconds === null ? null : t - activityAgoSeconds * S });
            }
          }
          const policy = policyWith(thresholdMinutes, { warningSeconds, ignoreGpuProcesses });
          const to = t + 1;
          const report = replay([instance(1, list, 2, 1)], policy, options(to));
          const rule = { idleUtilizationPercent: policy.utilizationPercent, ignoreGpuProcesses };
          const isIdle = (b: ReplayBeat) => judgeIdle({ ...b, failedCollectors: [] }, rule).idle;
          const offline = settings.offlineAfterSeconds * S;

          expect(report.gpu_hours_saved).toBeGreaterThanOrEqual(0);
          hibernationsSeen += report.hibernations;
          let previousWake = -Infinity;
          for (const h of report.instances[0]!.timeline) {
            const hibernatedAt = Date.parse(h.hibernated_at);
            const index = list.findIndex((b) => b.at === hibernatedAt);
            expect(index).toBeGreaterThanOrEqual(0);
            expect(hibernatedAt).toBeGreaterThanOrEqual(previousWake);
            // The streak: back from the hibernation beat while beats are idle and less than the offline
            // window apart, and not before the beat that woke the previous hibernation.
            let first = index;
            expect(isIdle(list[index]!)).toBe(true);
            while (first > 0 && list[first - 1]!.at >= previousWake && isIdle(list[first - 1]!) && list[first]!.at - list[first - 1]!.at < offline) {
              first -= 1;
            }
            const streakStart = list[first]!.at;
            let quietSince = streakStart;
            for (let k = first; k <= index; k += 1) {
              const activity = list[k]!.lastActivityAt;
              if (activity !== null) quietSince = Math.max(quietSince, Math.min(activity, list[k]!.at));
            }
            expect(hibernatedAt - streakStart).toBeGreaterThanOrEqual(thresholdMinutes * MIN + warningSeconds * S);
            expect(hibernatedAt - quietSince).toBeGreaterThanOrEqual(thresholdMinutes * MIN);

            // While off, only idle beats without new activity were skipped; the next one woke it.
            const wake = h.busy_again_at === null ? to : Date.parse(h.busy_again_at);
            expect(wake).toBeGreaterThan(hibernatedAt);
            for (const b of list) {
              if (b.at > hibernatedAt && b.at < wake) {
                expect(isIdle(b) && (b.lastActivityAt === null || b.lastActivityAt <= hibernatedAt)).toBe(true);
              }
            }
            if (h.busy_again_at !== null) {
              wakesSeen += 1;
              const woke = list.find((b) => b.at === wake)!;
              expect(!isIdle(woke) || (woke.lastActivityAt !== null && woke.lastActivityAt > hibernatedAt)).toBe(true);
            }
            previousWake = wake;
          }
        },
      ),
      { numRuns: 300 },
    );
    // The generator must reach the cases the property is about, or it proves nothing.
    expect(hibernationsSeen).toBeGreaterThan(50);
    expect(wakesSeen).toBeGreaterThan(10);
  });
});
