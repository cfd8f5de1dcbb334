import { matchesSelector, parseLabelSelector, type LabelTerm, type Labels, type PolicySpec, type ValueSource } from '@dumont/protocol';
import { compileSchedule, isWithinActiveHours, nextScheduleChange, type CompiledSchedule } from './schedule.js';
import type { SignalSpec } from './activity-signals.js';

/**
 * Which values govern one instance's hibernation, and where each came from. Pure: the caller passes
 * the named policies, the instance's labels and settings, the server's defaults and `now` (schedules
 * depend on it). Precedence, lowest first: the server's defaults, the matching policy, what was set on
 * the instance — an owner's value bounded by the admin limits, an admin's as set — and, outside a
 * schedule's active hours, the schedule.
 */

/** A named policy, compiled once per version (selector parsed, schedule compiled). */
export interface CompiledPolicy {
  name: string;
  priority: number;
  spec: PolicySpec;
  selector: LabelTerm[];
  schedule: CompiledSchedule | null;
  updatedAt: number;
}

export function compilePolicy(name: string, spec: PolicySpec, updatedAt: number): CompiledPolicy {
  return {
    name,
    priority: spec.priority,
    spec,
    selector: parseLabelSelector(spec.selector, 'selector'),
    schedule: spec.schedule ? compileSchedule(spec.schedule) : null,
    updatedAt,
  };
}

/** The highest-priority policy whose selector the labels match; `policies` are sorted highest first. */
export function matchingPolicy(policies: readonly CompiledPolicy[], labels: Readonly<Labels>): CompiledPolicy | null {
  for (const policy of policies) if (matchesSelector(labels, policy.selector)) return policy;
  return null;
}

/** What owners may do to the instance's hibernation; admins may exceed any of it. */
export interface AdminLimits {
  maxThresholdMinutes: number;
  maxKeepAliveMinutes: number;
  /** Keep-alive minutes owners may grant one instance per rolling 24 h; null = unlimited. */
  keepAliveBudgetMinutes: number | null;
  /** Whether an owner may set `enabled: false` or `dry_run: true`. */
  ownerMayDisable: boolean;
}

/** Each limit as it applies, with where it was set (a refusal names it). */
export interface BoundLimits extends AdminLimits {
  origin: Record<keyof AdminLimits, string>;
}

/** The server's own values (its configuration), used where neither a policy nor the instance sets one. */
export interface PolicyDefaults extends AdminLimits {
  idleUtilizationPercent: number;
  idleThresholdMinutes: number;
  hibernationWarningSeconds: number;
  provider: string;
  /** DUMONT_DRY_RUN: every instance in dry-run, whatever else says. */
  dryRun: boolean;
}

/** What was set on the instance itself (by its owner or an admin). */
export interface InstanceOverrides {
  hibernationEnabled: boolean;
  thresholdMinutes: number | null;
  dryRun: boolean;
  provider: string | null;
  thresholdSetByAdmin: boolean;
  enabledSetByAdmin: boolean;
  dryRunSetByAdmin: boolean;
}

export interface Sourced<T> {
  value: T;
  source: ValueSource;
}

export interface EffectivePolicy {
  policy: CompiledPolicy | null;
  idleUtilizationPercent: Sourced<number>;
  thresholdMinutes: Sourced<number>;
  warningSeconds: Sourced<number>;
  enabled: Sourced<boolean>;
  provider: Sourced<string>;
  dryRun: Sourced<boolean>;
  maxUptimeHours: number | null;
  limits: BoundLimits;
  /** null without a schedule. */
  withinActiveHours: boolean | null;
  /** Outside the active hours of a schedule whose `outside` is `hibernate`: why a hibernation is forced. */
  scheduleForce: string | null;
  signals: readonly SignalSpec[];
}

const SERVER_LIMIT_NAMES: Record<keyof AdminLimits, string> = {
  maxThresholdMinutes: 'DUMONT_MAX_THRESHOLD_MINUTES',
  maxKeepAliveMinutes: 'DUMONT_MAX_KEEP_ALIVE_MINUTES',
  keepAliveBudgetMinutes: 'DUMONT_KEEP_ALIVE_BUDGET_MINUTES',
  ownerMayDisable: 'DUMONT_OWNER_MAY_DISABLE',
};
const POLICY_LIMIT_NAMES: Record<keyof AdminLimits, string> = {
  maxThresholdMinutes: 'max_threshold_minutes',
  maxKeepAliveMinutes: 'max_keep_alive_minutes',
  keepAliveBudgetMinutes: 'keep_alive_budget_minutes',
  ownerMayDisable: 'owner_may_disable',
};

/** Every beat asks; the answer depends only on the (immutable) compiled policy and the defaults. */
const boundLimitsCache = new WeakMap<AdminLimits, Map<CompiledPolicy | null, BoundLimits>>();

/** A policy's own limits, else the server's. */
export function limitsOf(policy: CompiledPolicy | null, defaults: AdminLimits): BoundLimits {
  let perPolicy = boundLimitsCache.get(defaults);
  if (!perPolicy) boundLimitsCache.set(defaults, (perPolicy = new Map()));
  let bound = perPolicy.get(policy);
  if (!bound) {
    // Bounded: policies replaced over a long run would otherwise pile up here.
    if (perPolicy.size > 1_000) perPolicy.clear();
    perPolicy.set(policy, (bound = computeLimits(policy, defaults)));
  }
  return bound;
}

