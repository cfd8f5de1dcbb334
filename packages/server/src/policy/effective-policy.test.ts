import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { PolicySpec } from '@dumont/protocol';
import { compilePolicy, effectivePolicy, limitsOf, matchingPolicy, type InstanceOverrides, type PolicyDefaults } from './effective-policy.js';

/**
 * Which values govern an instance, and where each came from. The precedence (server default <
 * policy < instance, owners bounded by the limits, admins not; the schedule last) is what owners and
 * admins are promised in the API; a wrong source would send a 403 naming the wrong knob.
 */

const DEFAULTS: PolicyDefaults = {
  idleUtilizationPercent: 5,
  idleThresholdMinutes: 30,
  hibernationWarningSeconds: 300,
  provider: 'none',
  dryRun: false,
  maxThresholdMinutes: 10_080,
  maxKeepAliveMinutes: 1440,
  keepAliveBudgetMinutes: null,
  ownerMayDisable: true,
};

/** Nothing set on the instance: hibernation on, no own threshold, provider or dry-run. */
const UNTOUCHED: InstanceOverrides = {
  hibernationEnabled: true,
  thresholdMinutes: null,
  dryRun: false,
  provider: null,
  thresholdSetByAdmin: false,
  enabledSetByAdmin: false,
  dryRunSetByAdmin: false,
};

// 2026-01-05 is a Monday.
const MONDAY_MIDDAY = Date.parse('2026-01-05T12:00:00Z');
const MONDAY_NIGHT = Date.parse('2026-01-05T22:00:00Z');
const WORKING_HOURS = ['Mon-Fri 08:00-20:00'];

const policy = (name: string, spec: Partial<PolicySpec> = {}) => compilePolicy(name, { selector: [], priority: 10, ...spec }, 0);

describe('matchingPolicy', () => {
  // The policy book hands over the policies in the store's order (ORDER BY priority DESC): the first
  // match in that order is the highest-priority one.
  const sortedHighestFirst = [
    policy('gpu-night', { priority: 300, selector: ['team=vision', 'night'] }),
    policy('vision', { priority: 200, selector: ['team=vision'] }),
    policy('not-spot', { priority: 100, selector: ['!spot'] }),
    policy('everyone', { priority: 0, selector: [] }),
  ];

  it('picks the highest-priority policy whose every selector term matches', () => {
    expect(matchingPolicy(sortedHighestFirst, { team: 'vision', night: '' })?.name).toBe('gpu-night');
    expect(matchingPolicy(sortedHighestFirst, { team: 'vision' })?.name).toBe('vision');
    expect(matchingPolicy(sortedHighestFirst, { team: 'nlp' })?.name).toBe('not-spot');
    expect(matchingPolicy(sortedHighestFirst, { team: 'nlp', spot: 'yes' })?.name).toBe('everyone');
  });

  it('falls back to the server defaults (null) when nothing matches', () => {
    expect(matchingPolicy(sortedHighestFirst.slice(0, 3), { spot: 'yes' })).toBeNull();
    expect(matchingPolicy([], { team: 'vision' })).toBeNull();
  });

  it('trusts the order it is given: the first match wins, so callers must sort highest first', () => {
    const ascending = [...sortedHighestFirst].reverse();
    expect(matchingPolicy(ascending, { team: 'vision' })?.name).toBe('everyone');
  });
});

