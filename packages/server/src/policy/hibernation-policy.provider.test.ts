import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { judgeIdle, type InstanceStatus } from '@dumont/protocol';
import {
  evaluate,
  type Decision,
  type InstancePolicy,
  type LifecycleFacts,
  type PolicyInput,
  type PolicySettings,
} from './hibernation-policy.js';
import type { IdleObservation } from './idle-observation.js';
import { DEFAULT_POLICY, DEFAULT_SETTINGS, MIN, NEVER_SEEN, S, T0 } from '../test-support/policy-fixtures.js';
import { scaled } from '../test-support/reliability.js';

/**
 * The provider half of the pure policy: the stop that waits for the provider after the agent
 * confirmed (`hibernating` + providerState 'stopping'), a busy beat withdrawing it, the provider's
 * final word, wake / waking / wake timeout, saving intervals and dry-run's `would_hibernate`. Then the
 * same promises over random histories that mix all of it, with a provider or without, in dry-run or not.
 */


const settings: PolicySettings = DEFAULT_SETTINGS;
const noProvider: InstancePolicy = DEFAULT_POLICY;
const withProvider: InstancePolicy = { ...noProvider, stopsThroughProvider: true };
const dryRun: InstancePolicy = { ...withProvider, dryRun: true };

const fresh: LifecycleFacts = NEVER_SEEN;

type Obs = Omit<IdleObservation, 'observedAt' | 'failedCollectors' | 'hibernateHookRunning'> & Partial<IdleObservation>;
const idle: Obs = { utilizations: [0], processCount: 0, lastActivityAt: null };
const busy: Obs = { utilizations: [85], processCount: 3, lastActivityAt: null };
const succeeded = { succeeded: true, detail: 'checkpoint saved' };
const beat = (obs: Obs, extra: { hibernateReport?: { succeeded: boolean; detail: string } } = {}): PolicyInput => ({
  kind: 'heartbeat',
  observation: { failedCollectors: [], hibernateHookRunning: false, observedAt: Number.NaN, ...obs },
  ...extra,
});
const tick: PolicyInput = { kind: 'tick' };
const wake: PolicyInput = { kind: 'wake', reason: 'wake requested by alice' };
const stopResult = (done: boolean): PolicyInput => ({ kind: 'provider_result', action: 'stop', done, message: done ? '' : 'HTTP 503' });
const startResult = (done: boolean): PolicyInput => ({ kind: 'provider_result', action: 'start', done, message: done ? '' : 'no capacity' });
const types = (d: Decision): string[] => d.events.map((e) => e.type);

class Timeline {
  facts: LifecycleFacts = fresh;
  constructor(public pol: InstancePolicy) {}
  at(now: number, input: PolicyInput): Decision {
    const filled =
      input.kind === 'heartbeat' && Number.isNaN(input.observation.observedAt)
        ? { ...input, observation: { ...input.observation, observedAt: now } }
        : input;
    const d = evaluate(this.facts, this.pol, filled, settings, now);
    this.facts = d.facts;
    return d;
  }
  /** Beats every 30 s from `from` (inclusive) to `to` (exclusive). */
  beats(from: number, to: number, obs: Obs): Decision[] {
    const out: Decision[] = [];
    for (let t = from; t < to; t += 30 * S) out.push(this.at(t, beat(obs)));
    return out;
  }
}

/** Idle for the threshold plus the warning: the beat at T0 + 35 min issues the hibernate command. */
const ISSUED = T0 + 35 * MIN;
function hibernating(pol: InstancePolicy): Timeline {
  const tl = new Timeline(pol);
  const issued = tl.beats(T0, ISSUED + 1, idle).filter((d) => d.issueHibernate);
  expect(issued).toHaveLength(1);
  expect(tl.facts).toMatchObject({ status: 'hibernating', hibernateIssuedAt: ISSUED, providerState: null });
  return tl;
}
/** The agent confirmed at T0 + 36 min; the provider stop waits in the outbox. */
const CONFIRMED = T0 + 36 * MIN;
function stopping(): Timeline {
  const tl = hibernating(withProvider);
  const d = tl.at(CONFIRMED, { kind: 'hibernate_result', ...succeeded });
  expect(d.providerAction).toBe('stop');
  return tl;
}
/** Stopped by the provider at T0 + 40 min. */
const STOPPED = T0 + 40 * MIN;
function hibernated(pol: InstancePolicy = withProvider): Timeline {
  if (!pol.stopsThroughProvider) {
    const tl = hibernating(pol);
    tl.at(STOPPED, { kind: 'hibernate_result', ...succeeded });
    expect(tl.facts.status).toBe('hibernated');
    return tl;
  }
  const tl = stopping();
  tl.pol = pol;
  tl.at(STOPPED, stopResult(true));
  expect(tl.facts).toMatchObject({ status: 'hibernated', savingSince: STOPPED });
  return tl;
}

