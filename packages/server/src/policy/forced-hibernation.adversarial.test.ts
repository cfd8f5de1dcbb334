import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { judgeIdle } from '@dumont/protocol';
import { evaluate, type Decision, type InstancePolicy, type LifecycleFacts, type PolicyInput, type PolicySettings } from './hibernation-policy.js';
import type { IdleObservation } from './idle-observation.js';
import { DEFAULT_POLICY, DEFAULT_SETTINGS, MIN, NEVER_SEEN, S, T0 } from '../test-support/policy-fixtures.js';

/**
 * Forced hibernation (a schedule's `outside: hibernate`, `max_uptime_hours`) is the one path on which
 * a busy machine is hibernated. Over random histories — busy and idle beats, external signals,
 * silences, keep-alives, the schedule flipping the force on and off, results — an oracle beside the
 * policy checks that a busy machine is only ever hibernated for a reason that holds at that moment,
 * that the warning and keep-alives still apply, and that signals count as activity like a busy GPU.
 */

const settings: PolicySettings = { ...DEFAULT_SETTINGS, hibernationWarningSeconds: 60 };
const HOUR = 60 * MIN;
const OUTSIDE_HOURS = 'schedule of policy "nightly": outside its active hours (Mon-Fri 08:00-20:00 UTC)';

type Load = 'idle' | 'gpu' | 'processes' | 'unknown';
type Step =
  | { kind: 'beat'; dt: number; lag: number; load: Load; signal: string | null; hookRunning: boolean; report: 'none' | 'succeeded' | 'failed'; hold: boolean }
  | { kind: 'tick'; dt: number }
  | { kind: 'keep_alive'; dt: number; minutes: number }
  /** The schedule's active hours begin or end: the force flips with no event of its own. */
  | { kind: 'schedule'; dt: number; outsideHours: boolean }
  | { kind: 'policy'; dt: number; enabled: boolean; thresholdMinutes: number; maxUptimeHours: number | null; announce: boolean };

const dt = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1 * S, max: 35 * S }) },
  { weight: 1, arbitrary: fc.integer({ min: 35 * S, max: 20 * MIN }) }, // a silence: offline
);
// What the external signals say: non-empty, as judgeSignals always names the signal in its reason.
const signal = fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.string({ minLength: 1, maxLength: 20 }) });
const load = fc.constantFrom<Load>('idle', 'idle', 'idle', 'gpu', 'gpu', 'processes', 'unknown');
const report = fc.constantFrom<'none' | 'succeeded' | 'failed'>('none', 'none', 'none', 'none', 'succeeded', 'failed');
const beatStep: fc.Arbitrary<Step> = fc.record({
  kind: fc.constant('beat' as const),
  dt,
  lag: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 60 * S }) }),
  load,
  signal,
  hookRunning: fc.boolean(),
  report,
  hold: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 10, arbitrary: fc.constant(false) }),
});
/** Steady beats of one kind (a busy job, an idle night): long enough for warnings to run out. */
const steadyRun: fc.Arbitrary<Step[]> = fc
  .record({ count: fc.integer({ min: 2, max: 12 }), every: fc.integer({ min: 5 * S, max: 30 * S }), load, signal, hookRunning: fc.boolean() })
  .map(({ count, every, load, signal, hookRunning }) =>
    Array.from({ length: count }, (): Step => ({ kind: 'beat', dt: every, lag: 0, load, signal, hookRunning, report: 'none', hold: false })),
  );
const uptimeLimit = fc.constantFrom(null, null, null, 0.02, 0.1, 0.25, 1);
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 16, arbitrary: beatStep },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('tick' as const), dt }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('keep_alive' as const), dt, minutes: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('schedule' as const), dt, outsideHours: fc.boolean() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('policy' as const),
      dt,
      enabled: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      thresholdMinutes: fc.constantFrom(1, 2, 5),
      maxUptimeHours: uptimeLimit,
      announce: fc.boolean(),
    }),
  },
);
/** The active hours begin and people get to work: what a forced command must give way to. */
const dayBegins: fc.Arbitrary<Step[]> = fc
  .tuple(dt, steadyRun)
  .map(([at, work]): Step[] => [{ kind: 'schedule', dt: at, outsideHours: false }, ...work]);
const history = fc
  .array(fc.oneof({ weight: 6, arbitrary: step.map((x) => [x]) }, { weight: 3, arbitrary: steadyRun }, { weight: 1, arbitrary: dayBegins }), { minLength: 1, maxLength: 30 })
  .map((chunks) => chunks.flat());
