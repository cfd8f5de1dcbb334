import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { judgeIdle } from '@dumont/protocol';
import { recordFigure, scaled } from '../test-support/reliability.js';
import { evaluate, type Decision, type InstancePolicy, type LifecycleFacts, type PolicyInput, type PolicySettings } from './hibernation-policy.js';
import type { IdleObservation } from './idle-observation.js';
import { DEFAULT_POLICY, DEFAULT_SETTINGS, MIN, NEVER_SEEN, S, T0 } from '../test-support/policy-fixtures.js';

/**
 * The policy's promises, checked over random histories of beats (busy, idle, unknown, torn, late,
 * with activity, with the hook running), silences, ticks, keep-alives, policy changes, operator
 * hibernations, results (repeated ones too) and mass-silence holds. An oracle beside the policy keeps
 * only what the promises need and checks every step; the service's side of the same promises (what an
 * answer carries, restarts) is checked over HTTP in fleet/lifecycle.adversarial.test.ts.
 */

const settings: PolicySettings = { ...DEFAULT_SETTINGS, hibernationWarningSeconds: 60 };
const fresh: LifecycleFacts = NEVER_SEEN;

type Step =
  | { kind: 'beat'; dt: number; lag: number; utilizations: (number | null)[]; processCount: number | null; activityAgo: number | null; collectorError: boolean; hookRunning: boolean; report: 'none' | 'succeeded' | 'failed'; hold: boolean }
  | { kind: 'tick'; dt: number }
  | { kind: 'keep_alive'; dt: number; minutes: number }
  | { kind: 'policy'; dt: number; enabled: boolean; thresholdMinutes: number; ignoreGpuProcesses: boolean }
  | { kind: 'hibernate_now'; dt: number }
  | { kind: 'stale_result'; dt: number; succeeded: boolean };

const dt = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1 * S, max: 35 * S }) },
  { weight: 1, arbitrary: fc.integer({ min: 35 * S, max: 20 * MIN }) }, // a silence: offline, restarts, partitions
);
const utilization = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 4 }) }, { weight: 2, arbitrary: fc.integer({ min: 5, max: 100 }) }, { weight: 1, arbitrary: fc.constant(null) });
const beatStep = fc.record({
  kind: fc.constant('beat' as const),
  dt,
  lag: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 90 * S }) }),
  utilizations: fc.array(utilization, { minLength: 0, maxLength: 4 }),
  processCount: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constant(null) }),
  activityAgo: fc.oneof({ weight: 5, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 10 * MIN }) }),
  collectorError: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 5, arbitrary: fc.constant(false) }),
  hookRunning: fc.boolean(),
  report: fc.constantFrom('none', 'none', 'none', 'succeeded', 'failed'),
  hold: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 6, arbitrary: fc.constant(false) }),
});
/** Machines sit idle for long stretches: a run of quiet beats, so that schedules come due and fire. */
const quietRun = fc
  .record({
    count: fc.integer({ min: 1, max: 14 }),
    every: fc.integer({ min: 5 * S, max: 30 * S }),
    lag: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 60 * S }) }),
    hookRunning: fc.boolean(),
  })
  .map(({ count, every, lag, hookRunning }) =>
    Array.from({ length: count }, (_, i): Step => ({
      kind: 'beat',
      dt: every,
      lag: i === count - 1 ? lag : 0,
      utilizations: [0, 1],
      processCount: 0,
      activityAgo: null,
      collectorError: false,
      hookRunning,
      report: 'none',
      hold: false,
    })),
  );
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 20, arbitrary: beatStep },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('tick' as const), dt }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('keep_alive' as const), dt, minutes: fc.integer({ min: 1, max: 10 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('policy' as const), dt, enabled: fc.boolean(), thresholdMinutes: fc.constantFrom(0.5, 1, 2, 5), ignoreGpuProcesses: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('hibernate_now' as const), dt }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('stale_result' as const), dt, succeeded: fc.boolean() }) },
);
const history = fc
  .array(fc.oneof({ weight: 3, arbitrary: step.map((x) => [x]) }, { weight: 1, arbitrary: quietRun }), { minLength: 1, maxLength: 40 })
  .map((chunks) => chunks.flat());

interface Trace {
  events: string[];
  checks: number;
  /** Hibernate commands the policy issued (not an operator). */
  fired: number;
}

