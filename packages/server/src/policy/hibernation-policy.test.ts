import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  evaluate,
  hibernateInSeconds,
  idleSeconds,
  nextDeadline,
  type Decision,
  type InstancePolicy,
  type LifecycleFacts,
  type PolicyInput,
  type PolicySettings,
} from './hibernation-policy.js';
import type { IdleObservation } from './idle-observation.js';
import { DEFAULT_POLICY, DEFAULT_SETTINGS, MIN, NEVER_SEEN, S, T0 } from '../test-support/policy-fixtures.js';


const settings: PolicySettings = DEFAULT_SETTINGS;
const policy: InstancePolicy = DEFAULT_POLICY;

const fresh: LifecycleFacts = NEVER_SEEN;

/** What a beat says; when it was collected is filled in at the beat's time unless given. */
type Obs = Omit<IdleObservation, 'observedAt' | 'failedCollectors' | 'hibernateHookRunning'> & Partial<IdleObservation>;
const idle: Obs = { utilizations: [0], processCount: 0, lastActivityAt: null };
const busy: Obs = { utilizations: [85], processCount: 3, lastActivityAt: null };
const beat = (obs: Obs, extra: { hibernateReport?: { succeeded: boolean; detail: string }; hold?: string } = {}): PolicyInput => ({
  kind: 'heartbeat',
  observation: { failedCollectors: [], hibernateHookRunning: false, observedAt: Number.NaN, ...obs },
  ...extra,
});
/** The input as the service builds it at `now`: facts collected at `now` unless the test says otherwise. */
const at = (input: PolicyInput, now: number): PolicyInput =>
  input.kind === 'heartbeat' && Number.isNaN(input.observation.observedAt)
    ? { ...input, observation: { ...input.observation, observedAt: now } }
    : input;

/** Drives one instance through inputs at given times, like the service does, keeping every decision. */
class Timeline {
  facts: LifecycleFacts = fresh;
  decisions: Decision[] = [];
  constructor(
    public now = T0,
    public pol: InstancePolicy = policy,
  ) {}
  at(now: number, input: PolicyInput): Decision {
    this.now = now;
    const d = evaluate(this.facts, this.pol, at(input, now), settings, now);
    this.facts = d.facts;
    this.decisions.push(d);
    return d;
  }
  /** Beats every 30 s from `from` (inclusive) to `to` (exclusive). */
  beats(from: number, to: number, obs: Obs): Decision[] {
    const out: Decision[] = [];
    for (let t = from; t < to; t += 30 * S) out.push(this.at(t, beat(obs)));
    return out;
  }
  eventTypes(): string[] {
    return this.decisions.flatMap((d) => d.events.map((e) => e.type));
  }
}