const startingPolicy = fc.record({ outsideHours: fc.boolean(), maxUptimeHours: uptimeLimit, thresholdMinutes: fc.constantFrom(1, 2, 5) });

function observationOf(s: Extract<Step, { kind: 'beat' }>, now: number): IdleObservation {
  const utilizations = s.load === 'gpu' ? [2, 80] : s.load === 'unknown' ? [1, null] : [0, 1];
  return {
    utilizations,
    processCount: s.load === 'processes' ? 2 : 0,
    failedCollectors: [],
    lastActivityAt: null,
    observedAt: now - s.lag,
    hibernateHookRunning: s.hookRunning,
    signalActivity: s.signal,
  };
}

interface Trace {
  /** Hibernate commands that went out with a forced reason. */
  forced: number;
  /** Of those, the ones issued in the answer to a busy beat. */
  forcedWhileBusy: number;
  /** Busy beats that left an open command standing because the force held. */
  keptByForce: number;
  /** Busy beats that withdrew an open command because no force held any more. */
  withdrawn: number;
  issued: number;
  /** hibernation_scheduled events emitted after the first beat. */
  scheduledAfterFirstBeat: number;
}

/** Runs one history through the pure policy, checking every promise at every step. */
function run(start: { outsideHours: boolean; maxUptimeHours: number | null; thresholdMinutes: number }, steps: readonly Step[]): Trace {
  let facts: LifecycleFacts = NEVER_SEEN;
  let policy: InstancePolicy = {
    ...DEFAULT_POLICY,
    thresholdMinutes: start.thresholdMinutes,
    forcedBy: start.outsideHours ? OUTSIDE_HOURS : null,
    maxUptimeHours: start.maxUptimeHours,
  };
  let now = T0;
  // The oracle's own view, built from inputs and events only.
  let postponedUntil = -Infinity;
  let announcedAt: number | null = null;
  let onlineSince: number | null = null;
  let commandOpen = false;
  let sawBeat = false;
  const trace: Trace = { forced: 0, forcedWhileBusy: 0, keptByForce: 0, withdrawn: 0, issued: 0, scheduledAfterFirstBeat: 0 };

  const uptimeForces = () =>
    policy.maxUptimeHours !== null && policy.maxUptimeHours !== undefined && onlineSince !== null && now - onlineSince >= policy.maxUptimeHours * HOUR;
  const forceHolds = () => policy.enabled && (!!policy.forcedBy || uptimeForces());

  const apply = (input: PolicyInput): Decision => {
    const d = evaluate(facts, policy, input, settings, now);
    facts = d.facts;
    for (const e of d.events) {
      if (e.type === 'online' || e.type === 'woke') onlineSince = now;
      if (e.type === 'offline' || e.type === 'hibernated') onlineSince = null;
      if (e.type === 'hibernation_scheduled') {
        // A keep-alive postpones a forced hibernation too: not even its warning starts meanwhile.
        expect(postponedUntil).toBeLessThanOrEqual(now);
        announcedAt = now;
        if (sawBeat) trace.scheduledAfterFirstBeat += 1;
      }
      if (e.type === 'hibernation_cancelled' || e.type === 'offline') announcedAt = null;
    }
    if (d.issueHibernate) {
      trace.issued += 1;
      expect(input.kind).toBe('heartbeat');
      // The warning always runs, forced or not: announced at least the warning period before.
      expect(announcedAt).not.toBeNull();
      expect(now - announcedAt!).toBeGreaterThanOrEqual(settings.hibernationWarningSeconds * S);
      // Never during a keep-alive, never with hibernation off.
      expect(postponedUntil).toBeLessThanOrEqual(now);
      expect(policy.enabled).toBe(true);
      if (d.forcedHibernate !== null) trace.forced += 1;
      announcedAt = null;
      commandOpen = true;
    }
    if (d.closeHibernate !== null || facts.status !== 'hibernating') commandOpen = false;
    return d;
  };

  for (const s of steps) {
    now += s.dt;
    switch (s.kind) {
      case 'beat': {
        const observation = observationOf(s, now);
        const hold = s.hold ? 'mass silence' : null;
        const busy = !judgeIdle(observation, { idleUtilizationPercent: settings.idleUtilizationPercent, ignoreGpuProcesses: policy.ignoreGpuProcesses }).idle || observation.signalActivity != null;
        const openBefore = commandOpen && facts.status === 'hibernating';
        const d = apply({
          kind: 'heartbeat',
          observation,
          hibernateReport: s.report === 'none' ? null : { succeeded: s.report === 'succeeded', detail: s.report },
          hold,
        });
        sawBeat = true;
        // A mass-silence hold leaves nothing scheduled, forced or not.
        if (hold !== null) expect(facts.scheduledAt).toBeNull();
        if (d.issueHibernate) {
          expect(hold).toBeNull();
          if (busy) {
            // Only a reason that holds right now hibernates a busy machine, and the command names it.
            expect(forceHolds()).toBe(true);
            expect(d.forcedHibernate).not.toBeNull();
            if (policy.forcedBy) expect(d.forcedHibernate).toBe(policy.forcedBy);
            else expect(d.forcedHibernate).toMatch(new RegExp(`max_uptime_hours of ${policy.maxUptimeHours}$`));
            trace.forcedWhileBusy += 1;
          }
        }
        // A beat with a result settles the command instead of judging it; only plain beats withdraw.
        if (openBefore && busy && s.report === 'none') {
          if (forceHolds()) {
            expect(d.closeHibernate).toBeNull();
            expect(facts.status).toBe('hibernating');
            trace.keptByForce += 1;
          } else if (!s.hookRunning) {
            expect(d.closeHibernate?.state).toBe('cancelled');
            expect(facts.status).toBe('active');
            trace.withdrawn += 1;
          } else {
            expect(d.closeHibernate).toBeNull();
            expect(d.withholdHibernate).toBe(true);
          }
        }
        break;
      }
      case 'tick':
        apply({ kind: 'tick' });
        break;
      case 'keep_alive':
        postponedUntil = now + s.minutes * MIN;
        apply({ kind: 'keep_alive', until: postponedUntil });
        expect(facts.scheduledAt).toBeNull();
        break;
      case 'schedule':
        policy = { ...policy, forcedBy: s.outsideHours ? OUTSIDE_HOURS : null };
        break;
      case 'policy':
        policy = { ...policy, enabled: s.enabled, thresholdMinutes: s.thresholdMinutes, maxUptimeHours: s.maxUptimeHours };
        if (s.announce) {
          apply({ kind: 'policy_changed' });
          if (!policy.enabled) expect(facts.scheduledAt).toBeNull();
        }
        break;
    }
  }
  return trace;
}