describe('provider stop: the agent confirmed, the provider stops', () => {
  it('a succeeded hibernate result keeps the instance hibernating, stopping, with a stop queued and no deadline', () => {
    const tl = hibernating(withProvider);
    const d = tl.at(CONFIRMED, { kind: 'hibernate_result', ...succeeded });
    expect(d).toMatchObject({ providerAction: 'stop', issueHibernate: false, closeHibernate: null, cancelProviderStop: false, deadline: null });
    expect(d.events).toEqual([]);
    expect(tl.facts).toMatchObject({ status: 'hibernating', providerState: 'stopping', savingSince: null, idleSince: null, scheduledAt: null });

    // No hibernate timeout while stopping: the outbox retries for hours and reports; a tick days later changes nothing.
    const before = tl.facts;
    for (const later of [ISSUED + 600 * S, ISSUED + 600 * S + 1, CONFIRMED + 48 * 60 * MIN]) {
      const t = tl.at(later, tick);
      expect(t).toMatchObject({ events: [], closeHibernate: null, providerAction: null, cancelProviderStop: false, deadline: null });
      expect(tl.facts).toEqual(before);
    }
  });

  it('the same confirmation carried by a heartbeat (even a busy one: the hook at work) does the same', () => {
    const tl = hibernating(withProvider);
    const d = tl.at(CONFIRMED, beat(busy, { hibernateReport: succeeded }));
    expect(d).toMatchObject({ providerAction: 'stop', cancelProviderStop: false, deadline: null, events: [] });
    expect(tl.facts).toMatchObject({ status: 'hibernating', providerState: 'stopping', lastHeartbeatAt: CONFIRMED });
  });

  it('a re-sent confirmation while stopping queues no second stop and changes nothing but the time of the beat', () => {
    const tl = stopping();
    const before = tl.facts;
    const resent: [PolicyInput, number | null][] = [
      [{ kind: 'hibernate_result', ...succeeded }, null],
      [{ kind: 'hibernate_result', succeeded: false, detail: 'late copy' }, null],
      [beat(idle, { hibernateReport: succeeded }), CONFIRMED + 30 * S],
      [beat(idle, { hibernateReport: { succeeded: false, detail: 'late copy' } }), CONFIRMED + 40 * S],
    ];
    resent.forEach(([input, beatAt], i) => {
      const d = tl.at(CONFIRMED + (i + 1) * 10 * S, input);
      expect(d).toMatchObject({ events: [], providerAction: null, cancelProviderStop: false, issueHibernate: false, closeHibernate: null, deadline: null });
      expect(tl.facts).toEqual({ ...before, lastHeartbeatAt: beatAt ?? before.lastHeartbeatAt });
    });
  });

  it('a re-sent confirmation beside busy facts is judged by those facts: the stop is withdrawn', () => {
    const tl = stopping();
    const d = tl.at(CONFIRMED + 30 * S, beat(busy, { hibernateReport: succeeded }));
    expect(d).toMatchObject({ cancelProviderStop: true, providerAction: null });
    expect(types(d)).toEqual(['hibernation_cancelled']);
    expect(tl.facts).toMatchObject({ status: 'active', providerState: null });
  });

  it('an idle beat while stopping changes nothing but the time of the last beat', () => {
    const tl = stopping();
    const before = tl.facts;
    const d = tl.at(CONFIRMED + 30 * S, beat(idle));
    expect(d).toMatchObject({ events: [], providerAction: null, cancelProviderStop: false, closeHibernate: null, withholdHibernate: false, deadline: null });
    expect(tl.facts).toEqual({ ...before, lastHeartbeatAt: CONFIRMED + 30 * S });
    // Activity older than the hibernate command is not new activity.
    tl.at(CONFIRMED + 60 * S, beat({ ...idle, lastActivityAt: ISSUED - 5 * MIN }));
    expect(tl.facts).toMatchObject({ status: 'hibernating', providerState: 'stopping' });
  });

  const busyBeats: [string, Obs, RegExp][] = [
    ['utilization at the threshold', { utilizations: [0, 5], processCount: 0, lastActivityAt: null }, /GPU 1 at 5%/],
    ['a GPU process', { utilizations: [0], processCount: 1, lastActivityAt: null }, /1 GPU process/],
    ['an unknown utilization', { utilizations: [null], processCount: 0, lastActivityAt: null }, /unknown/],
    ['a collector error', { ...idle, failedCollectors: ['nvidia-smi'] }, /collector error/],
    ['fresh last_activity', { ...idle, lastActivityAt: CONFIRMED + 20 * S }, /last_activity/],
  ];
  for (const [name, obs, reason] of busyBeats) {
    it(`a busy beat while stopping (${name}) withdraws the stop: active, hibernation_cancelled`, () => {
      const tl = stopping();
      const now = CONFIRMED + 30 * S;
      const d = tl.at(now, beat(obs));
      expect(d).toMatchObject({ cancelProviderStop: true, providerAction: null, issueHibernate: false, deadline: now + 90 * S });
      expect(types(d)).toEqual(['hibernation_cancelled']);
      expect(d.events[0]!.reason).toMatch(reason);
      expect(d.events[0]!.reason).toMatch(/provider stop was withdrawn/);
      expect(tl.facts).toMatchObject({ status: 'active', providerState: null, hibernateIssuedAt: null, idleSince: null, lastHeartbeatAt: now, savingSince: null });
    });
  }

  it('the provider stopped the machine: hibernated, providerState stopped, saving from now', () => {
    const tl = stopping();
    const d = tl.at(STOPPED, stopResult(true));
    expect(types(d)).toEqual(['hibernated']);
    expect(d).toMatchObject({ deadline: null, providerAction: null, closeHibernate: null });
    expect(tl.facts).toMatchObject({ status: 'hibernated', providerState: 'stopped', savingSince: STOPPED, hibernateIssuedAt: null, onlineSince: null });
  });

  it('the provider gave up: back under watch (active), hibernation_failed, providerState stop_failed', () => {
    const tl = stopping();
    const d = tl.at(STOPPED, stopResult(false));
    expect(types(d)).toEqual(['hibernation_failed']);
    expect(d.events[0]!.reason).toMatch(/HTTP 503/);
    expect(tl.facts).toMatchObject({ status: 'active', providerState: 'stop_failed', hibernateIssuedAt: null, savingSince: null });
    expect(d.deadline).toBe(ISSUED + 90 * S); // watched again from its last beat: the next sweep finds it silent
  });

  it('a stop already on the wire when activity withdrew it: done still means hibernated (the machine is stopped)', () => {
    const tl = stopping();
    tl.at(CONFIRMED + 30 * S, beat(busy));
    expect(tl.facts.status).toBe('active');
    const d = tl.at(CONFIRMED + 40 * S, stopResult(true));
    expect(types(d)).toEqual(['hibernated']);
    expect(d.events[0]!.reason).toMatch(/already sent/);
    expect(tl.facts).toMatchObject({ status: 'hibernated', providerState: 'stopped', savingSince: CONFIRMED + 40 * S, idleSince: null });
    expect(d.closeHibernate).toBeNull();
  });

  it('...and a hibernate command issued since then is closed as cancelled', () => {
    const tl = stopping();
    tl.at(CONFIRMED + 30 * S, beat(busy));
    tl.at(CONFIRMED + 40 * S, { kind: 'hibernate_now', reason: 'operator' });
    expect(tl.facts.status).toBe('hibernating');
    const d = tl.at(CONFIRMED + 50 * S, stopResult(true));
    expect(d.closeHibernate).toMatchObject({ state: 'cancelled' });
    expect(tl.facts.status).toBe('hibernated');
  });

  it('without a provider, the agent confirming hibernates at once and nothing is queued', () => {
    const tl = hibernating(noProvider);
    const d = tl.at(CONFIRMED, { kind: 'hibernate_result', ...succeeded });
    expect(types(d)).toEqual(['hibernated']);
    expect(d).toMatchObject({ providerAction: null, deadline: null });
    expect(tl.facts).toMatchObject({ status: 'hibernated', providerState: null, savingSince: CONFIRMED });
    const viaBeat = hibernating(noProvider);
    expect(viaBeat.at(CONFIRMED, beat(idle, { hibernateReport: succeeded })).providerAction).toBeNull();
    expect(viaBeat.facts.status).toBe('hibernated');
  });
});