describe('hibernation policy: the happy path', () => {
  it('idle → scheduled after the threshold → hibernate command when due → hibernated', () => {
    const tl = new Timeline();
    tl.at(T0, beat(idle));
    expect(tl.facts.status).toBe('idle');
    expect(tl.facts.idleSince).toBe(T0);

    // Just before the threshold: nothing scheduled.
    tl.beats(T0 + 30 * S, T0 + 30 * MIN, idle);
    expect(tl.facts.scheduledAt).toBeNull();
    expect(idleSeconds(tl.facts)).toBe(30 * 60 - 30);

    // At the threshold: scheduled warning-seconds later, with a countdown.
    const scheduling = tl.at(T0 + 30 * MIN, beat(idle));
    expect(scheduling.events.map((e) => e.type)).toEqual(['hibernation_scheduled']);
    expect(tl.facts.scheduledAt).toBe(T0 + 30 * MIN + 300 * S);
    expect(hibernateInSeconds(tl.facts, T0 + 30 * MIN)).toBe(300);
    expect(hibernateInSeconds(tl.facts, T0 + 30 * MIN + 299_001)).toBe(1);
    expect(scheduling.deadline).toBe(T0 + 30 * MIN + 90 * S); // offline check comes before the due time

    // One millisecond before due: still waiting.
    tl.beats(T0 + 30 * MIN + 30 * S, T0 + 35 * MIN - 30 * S, idle);
    const before = tl.at(T0 + 35 * MIN - 1, beat(idle));
    expect(before.issueHibernate).toBe(false);

    // Due: the beat issues the hibernate command.
    const due = tl.at(T0 + 35 * MIN, beat(idle));
    expect(due.issueHibernate).toBe(true);
    expect(tl.facts.status).toBe('hibernating');
    expect(hibernateInSeconds(tl.facts, T0 + 35 * MIN)).toBe(0);
    expect(due.deadline).toBe(T0 + 35 * MIN + 600 * S);

    tl.at(T0 + 35 * MIN + 30 * S, { kind: 'hibernate_result', succeeded: true, detail: 'checkpoint saved' });
    expect(tl.facts.status).toBe('hibernated');
    expect(nextDeadline(tl.facts, settings)).toBeNull();
    expect(tl.eventTypes()).toEqual(['online', 'idle_detected', 'hibernation_scheduled', 'hibernated']);
  });

  it('never fires from a sweeper tick: only the answer to a fresh idle beat carries the command', () => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 30 * MIN + 1, idle);
    const dueAt = tl.facts.scheduledAt!;
    tl.beats(T0 + 30 * MIN + 30 * S, dueAt, idle);
    // Regression: the sweeper used to fire at the due time on the last beat's facts, however old.
    expect(tl.at(dueAt, { kind: 'tick' }).issueHibernate).toBe(false);
    expect(tl.at(dueAt + 5_500, { kind: 'tick' }).issueHibernate).toBe(false);
    expect(nextDeadline(tl.facts, settings)).toBe(tl.facts.lastHeartbeatAt! + 90 * S); // no deadline for the due time
    expect(tl.facts.status).toBe('idle');
    expect(tl.at(dueAt + 6_000, beat(idle)).issueHibernate).toBe(true);
    expect(tl.facts.status).toBe('hibernating');
  });

  it('a beat whose facts are older than the freshness window does not fire (it waits for a fresh one)', () => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 35 * MIN, idle);
    const dueAt = tl.facts.scheduledAt!;
    const stale = tl.at(dueAt, beat({ ...idle, observedAt: dueAt - 31 * S }));
    expect(stale.issueHibernate).toBe(false);
    expect(tl.facts.status).toBe('idle');
    expect(tl.at(dueAt + 30 * S, beat({ ...idle, observedAt: dueAt + 30 * S - 30 * S })).issueHibernate).toBe(true);
  });

  it('a zero warning fires on the very beat that reaches the threshold', () => {
    const zero = { ...settings, hibernationWarningSeconds: 0 };
    let facts = fresh;
    for (let t = T0; t < T0 + 30 * MIN; t += 30 * S) {
      const d = evaluate(facts, policy, at(beat(idle), t), zero, t);
      expect(d.issueHibernate).toBe(false);
      facts = d.facts;
    }
    expect(evaluate(facts, policy, at(beat(idle), T0 + 30 * MIN), zero, T0 + 30 * MIN).issueHibernate).toBe(true);
  });
});

describe('hibernation policy: cancellation', () => {
  const scheduled = (): Timeline => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 30 * MIN + 1, idle);
    expect(tl.facts.scheduledAt).not.toBeNull();
    return tl;
  };

  it('activity on a GPU cancels, with the reason', () => {
    const tl = scheduled();
    const d = tl.at(T0 + 31 * MIN, beat(busy));
    expect(d.events.find((e) => e.type === 'hibernation_cancelled')?.reason).toMatch(/GPU 0 at 85%/);
    expect(tl.facts).toMatchObject({ status: 'active', scheduledAt: null, idleSince: null });
  });

  it('a GPU process cancels even at 0 % utilization', () => {
    const tl = scheduled();
    const d = tl.at(T0 + 31 * MIN, beat({ utilizations: [0], processCount: 1, lastActivityAt: null }));
    expect(d.events.find((e) => e.type === 'hibernation_cancelled')?.reason).toMatch(/1 GPU process/);
  });

  it('recent last_activity from the agent cancels and restarts idle time there', () => {
    const tl = scheduled();
    const typedAt = T0 + 31 * MIN - 5 * S;
    const d = tl.at(T0 + 31 * MIN, beat({ ...idle, lastActivityAt: typedAt }));
    expect(d.events.map((e) => e.type)).toEqual(['hibernation_cancelled']);
    expect(d.events[0]!.reason).toMatch(/last_activity/);
    expect(tl.facts.idleSince).toBe(typedAt);
    expect(tl.facts.status).toBe('idle');
  });

  it('keep-alive cancels and nothing is scheduled before the postponed time', () => {
    const tl = scheduled();
    const until = T0 + 30 * MIN + 15 * S + 60 * MIN;
    const d = tl.at(T0 + 30 * MIN + 15 * S, { kind: 'keep_alive', until });
    expect(d.events.map((e) => e.type)).toEqual(['keep_alive', 'hibernation_cancelled']);
    const during = tl.beats(T0 + 30 * MIN + 30 * S, until, idle);
    expect(during.every((x) => x.events.length === 0 && !x.issueHibernate)).toBe(true);
    expect(tl.facts.scheduledAt).toBeNull();
    // Right at the postponed time, the still-idle instance is scheduled again, with a full warning.
    tl.at(until, beat(idle));
    expect(tl.facts.scheduledAt).toBe(until + 300 * S);
  });

  it('disabling hibernation cancels, and a disabled instance is never scheduled', () => {
    const tl = scheduled();
    tl.pol = { ...policy, enabled: false };
    const d = tl.at(T0 + 31 * MIN, { kind: 'policy_changed' });
    expect(d.events[0]).toMatchObject({ type: 'hibernation_cancelled', reason: 'hibernation disabled' });
    tl.beats(T0 + 31 * MIN, T0 + 5 * 60 * MIN, idle);
    expect(tl.facts.scheduledAt).toBeNull();
    expect(tl.decisions.some((x) => x.issueHibernate)).toBe(false);
  });

  it('raising the threshold above the idle time cancels', () => {
    const tl = scheduled();
    tl.pol = { ...policy, thresholdMinutes: 120 };
    const d = tl.at(T0 + 31 * MIN, { kind: 'policy_changed' });
    expect(d.events[0]).toMatchObject({ type: 'hibernation_cancelled', reason: 'threshold raised' });
  });
});