describe('forced hibernation over random histories', () => {
  it('hibernates a busy machine only for a reason that holds, with the warning, never against a keep-alive', () => {
    const runs = 300;
    const total: Trace = { forced: 0, forcedWhileBusy: 0, keptByForce: 0, withdrawn: 0, issued: 0, scheduledAfterFirstBeat: 0 };
    fc.assert(
      fc.property(startingPolicy, history, (start, h) => {
        const trace = run(start, h);
        for (const key of Object.keys(total) as (keyof Trace)[]) total[key] += trace[key];
      }),
      { numRuns: runs },
    );
    // The histories must reach the forced paths, or the property says nothing.
    console.info(`forced hibernation: ${runs} histories, ${total.issued} hibernations issued, ${total.forced} forced (${total.forcedWhileBusy} on a busy beat), ${total.keptByForce} commands kept by the force, ${total.withdrawn} withdrawn`);
    expect(total.forced).toBeGreaterThan(runs / 5);
    expect(total.forcedWhileBusy).toBeGreaterThan(runs / 10);
    expect(total.keptByForce).toBeGreaterThan(100);
    expect(total.withdrawn).toBeGreaterThan(5);
  });

  it('never hibernates a machine whose signals say it is in use, without a force', () => {
    const signalledBusy = fc.tuple(
      fc.constantFrom(1, 2, 5),
      history.map((steps) =>
        steps.map((s): Step => {
          if (s.kind === 'beat') return { ...s, signal: s.signal ?? 'signal "slurm" active: 2 jobs running' };
          if (s.kind === 'schedule') return { ...s, outsideHours: false };
          if (s.kind === 'policy') return { ...s, maxUptimeHours: null };
          return s;
        }),
      ),
    );
    let beats = 0;
    fc.assert(
      fc.property(signalledBusy, ([thresholdMinutes, h]) => {
        const trace = run({ outsideHours: false, maxUptimeHours: null, thresholdMinutes }, h);
        expect(trace.issued).toBe(0);
        expect(trace.scheduledAfterFirstBeat).toBe(0);
        beats += h.filter((s) => s.kind === 'beat').length;
      }),
      { numRuns: 300 },
    );
    expect(beats).toBeGreaterThan(1000);
  });
});