describe('limitsOf', () => {
  it('names the server setting for every limit a policy leaves out', () => {
    const limits = limitsOf(policy('plain'), DEFAULTS);
    expect(limits).toMatchObject({ maxThresholdMinutes: 10_080, maxKeepAliveMinutes: 1440, keepAliveBudgetMinutes: null, ownerMayDisable: true });
    expect(limits.origin).toEqual({
      maxThresholdMinutes: 'DUMONT_MAX_THRESHOLD_MINUTES',
      maxKeepAliveMinutes: 'DUMONT_MAX_KEEP_ALIVE_MINUTES',
      keepAliveBudgetMinutes: 'DUMONT_KEEP_ALIVE_BUDGET_MINUTES',
      ownerMayDisable: 'DUMONT_OWNER_MAY_DISABLE',
    });
    expect(limitsOf(null, DEFAULTS).origin.maxThresholdMinutes).toBe('DUMONT_MAX_THRESHOLD_MINUTES');
  });

  it('names the policy field for each limit the policy sets, one by one', () => {
    const limits = limitsOf(policy('notebooks', { limits: { max_threshold_minutes: 120, owner_may_disable: false } }), DEFAULTS);
    expect(limits.maxThresholdMinutes).toBe(120);
    expect(limits.ownerMayDisable).toBe(false);
    expect(limits.maxKeepAliveMinutes).toBe(1440);
    expect(limits.origin.maxThresholdMinutes).toBe('policy "notebooks" limits.max_threshold_minutes');
    expect(limits.origin.ownerMayDisable).toBe('policy "notebooks" limits.owner_may_disable');
    expect(limits.origin.maxKeepAliveMinutes).toBe('DUMONT_MAX_KEEP_ALIVE_MINUTES');
  });

  it('takes a policy budget of null as "no budget", overriding a server budget', () => {
    const serverBudget = { ...DEFAULTS, keepAliveBudgetMinutes: 240 };
    const unlimited = limitsOf(policy('batch', { limits: { keep_alive_budget_minutes: null } }), serverBudget);
    expect(unlimited.keepAliveBudgetMinutes).toBeNull();
    expect(unlimited.origin.keepAliveBudgetMinutes).toBe('policy "batch" limits.keep_alive_budget_minutes');
    expect(limitsOf(policy('plain'), serverBudget).keepAliveBudgetMinutes).toBe(240);
  });
});