describe('hibernation policy: unknown is never idle', () => {
  const unknowns: [string, Obs][] = [
    ['utilization null', { utilizations: [null], processCount: 0, lastActivityAt: null }],
    ['no GPU reported', { utilizations: [], processCount: 0, lastActivityAt: null }],
    ['process count unknown', { utilizations: [0], processCount: null, lastActivityAt: null }],
    ['one GPU of eight unknown', { utilizations: [0, 0, 0, null, 0, 0, 0, 0], processCount: 0, lastActivityAt: null }],
    ['one GPU of eight busy', { utilizations: [0, 0, 0, 0, 0, 0, 0, 97], processCount: 0, lastActivityAt: null }],
    // Regression: a torn nvidia-smi line dropped the busy GPU; the beat carried only a collector error.
    ['a GPU collector error', { utilizations: [0], processCount: 0, lastActivityAt: null, failedCollectors: ['nvidia-smi'] }],
    ['a session collector error', { utilizations: [0], processCount: 0, lastActivityAt: null, failedCollectors: ['sessions'] }],
  ];
  for (const [name, obs] of unknowns) {
    it(`${name}: never idle, never scheduled, however long`, () => {
      const tl = new Timeline();
      tl.beats(T0, T0 + 6 * 60 * MIN, obs);
      expect(tl.facts.status).toBe('active');
      expect(tl.facts.idleSince).toBeNull();
      expect(tl.eventTypes()).toEqual(['online']);
    });
  }

  it('ignore_gpu_processes lets an instance with a resident process go idle', () => {
    const tl = new Timeline(T0, { ...policy, ignoreGpuProcesses: true });
    tl.beats(T0, T0 + 31 * MIN, { utilizations: [0, 1], processCount: 2, lastActivityAt: null });
    expect(tl.facts.status).toBe('idle');
    expect(tl.facts.scheduledAt).not.toBeNull();
  });

  it('an unknown beat in the middle restarts the idle streak', () => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 20 * MIN, idle);
    tl.at(T0 + 20 * MIN, beat({ utilizations: [null], processCount: 0, lastActivityAt: null }));
    tl.beats(T0 + 20 * MIN + 30 * S, T0 + 40 * MIN, idle);
    expect(tl.facts.idleSince).toBe(T0 + 20 * MIN + 30 * S);
    expect(tl.facts.scheduledAt).toBeNull();
  });
});