describe('wake', () => {
  it('only a hibernated instance wakes; every other status is left as it is', () => {
    const others: [string, () => Timeline][] = [
      ['offline', () => new Timeline(withProvider)],
      ['active', () => {
        const tl = new Timeline(withProvider);
        tl.at(T0, beat(busy));
        return tl;
      }],
      ['idle', () => {
        const tl = new Timeline(withProvider);
        tl.at(T0, beat(idle));
        return tl;
      }],
      ['hibernating', () => hibernating(withProvider)],
      ['hibernating + stopping', stopping],
      ['waking', () => {
        const tl = hibernated();
        tl.at(STOPPED + MIN, wake);
        return tl;
      }],
    ];
    for (const [name, make] of others) {
      const tl = make();
      const before = tl.facts;
      const d = tl.at(T0 + 50 * MIN, wake);
      expect({ name, events: d.events, action: d.providerAction }).toEqual({ name, events: [], action: null });
      expect(tl.facts).toEqual(before);
    }
  });

  it('hibernated + wake with a provider: waking, a start queued, a deadline at the wake timeout, saving closed', () => {
    const tl = hibernated();
    const now = STOPPED + 60 * MIN;
    const d = tl.at(now, wake);
    expect(types(d)).toEqual(['wake_requested']);
    expect(d.events[0]!.reason).toBe('wake requested by alice');
    expect(d).toMatchObject({ providerAction: 'start', deadline: now + 900 * S });
    expect(tl.facts).toMatchObject({ status: 'waking', wakeRequestedAt: now, providerState: 'starting', savingSince: null });
  });

  it('without a provider: waking, but nothing to start', () => {
    const tl = hibernated(noProvider);
    const d = tl.at(STOPPED + MIN, wake);
    expect(types(d)).toEqual(['wake_requested']);
    expect(d.providerAction).toBeNull();
    expect(tl.facts).toMatchObject({ status: 'waking', wakeRequestedAt: STOPPED + MIN, providerState: null });
  });

  it('no heartbeat within the wake timeout: back to hibernated, wake_failed, saving again', () => {
    const tl = hibernated();
    const asked = STOPPED + 60 * MIN;
    tl.at(asked, wake);
    const waiting = tl.facts;
    const early = tl.at(asked + 900 * S - 1, tick);
    expect(early.events).toEqual([]);
    expect(early.deadline).toBe(asked + 900 * S);
    expect(tl.facts).toEqual(waiting);
    expect(early.cancelProviderStart).toBe(false);
    const due = tl.at(asked + 900 * S, tick);
    expect(types(due)).toEqual(['wake_failed']);
    expect(due).toMatchObject({ deadline: null, cancelProviderStart: true, providerAction: null });
    expect(tl.facts).toMatchObject({ status: 'hibernated', wakeRequestedAt: null, providerState: 'start_failed', savingSince: asked + 900 * S });

    // A sweeper that runs late fails it the same way.
    const late = hibernated();
    late.at(asked, wake);
    expect(types(late.at(asked + 5 * 3600 * S, tick))).toEqual(['wake_failed']);
    expect(late.facts.status).toBe('hibernated');
  });

  it('the first heartbeat while waking: active (or idle on a fresh streak), woke, the wake settled', () => {
    const tl = hibernated();
    const asked = STOPPED + 60 * MIN;
    tl.at(asked, wake);
    const d = tl.at(asked + 2 * MIN, beat(busy));
    expect(types(d)).toEqual(['woke']);
    expect(d.events[0]!.reason).toMatch(/120 s after the wake request/);
    expect(tl.facts).toMatchObject({ status: 'active', wakeRequestedAt: null, onlineSince: asked + 2 * MIN, idleSince: null, savingSince: null });
    expect(d.deadline).toBe(asked + 2 * MIN + 90 * S);

    const quiet = hibernated();
    quiet.at(asked, wake);
    const q = quiet.at(asked + 2 * MIN, beat(idle));
    expect(types(q)).toEqual(['woke', 'idle_detected']);
    expect(quiet.facts).toMatchObject({ status: 'idle', idleSince: asked + 2 * MIN, wakeRequestedAt: null, scheduledAt: null });
  });

  it('a woken instance is not immediately re-hibernated: its idle streak starts over at the first beat', () => {
    // Without a provider the last beat (carrying the report) can be a few seconds before the wake.
    const tl = hibernating(noProvider);
    tl.at(CONFIRMED, beat(idle, { hibernateReport: succeeded }));
    tl.at(CONFIRMED + 10 * S, wake);
    tl.at(CONFIRMED + 20 * S, beat(idle));
    expect(tl.facts).toMatchObject({ status: 'idle', idleSince: CONFIRMED + 20 * S, scheduledAt: null });
  });

  it('the provider could not start the machine: back to hibernated, wake_failed, start_failed', () => {
    const tl = hibernated();
    const asked = STOPPED + 60 * MIN;
    tl.at(asked, wake);
    const d = tl.at(asked + MIN, startResult(false));
    expect(types(d)).toEqual(['wake_failed']);
    expect(d.events[0]!.reason).toMatch(/no capacity/);
    expect(tl.facts).toMatchObject({ status: 'hibernated', providerState: 'start_failed', wakeRequestedAt: null, savingSince: asked + MIN });
  });

  it('the provider started the machine: running, still waking until the agent beats', () => {
    const tl = hibernated();
    const asked = STOPPED + 60 * MIN;
    tl.at(asked, wake);
    const d = tl.at(asked + MIN, startResult(true));
    expect(d.events).toEqual([]);
    expect(d.deadline).toBe(asked + 900 * S);
    expect(tl.facts).toMatchObject({ status: 'waking', providerState: 'running', wakeRequestedAt: asked });
  });
});