describe('effectivePolicy precedence', () => {
  it('uses the server defaults without a policy, each marked "default"', () => {
    const e = effectivePolicy(null, UNTOUCHED, DEFAULTS, MONDAY_MIDDAY);
    expect(e.thresholdMinutes).toEqual({ value: 30, source: 'default' });
    expect(e.idleUtilizationPercent).toEqual({ value: 5, source: 'default' });
    expect(e.warningSeconds).toEqual({ value: 300, source: 'default' });
    expect(e.enabled).toEqual({ value: true, source: 'default' });
    expect(e.dryRun).toEqual({ value: false, source: 'default' });
    expect(e.provider).toEqual({ value: 'none', source: 'default' });
    expect(e.maxUptimeHours).toBeNull();
    expect(e.withinActiveHours).toBeNull();
    expect(e.scheduleForce).toBeNull();
  });

  it('takes a policy value over the default, each marked "policy"', () => {
    const p = policy('team', { threshold_minutes: 45, idle_utilization_percent: 12, warning_seconds: 60, enabled: true, dry_run: false, provider: 'aws', max_uptime_hours: 12 });
    const e = effectivePolicy(p, UNTOUCHED, DEFAULTS, MONDAY_MIDDAY);
    expect(e.policy?.name).toBe('team');
    expect(e.thresholdMinutes).toEqual({ value: 45, source: 'policy' });
    expect(e.idleUtilizationPercent).toEqual({ value: 12, source: 'policy' });
    expect(e.warningSeconds).toEqual({ value: 60, source: 'policy' });
    expect(e.enabled).toEqual({ value: true, source: 'policy' });
    expect(e.dryRun).toEqual({ value: false, source: 'policy' });
    expect(e.provider).toEqual({ value: 'aws', source: 'policy' });
    expect(e.maxUptimeHours).toBe(12);
  });

  describe('threshold', () => {
    const capped = policy('capped', { threshold_minutes: 45, limits: { max_threshold_minutes: 60 } });

    it("takes an owner's threshold within the limit over the policy's", () => {
      expect(effectivePolicy(capped, { ...UNTOUCHED, thresholdMinutes: 60 }, DEFAULTS, MONDAY_MIDDAY).thresholdMinutes).toEqual({ value: 60, source: 'instance' });
      expect(effectivePolicy(capped, { ...UNTOUCHED, thresholdMinutes: 5 }, DEFAULTS, MONDAY_MIDDAY).thresholdMinutes).toEqual({ value: 5, source: 'instance' });
    });

    it("bounds an owner's threshold above the limit to the limit (source 'limit')", () => {
      expect(effectivePolicy(capped, { ...UNTOUCHED, thresholdMinutes: 61 }, DEFAULTS, MONDAY_MIDDAY).thresholdMinutes).toEqual({ value: 60, source: 'limit' });
    });

    it("takes an admin's threshold as set, above the limit too", () => {
      const admin = { ...UNTOUCHED, thresholdMinutes: 600, thresholdSetByAdmin: true };
      expect(effectivePolicy(capped, admin, DEFAULTS, MONDAY_MIDDAY).thresholdMinutes).toEqual({ value: 600, source: 'instance' });
    });
  });

  describe('enabled', () => {
    const off = policy('off', { enabled: false });
    const locked = policy('locked', { limits: { owner_may_disable: false } });

    it("lets an admin's instance value win both ways, over a policy's enabled:false too", () => {
      expect(effectivePolicy(off, { ...UNTOUCHED, hibernationEnabled: true, enabledSetByAdmin: true }, DEFAULTS, MONDAY_MIDDAY).enabled).toEqual({ value: true, source: 'instance' });
      expect(effectivePolicy(locked, { ...UNTOUCHED, hibernationEnabled: false, enabledSetByAdmin: true }, DEFAULTS, MONDAY_MIDDAY).enabled).toEqual({ value: false, source: 'instance' });
    });

    it("disables through the policy whatever the owner set", () => {
      expect(effectivePolicy(off, UNTOUCHED, DEFAULTS, MONDAY_MIDDAY).enabled).toEqual({ value: false, source: 'policy' });
      expect(effectivePolicy(off, { ...UNTOUCHED, hibernationEnabled: false }, DEFAULTS, MONDAY_MIDDAY).enabled).toEqual({ value: false, source: 'policy' });
    });

    it("applies an owner's enabled:false only where owners may disable; otherwise ignores it (source 'limit')", () => {
      const ownerOff = { ...UNTOUCHED, hibernationEnabled: false };
      expect(effectivePolicy(policy('open'), ownerOff, DEFAULTS, MONDAY_MIDDAY).enabled).toEqual({ value: false, source: 'instance' });
      expect(effectivePolicy(locked, ownerOff, DEFAULTS, MONDAY_MIDDAY).enabled).toEqual({ value: true, source: 'limit' });
      expect(effectivePolicy(null, ownerOff, { ...DEFAULTS, ownerMayDisable: false }, MONDAY_MIDDAY).enabled).toEqual({ value: true, source: 'limit' });
    });
  });

  describe('dry_run', () => {
    const locked = policy('locked', { limits: { owner_may_disable: false } });

    it('is forced on by DUMONT_DRY_RUN, over an admin turning it off', () => {
      const adminOff = { ...UNTOUCHED, dryRun: false, dryRunSetByAdmin: true };
      expect(effectivePolicy(policy('p', { dry_run: false }), adminOff, { ...DEFAULTS, dryRun: true }, MONDAY_MIDDAY).dryRun).toEqual({ value: true, source: 'default' });
    });

    it("takes an admin's instance value over the policy's dry_run:true", () => {
      const adminOff = { ...UNTOUCHED, dryRun: false, dryRunSetByAdmin: true };
      expect(effectivePolicy(policy('p', { dry_run: true }), adminOff, DEFAULTS, MONDAY_MIDDAY).dryRun).toEqual({ value: false, source: 'instance' });
    });

    it("applies the policy's dry_run:true over the owner's false", () => {
      expect(effectivePolicy(policy('p', { dry_run: true }), UNTOUCHED, DEFAULTS, MONDAY_MIDDAY).dryRun).toEqual({ value: true, source: 'policy' });
    });

    it("applies an owner's dry_run only where owners may disable", () => {
      const ownerOn = { ...UNTOUCHED, dryRun: true };
      expect(effectivePolicy(policy('p', { dry_run: false }), ownerOn, DEFAULTS, MONDAY_MIDDAY).dryRun).toEqual({ value: true, source: 'instance' });
      expect(effectivePolicy(locked, ownerOn, DEFAULTS, MONDAY_MIDDAY).dryRun).toEqual({ value: false, source: 'limit' });
    });
  });

  describe('provider', () => {
    it("keeps the policy's provider over the instance's (an owner cannot escape the stop)", () => {
      expect(effectivePolicy(policy('p', { provider: 'aws' }), { ...UNTOUCHED, provider: 'none' }, DEFAULTS, MONDAY_MIDDAY).provider).toEqual({ value: 'aws', source: 'policy' });
    });

    it("takes the instance's provider without one in the policy, else DUMONT_PROVIDER", () => {
      expect(effectivePolicy(policy('p'), { ...UNTOUCHED, provider: 'gcp' }, DEFAULTS, MONDAY_MIDDAY).provider).toEqual({ value: 'gcp', source: 'instance' });
      expect(effectivePolicy(policy('p'), UNTOUCHED, { ...DEFAULTS, provider: 'azure' }, MONDAY_MIDDAY).provider).toEqual({ value: 'azure', source: 'default' });
    });
  });
});

