import { DumontError, type HibernationPolicyPatch } from '@dumont/protocol';
import type { BoundLimits, CompiledPolicy } from '../policy/effective-policy.js';
import type { StoredEvent } from '../store/store.js';

/**
 * What an owner (a non-admin key or session) may do to an instance's hibernation: beyond a limit the
 * request is refused (403), never clamped, and a value an owner stored before a limit was lowered is
 * bounded when evaluated (policy/effective-policy.ts). Admin keys may exceed any limit. The limits are
 * the instance's policy's, else the server's (DUMONT_MAX_THRESHOLD_MINUTES, …); a refusal names which.
 */

export const KEEP_ALIVE_BUDGET_WINDOW_MS = 24 * 3_600_000;

/** Where the rule that owners may not disable comes from, for a refusal's message. */
const whereOwnersMayNotDisable = (limits: BoundLimits) =>
  limits.origin.ownerMayDisable.startsWith('DUMONT_') ? 'on this server (DUMONT_OWNER_MAY_DISABLE=off)' : `here (${limits.origin.ownerMayDisable}: false)`;

const forbidden = (field: string, message: string) => new DumontError('forbidden', `${field}: ${message}`, field);

/** Refuses an owner's hibernation patch that goes beyond a limit; an admin's passes. */
export function checkHibernationPatch(limits: BoundLimits, patch: HibernationPolicyPatch, admin: boolean): void {
  if (admin) return;
  if (patch.threshold_minutes !== undefined && patch.threshold_minutes !== null && patch.threshold_minutes > limits.maxThresholdMinutes) {
    throw forbidden(
      'threshold_minutes',
      `${patch.threshold_minutes} is above the limit of ${limits.maxThresholdMinutes} minutes for owners (${limits.origin.maxThresholdMinutes}); an admin may set it`,
    );
  }
  if (!limits.ownerMayDisable) {
    const where = whereOwnersMayNotDisable(limits);
    if (patch.enabled === false) {
      throw forbidden('enabled', `owners may not turn hibernation off ${where}; an admin may`);
    }
    if (patch.dry_run === true) {
      throw forbidden('dry_run', `owners may not put an instance in dry-run ${where}; an admin may`);
    }

  }
}

/**
 * The keep-alive minutes owners granted in the window ending at `now`, from the instance's `keep_alive`
 * events (newest first, as `listEvents` pages them). An event from before the events named who made
 * them counts as an owner's: the budget errs on the side of the limit.
 */
export function ownerKeepAliveMinutes(events: readonly StoredEvent[], now: number): number {
  let used = 0;
  for (const event of events) {
    if (event.type !== 'keep_alive' || event.at <= now - KEEP_ALIVE_BUDGET_WINDOW_MS || event.data.by_admin === true) continue;
    used += keepAliveMinutesOf(event);
  }
  return used;
}

function keepAliveMinutesOf(event: StoredEvent): number {
  if (typeof event.data.minutes === 'number') return event.data.minutes;
  const until = typeof event.data.postponed_until === 'string' ? Date.parse(event.data.postponed_until) : NaN;
  return Number.isFinite(until) ? Math.max(0, Math.round((until - event.at) / 60_000)) : 0;
}

/** The keep-alive minutes owners may still grant; null = unlimited. */
export function keepAliveLeft(limits: BoundLimits, used: number): number | null {
  return limits.keepAliveBudgetMinutes === null ? null : Math.max(0, limits.keepAliveBudgetMinutes - used);
}

/** Refuses an owner's keep-alive beyond the per-request limit or the budget left; an admin's passes. */
export function checkKeepAlive(limits: BoundLimits, minutes: number, used: number, admin: boolean): void {
  if (admin) return;
  if (minutes > limits.maxKeepAliveMinutes) {
    throw forbidden(
      'minutes',
      `${minutes} is above the limit of ${limits.maxKeepAliveMinutes} minutes per keep-alive for owners (${limits.origin.maxKeepAliveMinutes}); an admin may ask it`,
    );
  }
  const left = keepAliveLeft(limits, used);
  if (left !== null && minutes > left) {
    throw forbidden(
      'minutes',
      `${minutes} is more than the ${left} keep-alive minutes left of this instance's budget of ${limits.keepAliveBudgetMinutes} minutes per 24 h for owners (${limits.origin.keepAliveBudgetMinutes}); an admin may ask it`,
    );
  }
}

/**
 * Labels choose an instance's policy: an owner who could relabel an instance into another policy could
 * leave its limits and schedule behind. Only an admin may change which policy governs an instance.
 */
export function checkPolicyMove(before: CompiledPolicy | null, after: CompiledPolicy | null, admin: boolean): void {
  if (admin || before?.name === after?.name) return;
  const name = (p: CompiledPolicy | null) => (p === null ? 'the server defaults' : `policy "${p.name}"`);
  throw forbidden('labels', `this change would move the instance from ${name(before)} to ${name(after)}; only an admin may change which policy governs an instance`);
}

/**
 * Judged on the outcome, not the request: an owner's `enabled: true` that replaces an admin's value
 * hands the decision back to the policy, whose own value may be off. Where owners may not disable,
 * no owner's change may leave hibernation off, or dry-run on, that was not before.
 */
export function checkOwnerOutcome(
  before: { enabled: boolean; dryRun: boolean },
  after: { enabled: boolean; dryRun: boolean },
  limits: BoundLimits,
  admin: boolean,
): void {
  if (admin || limits.ownerMayDisable) return;
  const where = whereOwnersMayNotDisable(limits);
  if (before.enabled && !after.enabled) throw forbidden('enabled', `this change would leave hibernation off (an admin's value on the instance gives way to the policy's), and owners may not turn it off ${where}; an admin may`);
  if (!before.dryRun && after.dryRun) throw forbidden('dry_run', `this change would leave the instance in dry-run (an admin's value on the instance gives way to the policy's), and owners may not choose dry-run ${where}; an admin may`);
}

/** Refuses an owner's provider when the instance's policy sets one: the policy's would hold anyway, and silently. */
export function checkProviderPatch(policyProvider: string | undefined, policyName: string | undefined, provider: string | undefined, admin: boolean): void {
  if (admin || provider === undefined || policyProvider === undefined || provider === policyProvider) return;
  throw forbidden('provider', `policy "${policyName}" sets this instance's provider to "${policyProvider}"; an admin may change the policy`);
}