describe('saving intervals', () => {
  it('open from entering hibernated, kept across ticks, closed by a heartbeat (woke) or a wake', () => {
    const tl = hibernated();
    for (const later of [STOPPED + 1, STOPPED + 3600 * S, STOPPED + 30 * 86_400 * S]) {
      tl.at(later, tick);
      expect(tl.facts.savingSince).toBe(STOPPED);
    }
    const woke = tl.at(STOPPED + 31 * 86_400 * S, beat(idle));
    expect(types(woke)[0]).toBe('woke');
    expect(tl.facts.savingSince).toBeNull();

    const woken = hibernated();
    woken.at(STOPPED + MIN, wake);
    expect(woken.facts.savingSince).toBeNull();
  });

  it('dry-run: would_hibernate opens one while idle, a second one does not move it, a busy beat closes it', () => {
    const tl = new Timeline(dryRun);
    tl.beats(T0, ISSUED, idle);
    expect(tl.facts.savingSince).toBeNull();
    const first = tl.at(ISSUED, beat(idle));
    expect(types(first)).toEqual(['would_hibernate']);
    expect(tl.facts.savingSince).toBe(ISSUED);

    // The idle streak restarted at ISSUED: threshold + warning later, would_hibernate again.
    const again = tl.beats(ISSUED + 30 * S, ISSUED + 35 * MIN + 1, idle).filter((d) => types(d).includes('would_hibernate'));
    expect(again).toHaveLength(1);
    expect(tl.facts).toMatchObject({ status: 'idle', savingSince: ISSUED });

    const now = ISSUED + 36 * MIN;
    const d = tl.at(now, beat(busy));
    expect(types(d)).toEqual(['active_again']);
    expect(tl.facts).toMatchObject({ status: 'active', savingSince: null });
  });
});