describe('effectivePolicy schedules', () => {
  const idleOnly = (outsideThreshold: number, spec: Partial<PolicySpec> = {}) =>
    policy('office', { ...spec, schedule: { timezone: 'UTC', active: WORKING_HOURS, outside: 'idle_only', outside_threshold_minutes: outsideThreshold } });

  it('leaves the threshold alone inside the active hours', () => {
    const e = effectivePolicy(idleOnly(10, { threshold_minutes: 60 }), UNTOUCHED, DEFAULTS, MONDAY_MIDDAY);
    expect(e.withinActiveHours).toBe(true);
    expect(e.thresholdMinutes).toEqual({ value: 60, source: 'policy' });
    expect(e.scheduleForce).toBeNull();
  });

  it('shortens the threshold outside the active hours (source "schedule"), over an instance value too', () => {
    const e = effectivePolicy(idleOnly(10, { threshold_minutes: 60 }), UNTOUCHED, DEFAULTS, MONDAY_NIGHT);
    expect(e.withinActiveHours).toBe(false);
    expect(e.thresholdMinutes).toEqual({ value: 10, source: 'schedule' });
    const admin = { ...UNTOUCHED, thresholdMinutes: 600, thresholdSetByAdmin: true };
    expect(effectivePolicy(idleOnly(10), admin, DEFAULTS, MONDAY_NIGHT).thresholdMinutes).toEqual({ value: 10, source: 'schedule' });
    expect(effectivePolicy(idleOnly(10), UNTOUCHED, DEFAULTS, MONDAY_NIGHT).scheduleForce).toBeNull();
  });

  it('never lengthens it: a shorter or equal threshold stays, with its own source', () => {
    expect(effectivePolicy(idleOnly(90, { threshold_minutes: 60 }), UNTOUCHED, DEFAULTS, MONDAY_NIGHT).thresholdMinutes).toEqual({ value: 60, source: 'policy' });
    expect(effectivePolicy(idleOnly(60, { threshold_minutes: 60 }), UNTOUCHED, DEFAULTS, MONDAY_NIGHT).thresholdMinutes).toEqual({ value: 60, source: 'policy' });
    expect(effectivePolicy(idleOnly(90), { ...UNTOUCHED, thresholdMinutes: 20 }, DEFAULTS, MONDAY_NIGHT).thresholdMinutes).toEqual({ value: 20, source: 'instance' });
  });

  it('forces hibernation outside the active hours with outside:hibernate, and only there', () => {
    const nightly = policy('nightly', { threshold_minutes: 60, schedule: { timezone: 'UTC', active: WORKING_HOURS, outside: 'hibernate' } });
    const day = effectivePolicy(nightly, UNTOUCHED, DEFAULTS, MONDAY_MIDDAY);
    expect(day.withinActiveHours).toBe(true);
    expect(day.scheduleForce).toBeNull();
    const night = effectivePolicy(nightly, UNTOUCHED, DEFAULTS, MONDAY_NIGHT);
    expect(night.withinActiveHours).toBe(false);
    expect(night.scheduleForce).toBe('schedule of policy "nightly": outside its active hours (Mon-Fri 08:00-20:00 UTC)');
    // The threshold is untouched: the force is its own path.
    expect(night.thresholdMinutes).toEqual({ value: 60, source: 'policy' });
  });

  it('reads the hours in the schedule zone', () => {
    // 12:00 UTC is 21:00 in Tokyo: outside its working hours.
    const tokyo = policy('tokyo', { schedule: { timezone: 'Asia/Tokyo', active: WORKING_HOURS, outside: 'hibernate' } });
    expect(effectivePolicy(tokyo, UNTOUCHED, DEFAULTS, MONDAY_MIDDAY).scheduleForce).toContain('Asia/Tokyo');
  });
});