describe('hibernation policy: offline, gaps and restarts', () => {
  it('goes offline after the window with no beat, cancelling a schedule, and comes back online', () => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 31 * MIN, idle);
    const last = tl.facts.lastHeartbeatAt!;
    expect(nextDeadline(tl.facts, settings)).toBe(last + 90 * S);
    expect(tl.at(last + 90 * S - 1, { kind: 'tick' }).events).toEqual([]);
    const off = tl.at(last + 90 * S, { kind: 'tick' });
    expect(off.events.map((e) => e.type)).toEqual(['hibernation_cancelled', 'offline']);
    expect(tl.facts).toMatchObject({ status: 'offline', scheduledAt: null, idleSince: null });
    expect(off.deadline).toBeNull();

    const back = tl.at(last + 10 * MIN, beat(idle));
    expect(back.events.map((e) => e.type)).toEqual(['online', 'idle_detected']);
    expect(tl.facts.idleSince).toBe(last + 10 * MIN); // silence is not idle time
  });

  it('a gap of missed beats (e.g. a server restart) never counts as idle time', () => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 20 * MIN, idle);
    // No sweeper ran (server down); the next beat comes 15 minutes later.
    const d = tl.at(T0 + 35 * MIN, beat(idle));
    expect(tl.facts.idleSince).toBe(T0 + 35 * MIN);
    expect(d.issueHibernate).toBe(false);
    expect(tl.facts.scheduledAt).toBeNull();
  });

  it('idle time only grows with beats: a tick long after the last beat schedules nothing', () => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 29 * MIN, idle);
    const d = tl.at(T0 + 29 * MIN + 30 * S, { kind: 'tick' });
    expect(d.events).toEqual([]);
    expect(idleSeconds(tl.facts)).toBe(29 * 60 - 30);
  });

  it('a hibernated instance that beats again wakes', () => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 35 * MIN + 1, idle);
    tl.at(T0 + 36 * MIN, { kind: 'hibernate_result', succeeded: true, detail: '' });
    const d = tl.at(T0 + 300 * MIN, beat(busy));
    expect(d.events.map((e) => e.type)).toEqual(['woke']);
    expect(tl.facts.status).toBe('active');
    expect(tl.facts.onlineSince).toBe(T0 + 300 * MIN);
  });
});

describe('hibernation policy: failed and unanswered hibernations', () => {
  const hibernating = (): Timeline => {
    const tl = new Timeline();
    tl.beats(T0, T0 + 35 * MIN + 1, idle);
    expect(tl.facts.status).toBe('hibernating');
    return tl;
  };

  it('a failed hook puts the instance back under watch with a fresh streak; nothing stopped', () => {
    const tl = hibernating();
    const d = tl.at(T0 + 36 * MIN, { kind: 'hibernate_result', succeeded: false, detail: 'disk full' });
    expect(d.events).toEqual([{ type: 'hibernation_failed', reason: 'the hibernate command failed: disk full' }]);
    expect(tl.facts).toMatchObject({ status: 'active', idleSince: null, scheduledAt: null });
  });

  it('no result within the timeout: expired, evented, back under watch', () => {
    const tl = hibernating();
    const issuedAt = tl.facts.hibernateIssuedAt!;
    expect(tl.at(issuedAt + 600 * S - 1, { kind: 'tick' }).closeHibernate).toBeNull();
    const d = tl.at(issuedAt + 600 * S, { kind: 'tick' });
    expect(d.closeHibernate).toMatchObject({ state: 'expired' });
    expect(d.events[0]?.type).toBe('hibernation_failed');
    expect(tl.facts.status).toBe('active');
  });

  it('idle beats while hibernating keep it hibernating and the command going out', () => {
    const tl = hibernating();
    const d = tl.at(T0 + 36 * MIN, beat(idle));
    expect(tl.facts.status).toBe('hibernating');
    expect(d).toMatchObject({ issueHibernate: false, closeHibernate: null, withholdHibernate: false });
  });

  it('a busy beat before the hook runs withdraws the command: cancelled, back to active, nothing stopped', () => {
    // Regression: a beat was ignored while hibernating, so its answer still carried the command.
    const tl = hibernating();
    const d = tl.at(T0 + 36 * MIN, beat({ utilizations: [95], processCount: 3, lastActivityAt: T0 + 36 * MIN }));
    expect(d.closeHibernate).toMatchObject({ state: 'cancelled' });
    expect(d.events.map((e) => e.type)).toEqual(['hibernation_cancelled']);
    expect(d.events[0]!.reason).toMatch(/GPU 0 at 95%/);
    expect(tl.facts).toMatchObject({ status: 'active', idleSince: null, hibernateIssuedAt: null });
    expect(nextDeadline(tl.facts, settings)).toBe(T0 + 36 * MIN + 90 * S);
  });

  it('fresh activity or a collector error withdraws it too', () => {
    const typed = hibernating();
    expect(typed.at(T0 + 36 * MIN, beat({ ...idle, lastActivityAt: T0 + 35 * MIN + 40 * S })).closeHibernate?.state).toBe('cancelled');
    const torn = hibernating();
    expect(torn.at(T0 + 36 * MIN, beat({ ...idle, failedCollectors: ['nvidia-smi'] })).closeHibernate?.state).toBe('cancelled');
  });

  it('a busy beat while the agent runs the hook keeps the command but leaves it out of that answer', () => {
    const tl = hibernating();
    const d = tl.at(T0 + 36 * MIN, beat({ ...busy, hibernateHookRunning: true }));
    expect(d).toMatchObject({ closeHibernate: null, withholdHibernate: true });
    expect(d.events).toEqual([]);
    expect(tl.facts.status).toBe('hibernating');
  });

  it('a success reported with a busy beat hibernates: that beat shows the hook at work, not a user', () => {
    const tl = hibernating();
    const d = tl.at(T0 + 36 * MIN, beat(busy, { hibernateReport: { succeeded: true, detail: 'saved' } }));
    expect(d.events.map((e) => e.type)).toEqual(['hibernated']);
    expect(tl.facts.status).toBe('hibernated');
  });

  it('a failure reported with a beat: back under watch, and that beat is judged as usual', () => {
    const tl = hibernating();
    const d = tl.at(T0 + 36 * MIN, beat(idle, { hibernateReport: { succeeded: false, detail: 'refused: busy' } }));
    expect(d.events.map((e) => e.type)).toEqual(['hibernation_failed', 'idle_detected']);
    expect(tl.facts).toMatchObject({ status: 'idle', idleSince: T0 + 36 * MIN });
  });

  it('the same success re-sent after the instance hibernated never wakes it', () => {
    // Regression: the agent re-sends a result until it hears back; a re-sent `succeeded` woke the instance.
    const tl = hibernating();
    tl.at(T0 + 36 * MIN, beat(idle, { hibernateReport: { succeeded: true, detail: 'saved' } }));
    for (let i = 1; i <= 3; i++) {
      const d = tl.at(T0 + 36 * MIN + i * 10 * S, beat(busy, { hibernateReport: { succeeded: true, detail: 'saved' } }));
      expect(d.events).toEqual([]);
    }
    expect(tl.facts.status).toBe('hibernated');
    // A beat without the report is a machine that is running again.
    expect(tl.at(T0 + 60 * MIN, beat(busy)).events.map((e) => e.type)).toEqual(['woke']);
  });

  it('a late success after the timeout changes nothing', () => {
    const tl = hibernating();
    tl.at(tl.facts.hibernateIssuedAt! + 600 * S, { kind: 'tick' });
    tl.at(T0 + 50 * MIN, { kind: 'hibernate_result', succeeded: true, detail: '' });
    expect(tl.facts.status).toBe('active');
  });
});