/** Runs one history through the pure policy, checking every promise at every step. */
function run(steps: readonly Step[]): Trace {
  let facts = fresh;
  let policy: InstancePolicy = { ...DEFAULT_POLICY, thresholdMinutes: 1 };
  let now = T0;
  // The oracle's own view.
  let postponedUntil = -Infinity;
  let announcedAt: number | null = null;
  let commandOpen = false;
  let commandByPolicy = false;
  let commandIssuedAt = 0;
  let quietFrom = 0;
  const trace: Trace = { events: [], checks: 0, fired: 0 };

  const apply = (input: PolicyInput): Decision => {
    const before = facts;
    const d = evaluate(facts, policy, input, settings, now);
    facts = d.facts;
    for (const e of d.events) {
      trace.events.push(`${now - T0}:${e.type}`);
      if (e.type === 'hibernation_scheduled') announcedAt = now;
      if (e.type === 'hibernation_cancelled' || e.type === 'offline') announcedAt = null;
    }
    if (d.issueHibernate) {
      if (input.kind === 'heartbeat') trace.fired += 1;
      commandOpen = true;
      commandByPolicy = input.kind === 'heartbeat';
      commandIssuedAt = now;
      // The moment from which activity means the machine is in use again.
      quietFrom = commandByPolicy ? now - policy.thresholdMinutes * MIN : now;
      // Only a heartbeat (the policy) or an operator (hibernate_now) ever issues one; never a tick.
      expect(['heartbeat', 'hibernate_now']).toContain(input.kind);
      if (commandByPolicy) {
        // Announced at least the warning period before, not cancelled since; a keep-alive honoured.
        expect(announcedAt).not.toBeNull();
        expect(now - announcedAt!).toBeGreaterThanOrEqual(settings.hibernationWarningSeconds * S);
        expect(now).toBeGreaterThanOrEqual(postponedUntil);
        expect(policy.enabled).toBe(true);
      }
      announcedAt = null;
    }
    if (d.closeHibernate || facts.status !== 'hibernating') commandOpen = commandOpen && facts.status === 'hibernating' && !d.closeHibernate;
    // Nothing schedules while postponed or held.
    if (before.scheduledAt === null && facts.scheduledAt !== null) expect(now).toBeGreaterThanOrEqual(postponedUntil);
    trace.checks += 1;
    return d;
  };

  for (const s of steps) {
    now += s.dt;
    switch (s.kind) {
      case 'beat': {
        const observation: IdleObservation = {
          utilizations: s.utilizations,
          processCount: s.processCount,
          failedCollectors: s.collectorError ? ['nvidia-smi'] : [],
          lastActivityAt: s.activityAgo === null ? null : now - s.activityAgo,
          observedAt: now - s.lag,
          hibernateHookRunning: s.hookRunning,
        };
        const report = s.report === 'none' ? null : { succeeded: s.report === 'succeeded', detail: s.report };
        const statusBefore = facts.status;
        const hold = s.hold ? 'mass silence' : null;
        const d = apply({ kind: 'heartbeat', observation, hibernateReport: report, hold });
        const verdict = judgeIdle(observation, { idleUtilizationPercent: settings.idleUtilizationPercent, ignoreGpuProcesses: policy.ignoreGpuProcesses });
        // What the answer to this beat carries: the open command, unless withheld.
        const delivered = commandOpen && facts.status === 'hibernating' && !d.withholdHibernate;
        if (delivered) {
          // Never delivered while the newest beat is busy, unknown or torn, or shows activity since
          // the machine went quiet (the threshold before a policy's command; the command itself for an operator's).
          expect(verdict.idle).toBe(true);
          if (observation.lastActivityAt !== null) expect(observation.lastActivityAt).toBeLessThanOrEqual(quietFrom);
        }
        if (d.issueHibernate) {
          // Fired on facts no older than the freshness window, from an idle beat, not during a hold.
          expect(now - observation.observedAt).toBeLessThanOrEqual(settings.freshnessSeconds * S);
          expect(verdict.idle).toBe(true);
          expect(hold).toBeNull();
        }
        // A mass-silence hold leaves nothing scheduled.
        if (hold !== null) expect(facts.scheduledAt).toBeNull();
        // Unknown is never idle.
        if (!verdict.idle && facts.status === 'idle') throw new Error('a non-idle beat left the instance idle');
        // A repeated result never wakes a hibernated instance.
        if (statusBefore === 'hibernated' && report !== null) expect(facts.status).toBe('hibernated');
        break;
      }
      case 'tick': {
        const d = apply({ kind: 'tick' });
        expect(d.issueHibernate).toBe(false);
        break;
      }
      case 'keep_alive':
        postponedUntil = now + s.minutes * MIN;
        apply({ kind: 'keep_alive', until: postponedUntil });
        expect(facts.scheduledAt).toBeNull();
        break;
      case 'policy':
        policy = { enabled: s.enabled, thresholdMinutes: s.thresholdMinutes, ignoreGpuProcesses: s.ignoreGpuProcesses, stopsThroughProvider: false, dryRun: false };
        apply({ kind: 'policy_changed' });
        if (!policy.enabled) expect(facts.scheduledAt).toBeNull();
        break;
      case 'hibernate_now':
        apply({ kind: 'hibernate_now', reason: 'operator' });
        break;
      case 'stale_result': {
        const statusBefore = facts.status;
        apply({ kind: 'hibernate_result', succeeded: s.succeeded, detail: 'late' });
        if (statusBefore === 'hibernated') expect(facts.status).toBe('hibernated');
        break;
      }
    }
  }
  return trace;
}

describe('hibernation policy over random histories', () => {
  it('keeps every promise, and the same history always gives the same events', () => {
    const runs = scaled(10_000, 100_000);
    let steps = 0;
    let fired = 0;
    const started = performance.now();
    fc.assert(
      fc.property(history, (h) => {
        const first = run(h);
        const second = run(h);
        expect(second.events).toEqual(first.events);
        steps += first.checks;
        fired += first.fired;
      }),
      { numRuns: runs },
    );
    // The generator must reach the interesting states, or the properties say nothing.
    expect(fired).toBeGreaterThan(runs / 10);
    const seconds = (performance.now() - started) / 1000;
    recordFigure({ suite: 'Properties of the policy', figure: 'random histories', value: runs });
    recordFigure({ suite: 'Properties of the policy', figure: 'policy steps checked (each history run twice)', value: steps });
    recordFigure({ suite: 'Properties of the policy', figure: 'hibernate commands issued along the way', value: fired });
    recordFigure({ suite: 'Properties of the policy', figure: 'promises broken', value: 0 });
    recordFigure({ suite: 'Properties of the policy', figure: 'seconds', value: seconds.toFixed(1) });
  });
});