describe('effectivePolicy over random settings', () => {
  const defaults: fc.Arbitrary<PolicyDefaults> = fc.record({
    idleUtilizationPercent: fc.integer({ min: 1, max: 100 }),
    idleThresholdMinutes: fc.integer({ min: 1, max: 10_080 }),
    hibernationWarningSeconds: fc.integer({ min: 0, max: 86_400 }),
    provider: fc.constantFrom('none', 'aws'),
    dryRun: fc.boolean(),
    maxThresholdMinutes: fc.integer({ min: 1, max: 10_080 }),
    maxKeepAliveMinutes: fc.integer({ min: 1, max: 1440 }),
    keepAliveBudgetMinutes: fc.option(fc.integer({ min: 0, max: 1440 })),
    ownerMayDisable: fc.boolean(),
  });
  const spec: fc.Arbitrary<Partial<PolicySpec>> = fc.record(
    {
      threshold_minutes: fc.integer({ min: 1, max: 10_080 }),
      enabled: fc.boolean(),
      dry_run: fc.boolean(),
      provider: fc.constantFrom('gcp', 'none'),
      schedule: fc.record({
        timezone: fc.constantFrom('UTC', 'Europe/Berlin', 'America/New_York'),
        active: fc.constant(WORKING_HOURS),
        outside: fc.constant('idle_only' as const),
        outside_threshold_minutes: fc.integer({ min: 1, max: 10_080 }),
      }),
      limits: fc.record(
        {
          max_threshold_minutes: fc.integer({ min: 1, max: 10_080 }),
          max_keep_alive_minutes: fc.integer({ min: 1, max: 1440 }),
          keep_alive_budget_minutes: fc.option(fc.integer({ min: 0, max: 1440 })),
          owner_may_disable: fc.boolean(),
        },
        { requiredKeys: [] },
      ),
    },
    { requiredKeys: [] },
  );
  const instance: fc.Arbitrary<InstanceOverrides> = fc.record({
    hibernationEnabled: fc.boolean(),
    thresholdMinutes: fc.option(fc.integer({ min: 1, max: 20_000 })),
    dryRun: fc.boolean(),
    provider: fc.option(fc.constantFrom('none', 'azure')),
    thresholdSetByAdmin: fc.boolean(),
    enabledSetByAdmin: fc.boolean(),
    dryRunSetByAdmin: fc.boolean(),
  });
  const when = fc.integer({ min: MONDAY_MIDDAY - 7 * 86_400_000, max: MONDAY_MIDDAY + 7 * 86_400_000 });

  it("never lets an owner's value past a limit; only an admin's may", () => {
    let ownerBounded = 0;
    let ownerCannotDisable = 0;
    fc.assert(
      fc.property(defaults, fc.option(spec, { nil: null }), instance, when, (d, s, inst, now) => {
        const p = s === null ? null : policy('random', s);
        const e = effectivePolicy(p, inst, d, now);
        const limits = e.limits;

        if (e.thresholdMinutes.source === 'instance' && !inst.thresholdSetByAdmin) {
          expect(e.thresholdMinutes.value).toBeLessThanOrEqual(limits.maxThresholdMinutes);
        }
        // An owner's value over the limit never comes through, schedule or not.
        if (inst.thresholdMinutes !== null && !inst.thresholdSetByAdmin) {
          expect(e.thresholdMinutes.value).toBeLessThanOrEqual(limits.maxThresholdMinutes);
          if (inst.thresholdMinutes > limits.maxThresholdMinutes) ownerBounded += 1;
        }

        const onlyTheOwnerDisables = !limits.ownerMayDisable && !inst.enabledSetByAdmin && s?.enabled !== false;
        if (onlyTheOwnerDisables) {
          expect(e.enabled.value).toBe(true);
          if (!inst.hibernationEnabled) ownerCannotDisable += 1;
        }
        if (!limits.ownerMayDisable && !inst.dryRunSetByAdmin && !d.dryRun && s?.dry_run !== true) {
          expect(e.dryRun.value).toBe(false);
        }
        // The limits reported are the ones applied.
        expect(limits.maxThresholdMinutes).toBe(s?.limits?.max_threshold_minutes ?? d.maxThresholdMinutes);
        expect(limits.ownerMayDisable).toBe(s?.limits?.owner_may_disable ?? d.ownerMayDisable);
      }),
      { numRuns: 2000 },
    );
    // The interesting cases must occur, or the property says nothing.
    expect(ownerBounded).toBeGreaterThan(20);
    expect(ownerCannotDisable).toBeGreaterThan(20);
  });
});