function computeLimits(policy: CompiledPolicy | null, defaults: AdminLimits): BoundLimits {
  const own = policy?.spec.limits ?? {};
  const limits: AdminLimits = {
    maxThresholdMinutes: own.max_threshold_minutes ?? defaults.maxThresholdMinutes,
    maxKeepAliveMinutes: own.max_keep_alive_minutes ?? defaults.maxKeepAliveMinutes,
    keepAliveBudgetMinutes: own.keep_alive_budget_minutes !== undefined ? own.keep_alive_budget_minutes : defaults.keepAliveBudgetMinutes,
    ownerMayDisable: own.owner_may_disable ?? defaults.ownerMayDisable,
  };
  const origin = {} as Record<keyof AdminLimits, string>;
  for (const key of Object.keys(SERVER_LIMIT_NAMES) as (keyof AdminLimits)[]) {
    origin[key] = own[POLICY_LIMIT_NAMES[key] as keyof typeof own] !== undefined ? `policy "${policy!.name}" limits.${POLICY_LIMIT_NAMES[key]}` : SERVER_LIMIT_NAMES[key];
  }
  return { ...limits, origin };
}

export function effectivePolicy(
  policy: CompiledPolicy | null,
  instance: InstanceOverrides,
  defaults: PolicyDefaults,
  now: number,
): EffectivePolicy {
  const spec = policy?.spec;
  const limits = limitsOf(policy, defaults);
  const fromPolicy = <T>(own: T | undefined, fallback: T): Sourced<T> =>
    own !== undefined ? { value: own, source: 'policy' } : { value: fallback, source: 'default' };

  let thresholdMinutes: Sourced<number>;
  if (instance.thresholdMinutes !== null) {
    thresholdMinutes =
      instance.thresholdSetByAdmin || instance.thresholdMinutes <= limits.maxThresholdMinutes
        ? { value: instance.thresholdMinutes, source: 'instance' }
        : { value: limits.maxThresholdMinutes, source: 'limit' };
  } else {
    thresholdMinutes = fromPolicy(spec?.threshold_minutes, defaults.idleThresholdMinutes);
  }

  let enabled: Sourced<boolean>;
  if (instance.enabledSetByAdmin) enabled = { value: instance.hibernationEnabled, source: 'instance' };
  else if (spec?.enabled === false) enabled = { value: false, source: 'policy' };
  else if (!instance.hibernationEnabled) enabled = limits.ownerMayDisable ? { value: false, source: 'instance' } : { value: true, source: 'limit' };
  else enabled = fromPolicy(spec?.enabled, true);

  let dryRun: Sourced<boolean>;
  if (defaults.dryRun) dryRun = { value: true, source: 'default' };
  else if (instance.dryRunSetByAdmin) dryRun = { value: instance.dryRun, source: 'instance' };
  else if (spec?.dry_run === true) dryRun = { value: true, source: 'policy' };
  else if (instance.dryRun) dryRun = limits.ownerMayDisable ? { value: true, source: 'instance' } : { value: false, source: 'limit' };
  else dryRun = fromPolicy(spec?.dry_run, false);

  // A policy's provider holds: an owner could otherwise escape the stop by naming `none`.
  const provider: Sourced<string> =
    spec?.provider !== undefined
      ? { value: spec.provider, source: 'policy' }
      : instance.provider !== null
        ? { value: instance.provider, source: 'instance' }
        : { value: defaults.provider, source: 'default' };

  let withinActiveHours: boolean | null = null;
  let scheduleForce: string | null = null;
  if (policy?.schedule) {
    const schedule = policy.schedule.spec;
    withinActiveHours = isWithinActiveHours(policy.schedule, now);
    if (!withinActiveHours) {
      if (schedule.outside === 'hibernate') {
        scheduleForce = `schedule of policy "${policy.name}": outside its active hours (${schedule.active.join(', ')} ${schedule.timezone})`;
      } else if (schedule.outside_threshold_minutes !== undefined && schedule.outside_threshold_minutes < thresholdMinutes.value) {
        thresholdMinutes = { value: schedule.outside_threshold_minutes, source: 'schedule' };
      }
    }
  }

  return {
    policy,
    idleUtilizationPercent: fromPolicy(spec?.idle_utilization_percent, defaults.idleUtilizationPercent),
    thresholdMinutes,
    warningSeconds: fromPolicy(spec?.warning_seconds, defaults.hibernationWarningSeconds),
    enabled,
    provider,
    dryRun,
    maxUptimeHours: spec?.max_uptime_hours ?? null,
    limits,
    withinActiveHours,
    scheduleForce,
    signals: (spec?.signals ?? []) as SignalSpec[],
  };
}

/** When the schedule's state changes next (for the detail); null without a schedule or a change within 8 days. */
export function nextScheduleChangeOf(effective: EffectivePolicy, now: number): number | null {
  return effective.policy?.schedule ? nextScheduleChange(effective.policy.schedule, now) : null;
}