describe('hibernation policy: properties', () => {
  const observation = fc.record({
    utilizations: fc.array(fc.option(fc.integer({ min: 0, max: 100 }), { nil: null }), { minLength: 0, maxLength: 8 }),
    processCount: fc.option(fc.integer({ min: 0, max: 4 }), { nil: null }),
    lastActivityAt: fc.constant(null),
  });
  const step = fc.oneof(
    fc.record({ dt: fc.integer({ min: 1, max: 200 * S }), input: observation.map((o) => beat(o)) }),
    fc.record({ dt: fc.integer({ min: 1, max: 200 * S }), input: fc.constant<PolicyInput>({ kind: 'tick' }) }),
  );

  it('a hibernate command is only ever issued after threshold idle time measured across idle beats', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 300 }), (steps) => {
        const pol = { ...policy, thresholdMinutes: 2 };
        let facts = fresh;
        let now = T0;
        let streakStart: number | null = null;
        let lastBeat: number | null = null;
        for (const { dt, input } of steps) {
          now += dt;
          const d = evaluate(facts, pol, at(input, now), settings, now);
          if (input.kind === 'heartbeat') {
            const o = input.observation;
            const isIdle =
              o.utilizations.length > 0 && o.utilizations.every((u) => u !== null && u < 5) && o.processCount === 0;
            const consecutive = lastBeat !== null && now - lastBeat < 90 * S && facts.status !== 'offline';
            streakStart = isIdle ? (streakStart !== null && consecutive ? streakStart : now) : null;
            lastBeat = now;
          }
          if (d.issueHibernate) {
            // Every issued hibernation follows ≥ threshold of idle beats (measured at the beats).
            expect(streakStart).not.toBeNull();
            expect(lastBeat! - streakStart!).toBeGreaterThanOrEqual(2 * MIN);
            facts = evaluate(d.facts, pol, { kind: 'hibernate_result', succeeded: false, detail: 'x' }, settings, now).facts;
            streakStart = null;
          } else facts = d.facts;
          if (facts.status === 'offline') streakStart = null;
        }
      }),
      { numRuns: 300 },
    );
  });
});