describe('dry-run', () => {
  it('idle past threshold + warning: would_hibernate with its figures, no command, still idle, a new streak', () => {
    const tl = new Timeline(dryRun);
    const before = tl.beats(T0, ISSUED, idle);
    expect(before.flatMap(types)).toEqual(['online', 'idle_detected', 'hibernation_scheduled']);
    const d = tl.at(ISSUED, beat(idle));
    expect(d).toMatchObject({ issueHibernate: false, providerAction: null, closeHibernate: null });
    expect(types(d)).toEqual(['would_hibernate']);
    expect(d.events[0]!.data).toMatchObject({ idle_seconds: 35 * 60, threshold_minutes: 30 });
    expect(tl.facts).toMatchObject({ status: 'idle', idleSince: ISSUED, scheduledAt: null, hibernateIssuedAt: null });
    expect(d.deadline).toBe(ISSUED + 90 * S);
  });

  it('an operator hibernate in dry-run is a would_hibernate too: no command', () => {
    const tl = new Timeline(dryRun);
    tl.at(T0, beat(busy));
    const d = tl.at(T0 + 10 * S, { kind: 'hibernate_now', reason: 'operator' });
    expect(types(d)).toEqual(['would_hibernate']);
    expect(d).toMatchObject({ issueHibernate: false, providerAction: null });
    expect(tl.facts).toMatchObject({ status: 'active', scheduledAt: null, savingSince: null });

    const quiet = new Timeline(dryRun);
    quiet.at(T0, beat(idle));
    const q = quiet.at(T0 + 10 * S, { kind: 'hibernate_now', reason: 'operator' });
    expect(types(q)).toEqual(['would_hibernate']);
    expect(q.issueHibernate).toBe(false);
    expect(quiet.facts).toMatchObject({ status: 'idle', idleSince: T0 + 10 * S, savingSince: T0 + 10 * S });
  });
});

describe('bugs found by the random histories (these fail until fixed)', () => {
  it('an operator hibernate on an instance that never beat must not leave it watched without a heartbeat', () => {
    // Shrunk histories: hibernate_now on a new instance (status offline, no beat), then its result
    // failed, or 600 s passed without one (the tick), or dry-run was turned on and the agent
    // confirmed. Each leaves it `active` with lastHeartbeatAt null: nextDeadline() is null and no
    // sweep ever marks it offline. (The API allows this: POST …/commands {type: hibernate} refuses
    // only hibernating, hibernated, waking and dry-run instances.)
    const endings: [string, InstancePolicy, PolicyInput][] = [
      ['expired', withProvider, tick],
      ['failed', withProvider, { kind: 'hibernate_result', succeeded: false, detail: 'refused' }],
      ['dry-run turned on, confirmed', dryRun, { kind: 'hibernate_result', ...succeeded }],
    ];
    for (const [name, pol, end] of endings) {
      const tl = new Timeline(withProvider);
      expect(tl.at(T0, { kind: 'hibernate_now', reason: 'operator' }).issueHibernate).toBe(true);
      tl.pol = pol;
      tl.at(T0 + 600 * S, end);
      expect(tl.facts.status).not.toBe('hibernating');
      const watched = tl.facts.status === 'active' || tl.facts.status === 'idle';
      const later = tl.at(T0 + 30 * 86_400 * S, tick);
      // Watched statuses need a beat to be watched from; otherwise the sweeper must still have a deadline.
      expect({ name, status: tl.facts.status, watchedWithoutBeat: watched && tl.facts.lastHeartbeatAt === null, deadline: later.deadline }).toEqual({
        name,
        status: expect.not.stringMatching(/^(active|idle)$/),
        watchedWithoutBeat: false,
        deadline: null,
      });
    }
  });

  it('a late start result (from an earlier wake) must not erase a pending stop', () => {
    // Shrunk history: hibernated → wake (start queued) → the agent beats (woke) while the start is
    // still being retried → idle → hibernate command → confirmed (stop queued, stopping) → the start
    // finally reports done. providerState became 'running', so the instance is `hibernating` without
    // 'stopping': the hibernate timeout applies again and backs it out to `active` with the stop
    // still queued for its machine, and a re-sent confirmation queues a second stop.
    const tl = hibernated();
    const asked = STOPPED + 60 * MIN;
    tl.at(asked, wake);
    tl.at(asked + 60 * S, beat(idle)); // woke; the start is still in the outbox
    const fired = tl.beats(asked + 90 * S, asked + 60 * S + 36 * MIN, idle).find((d) => d.issueHibernate);
    expect(fired).toBeDefined();
    const issuedAt = tl.facts.hibernateIssuedAt!;
    expect(tl.at(issuedAt + 20 * S, { kind: 'hibernate_result', ...succeeded }).providerAction).toBe('stop');
    tl.at(issuedAt + 30 * S, startResult(true));
    expect(tl.facts).toMatchObject({ status: 'hibernating', providerState: 'stopping' });
    const t = tl.at(issuedAt + 600 * S, tick);
    expect(types(t)).toEqual([]);
    expect(tl.at(issuedAt + 610 * S, { kind: 'hibernate_result', ...succeeded }).providerAction).toBeNull();
  });

  it('a stop queued for a second hibernation must be withdrawn before the machine runs again', () => {
    // Shrunk history: stop 1 queued → busy beat withdraws it, but it is on the wire → idle again, a
    // new hibernation, stop 2 queued → stop 1 reports done: hibernated (right: the machine is stopped)
    // → wake → the agent beats. Nothing ever withdrew stop 2, which the outbox retries for hours:
    // it can stop the machine that was just woken and is in use.
    const tl = stopping();
    expect(tl.at(CONFIRMED + 30 * S, beat(busy)).cancelProviderStop).toBe(true);
    const cycle = tl.beats(CONFIRMED + 60 * S, CONFIRMED + 60 * S + 36 * MIN, idle);
    expect(cycle.some((d) => d.issueHibernate)).toBe(true);
    const second = tl.at(tl.facts.hibernateIssuedAt! + 20 * S, { kind: 'hibernate_result', ...succeeded });
    expect(second.providerAction).toBe('stop');
    const after: Decision[] = [];
    let now = tl.facts.hibernateIssuedAt! + 30 * S;
    after.push(tl.at(now, stopResult(true))); // stop 1, sent before it was withdrawn
    expect(tl.facts.status).toBe('hibernated');
    after.push(tl.at((now += 60 * S), wake));
    after.push(tl.at((now += 60 * S), beat(busy)));
    expect(tl.facts.status).toBe('active');
    expect(after.some((d) => d.cancelProviderStop)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------
// Random histories.

type Report = 'none' | 'succeeded' | 'failed';
type Step =
  | { kind: 'beat'; dt: number; busy: 'no' | 'util' | 'process' | 'unknown' | 'collector' | 'activity'; report: Report }
  | { kind: 'tick'; dt: number }
  | { kind: 'provider'; dt: number; action: 'stop' | 'start'; done: boolean }
  | { kind: 'wake'; dt: number }
  | { kind: 'keep_alive'; dt: number; minutes: number }
  | { kind: 'hibernate_result'; dt: number; succeeded: boolean }
  | { kind: 'hibernate_now'; dt: number }
  | { kind: 'toggle'; dt: number; dryRun: boolean; stopsThroughProvider: boolean };

/** A short warning, so that random histories reach hibernations (threshold 1 min). */
const propSettings: PolicySettings = { ...settings, hibernationWarningSeconds: 30 };
const dt = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1 * S, max: 35 * S }) },
  { weight: 1, arbitrary: fc.integer({ min: 35 * S, max: 20 * MIN }) },
);
const report = fc.constantFrom<Report>('none', 'none', 'none', 'none', 'succeeded', 'succeeded', 'failed');
const beatStep = fc.record({
  kind: fc.constant('beat' as const),
  dt,
  busy: fc.constantFrom('no', 'no', 'no', 'no', 'util', 'process', 'unknown', 'collector', 'activity'),
  report,
});
/** A run of quiet beats every 5–30 s: long enough to cross the 1-minute threshold and the warning. */
const quietRun = fc
  .record({ count: fc.integer({ min: 1, max: 12 }), every: fc.integer({ min: 5 * S, max: 30 * S }) })
  .map(({ count, every }) => Array.from({ length: count }, (): Step => ({ kind: 'beat', dt: every, busy: 'no', report: 'none' })));
/** Idle long enough for a hibernation, then the agent's report (in a beat or on its own): the path to a stop. */
const cycle = fc
  .record({
    every: fc.integer({ min: 5 * S, max: 15 * S }),
    report: fc.constantFrom('beat', 'result', 'none'),
    succeeded: fc.constantFrom(true, true, false),
    // What often follows: the provider's word on the stop, a wake, its start.
    after: fc.array(
      fc.oneof(
        fc.record({ kind: fc.constant('provider' as const), dt: fc.integer({ min: 1 * S, max: 60 * S }), action: fc.constantFrom('stop' as const, 'start' as const), done: fc.constantFrom(true, true, false) }),
        fc.record({ kind: fc.constant('wake' as const), dt: fc.integer({ min: 1 * S, max: 60 * S }) }),
      ),
      { maxLength: 3 },
    ),
  })
  .map(({ every, report, succeeded, after }): Step[] => [
    ...Array.from({ length: Math.ceil((propSettings.hibernationWarningSeconds * S + MIN) / every) + 1 }, (): Step => ({ kind: 'beat', dt: every, busy: 'no', report: 'none' })),
    ...(report === 'beat'
      ? [{ kind: 'beat', dt: 5 * S, busy: 'no', report: succeeded ? 'succeeded' : 'failed' } as const]
      : report === 'result'
        ? [{ kind: 'hibernate_result', dt: 5 * S, succeeded } as const]
        : []),
    ...after,
  ]);
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 12, arbitrary: beatStep },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('tick' as const), dt }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('provider' as const), dt, action: fc.constantFrom('stop' as const, 'start' as const), done: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('wake' as const), dt }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('keep_alive' as const), dt, minutes: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('hibernate_result' as const), dt, succeeded: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('hibernate_now' as const), dt }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('toggle' as const), dt, dryRun: fc.boolean(), stopsThroughProvider: fc.boolean() }) },
);
const historyArb = fc.record({
  dryRun: fc.boolean(),
  stopsThroughProvider: fc.boolean(),
  steps: fc
    .array(fc.oneof({ weight: 6, arbitrary: step.map((x) => [x]) }, { weight: 1, arbitrary: quietRun }, { weight: 2, arbitrary: cycle }), { minLength: 1, maxLength: 40 })
    .map((chunks) => chunks.flat()),
});
type History = { dryRun: boolean; stopsThroughProvider: boolean; steps: Step[] };


const DORMANT: readonly InstanceStatus[] = ['hibernating', 'hibernated', 'waking'];

interface Reached {
  stopsQueued: number;
  stopsDone: number;
  withdrawn: number;
  wakes: number;
  wouldHibernate: number;
}

/**
 * Runs one history through the pure policy, feeding `decision.facts` forward, and checks every
 * invariant at every step. Provider results are only delivered for actions the policy queued, like
 * the outbox does: a withdrawn stop reports only if it was already on the wire and succeeded.
 */
function run(h: History, reached: Reached): void {
  let facts = fresh;
  let policy: InstancePolicy = { enabled: true, thresholdMinutes: 1, ignoreGpuProcesses: false, stopsThroughProvider: h.stopsThroughProvider, dryRun: h.dryRun };
  let now = T0;
  let dryRunEver = h.dryRun;
  let dryRunAlways = h.dryRun;
  // The outbox as the policy left it.
  const outbox: { action: 'stop' | 'start'; withdrawn: boolean }[] = [];
  // A stop queued and not withdrawn: the instance must wait in hibernating + stopping for its result.
  let stopPending = false;

  for (const [index, s] of h.steps.entries()) {
    now += s.dt;
    let input: PolicyInput;
    let busyBeat = false;
    let reportKind: Report = 'none';
    switch (s.kind) {
      case 'beat': {
        const observation: IdleObservation = {
          utilizations: s.busy === 'util' ? [0, 60] : s.busy === 'unknown' ? [0, null] : [0, 1],
          processCount: s.busy === 'process' ? 2 : 0,
          failedCollectors: s.busy === 'collector' ? ['nvidia-smi'] : [],
          lastActivityAt: s.busy === 'activity' ? now - 1 * S : null,
          observedAt: now,
          hibernateHookRunning: false,
        };
        const verdict = judgeIdle(observation, { idleUtilizationPercent: propSettings.idleUtilizationPercent, ignoreGpuProcesses: false });
        busyBeat = !verdict.idle || s.busy === 'activity';
        reportKind = s.report;
        input = { kind: 'heartbeat', observation, hibernateReport: s.report === 'none' ? null : { succeeded: s.report === 'succeeded', detail: s.report } };
        break;
      }
      case 'tick':
        input = { kind: 'tick' };
        break;
      case 'provider': {
        const i = outbox.findIndex((o) => o.action === s.action);
        if (i < 0) continue; // nothing of that kind in the outbox: no result can come
        const entry = outbox[i]!;
        outbox.splice(i, 1);
        // A withdrawn stop that failed is marked cancelled by the outbox and never reported.
        if (entry.withdrawn && !s.done) continue;
        if (s.action === 'stop' && !entry.withdrawn) stopPending = outbox.some((o) => o.action === 'stop' && !o.withdrawn);
        input = { kind: 'provider_result', action: s.action, done: s.done, message: s.done ? '' : 'provider down' };
        break;
      }
      case 'wake':
        input = { kind: 'wake', reason: 'operator' };
        break;
      case 'keep_alive':
        input = { kind: 'keep_alive', until: now + s.minutes * MIN };
        break;
      case 'hibernate_result':
        reportKind = s.succeeded ? 'succeeded' : 'failed';
        input = { kind: 'hibernate_result', succeeded: s.succeeded, detail: 'result' };
        break;
      case 'hibernate_now':
        input = { kind: 'hibernate_now', reason: 'operator' };
        break;
      case 'toggle':
        policy = { ...policy, dryRun: s.dryRun, stopsThroughProvider: s.stopsThroughProvider };
        dryRunEver ||= s.dryRun;
        dryRunAlways &&= s.dryRun;
        input = { kind: 'policy_changed' };
        break;
    }

    const before = facts;
    const d = evaluate(facts, policy, input, propSettings, now);
    facts = d.facts;
    const where = `step ${index} (${input.kind}${input.kind === 'provider_result' ? ` ${input.action} ${input.done ? 'done' : 'failed'}` : ''}): ${before.status}/${before.providerState} → ${facts.status}/${facts.providerState}`;
    const check = (ok: boolean, what: string): void => {
      if (!ok) throw new Error(`${what} at ${where}`);
    };

    // (a) A heartbeat is a sign of life: it never makes an instance hibernated — unless it carries the
    // agent's own success for the open hibernate command and no provider has to stop the machine.
    if (input.kind === 'heartbeat' && facts.status === 'hibernated' && before.status !== 'hibernated') {
      check(reportKind === 'succeeded' && before.status === 'hibernating', '(a) a heartbeat without a success hibernated the instance');
      check(!policy.stopsThroughProvider || policy.dryRun, '(a) a heartbeat hibernated an instance whose provider must stop it');
    }
    check(!(input.kind === 'heartbeat' && busyBeat && reportKind === 'none' && facts.status === 'hibernated'), '(a) busy beat left the instance hibernated');

    // (b) A stop is only queued for the agent's success on an open command, while hibernating, never in dry-run.
    if (d.providerAction === 'stop') {
      check(reportKind === 'succeeded', '(b) stop queued without a succeeded report');
      check(before.status === 'hibernating' && before.providerState !== 'stopping', '(b) stop queued outside hibernating');
      check(policy.stopsThroughProvider && !policy.dryRun, '(b) stop queued without a provider or in dry-run');
      check(facts.status === 'hibernating' && facts.providerState === 'stopping', '(b) stop queued but not stopping');
    }
    if (d.cancelProviderStart) {
      const timedOut = input.kind === 'tick' && facts.status === 'hibernated';
      const beatArrived = input.kind === 'heartbeat' && facts.status !== 'waking';
      check(before.status === 'waking' && (timedOut || beatArrived), '(b) withdrew a start outside a wake timeout or the first beat after a wake');
    }
    if (d.providerAction === 'start') {
      check(input.kind === 'wake' && before.status === 'hibernated' && policy.stopsThroughProvider, '(b) start queued outside a wake');
    }
    check(!(d.cancelProviderStop && d.providerAction === 'stop'), '(b) queued and withdrew a stop at once');

    // (c) Dry-run fires nothing and stops nothing.
    if (policy.dryRun) {
      check(!d.issueHibernate, '(c) hibernate command issued in dry-run');
      check(d.providerAction !== 'stop', '(c) stop queued in dry-run');
      // Dormant only where it already was: a wake of a machine stopped before, its failure, or the
      // outcome of a stop sent before dry-run was turned on. A command out when it was turned on
      // hibernates nothing.
      if (facts.status !== before.status) {
        check(facts.status !== 'hibernating', '(c) dry-run instance went hibernating');
        if (facts.status === 'hibernated') {
          check(before.status === 'waking' || (input.kind === 'provider_result' && input.action === 'stop' && input.done), '(c) dry-run instance went hibernated');
        }
        if (facts.status === 'waking') check(before.status === 'hibernated', '(c) dry-run instance went waking');
      }
    }
    if (dryRunAlways) {
      check(!d.issueHibernate && d.providerAction === null, '(c) dry-run from the start issued something');
      check(!DORMANT.includes(facts.status), '(c) dry-run from the start went dormant');
    }

    // (d) The deadline: none exactly when no sweeper action can come due.
    const expectedDeadline =
      facts.status === 'hibernating' && facts.providerState === 'stopping'
        ? null
        : facts.status === 'waking'
          ? facts.wakeRequestedAt! + propSettings.wakeTimeoutSeconds * S
          : facts.status === 'hibernating'
            ? facts.hibernateIssuedAt! + propSettings.hibernateTimeoutSeconds * S
            : (facts.status === 'active' || facts.status === 'idle') && facts.lastHeartbeatAt !== null
              ? facts.lastHeartbeatAt + propSettings.offlineAfterSeconds * S
              : null;
    check(d.deadline === expectedDeadline, `(d) deadline ${d.deadline} instead of ${expectedDeadline}`);
    if (facts.status === 'waking') check(facts.wakeRequestedAt !== null, '(d) waking without a wake time');
    if (facts.status === 'hibernating' && facts.providerState !== 'stopping') check(facts.hibernateIssuedAt !== null, '(d) hibernating without an issue time');
    // Watched statuses need a beat to be watched from, or the instance is never found silent.
    if (facts.status === 'active' || facts.status === 'idle') {
      check(facts.lastHeartbeatAt !== null, '(d) active/idle without any heartbeat: no deadline ever');
    }

    // (e) Saving intervals.
    if (facts.savingSince !== null) check(facts.status === 'hibernated' || (facts.status === 'idle' && dryRunEver), '(e) saving outside hibernated / dry-run idle');
    if (facts.status === 'hibernated') check(facts.savingSince !== null, '(e) hibernated without an open saving interval');
    if (facts.savingSince !== null && before.savingSince !== null) check(facts.savingSince === before.savingSince || before.status !== facts.status, '(e) saving interval moved');

    // (f) Waking only after a wake.
    if (facts.status === 'waking' && before.status !== 'waking') check(input.kind === 'wake', '(f) waking without a wake');

    // (g) While a stop is queued and not withdrawn, the instance is hibernating + stopping (waiting
    // for it) or already hibernated (the machine is stopped; a second stop is harmless): never
    // watched again (active, idle) or waking with a stop still to be sent to its machine.
    if (stopPending && !d.cancelProviderStop) {
      check(
        (facts.status === 'hibernating' && facts.providerState === 'stopping') || facts.status === 'hibernated',
        '(g) a stop is still queued for a machine the policy no longer holds stopping or stopped',
      );
    }

    // The outbox as the decision leaves it.
    if (d.providerAction !== null) outbox.push({ action: d.providerAction, withdrawn: false });
    if (d.providerAction === 'stop') {
      stopPending = true;
      reached.stopsQueued += 1;
    }
    if (d.cancelProviderStart) for (const o of outbox) if (o.action === 'start') o.withdrawn = true;
    if (d.cancelProviderStop) {
      for (const o of outbox) if (o.action === 'stop') o.withdrawn = true;
      stopPending = false;
      reached.withdrawn += 1;
    }
    if (input.kind === 'provider_result' && input.action === 'stop' && input.done) reached.stopsDone += 1;
    if (d.events.some((e) => e.type === 'wake_requested')) reached.wakes += 1;
    if (d.events.some((e) => e.type === 'would_hibernate')) reached.wouldHibernate += 1;
  }
}

describe('provider, wake, savings and dry-run over random histories', () => {
  it('keeps every invariant at every step', () => {
    const reached: Reached = { stopsQueued: 0, stopsDone: 0, withdrawn: 0, wakes: 0, wouldHibernate: 0 };
    fc.assert(
      fc.property(historyArb, (h) => {
        run(h, reached);
      }),
      // 3,000 runs: at 2,000 the stops the provider confirmed (61–84 in twelve runs) sat close to the
      // bound of 50 below, so an unlucky run could fail it without any invariant broken.
      { numRuns: scaled(3000, 50_000) },
    );
    // The generator must reach the interesting states, or the invariants say nothing.
    expect(reached.stopsQueued).toBeGreaterThan(100);
    expect(reached.stopsDone).toBeGreaterThan(50);
    expect(reached.withdrawn).toBeGreaterThan(20);
    expect(reached.wakes).toBeGreaterThan(50);
    expect(reached.wouldHibernate).toBeGreaterThan(100);
  });
});
