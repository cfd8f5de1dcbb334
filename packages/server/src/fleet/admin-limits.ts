import { DumontError, type HibernationPolicyPatch } from '@dumont/protocol';
import type { ServerConfig } from '../config.js';
import type { InstanceSettings, StoredEvent } from '../store/store.js';

/**
 * What an owner (a non-admin key or session) may do to an instance's hibernation: beyond a limit the
 * request is refused (403), never clamped, and a value an owner stored before a limit was lowered is
 * bounded when evaluated. Admin keys may exceed any limit.
 *
 * These are the server-wide defaults (DUMONT_MAX_THRESHOLD_MINUTES, …); named per-group policies
 * will supply other values through `limitsOf`, and nothing downstream of it changes.
 */
export interface AdminLimits {
  maxThresholdMinutes: number;
  maxKeepAliveMinutes: number;
  /** Keep-alive minutes owners may grant one instance per rolling 24 h; null = unlimited. */
  keepAliveBudgetMinutes: number | null;
  /** Whether an owner may set `enabled: false` or `dry_run: true`. */
  ownerMayDisable: boolean;
}

export const KEEP_ALIVE_BUDGET_WINDOW_MS = 24 * 3_600_000;

/** The limits that apply to one instance. */
export function limitsOf(
  _settings: InstanceSettings,
  config: Pick<ServerConfig, 'maxThresholdMinutes' | 'maxKeepAliveMinutes' | 'keepAliveBudgetMinutes' | 'ownerMayDisable'>,
): AdminLimits {
  return {
    maxThresholdMinutes: config.maxThresholdMinutes,
    maxKeepAliveMinutes: config.maxKeepAliveMinutes,
    keepAliveBudgetMinutes: config.keepAliveBudgetMinutes,
    ownerMayDisable: config.ownerMayDisable,
  };
}

/** The bounded settings' values as the policy applies them (null threshold: the server default, unbounded). */
export function boundedSettings(
  settings: InstanceSettings,
  limits: AdminLimits,
): { thresholdMinutes: number | null; enabled: boolean; dryRun: boolean } {
  const threshold = settings.thresholdMinutes;
  return {
    thresholdMinutes: threshold === null || settings.thresholdSetByAdmin ? threshold : Math.min(threshold, limits.maxThresholdMinutes),
    enabled: settings.hibernationEnabled || (!limits.ownerMayDisable && !settings.enabledSetByAdmin),
    dryRun: settings.dryRun && (limits.ownerMayDisable || settings.dryRunSetByAdmin),
  };
}

const forbidden = (field: string, message: string) => new DumontError('forbidden', `${field}: ${message}`, field);

/** Refuses an owner's hibernation patch that goes beyond a limit; an admin's passes. */
export function checkHibernationPatch(limits: AdminLimits, patch: HibernationPolicyPatch, admin: boolean): void {
  if (admin) return;
  if (patch.threshold_minutes !== undefined && patch.threshold_minutes > limits.maxThresholdMinutes) {
    throw forbidden(
      'threshold_minutes',
      `${patch.threshold_minutes} is above this server's limit of ${limits.maxThresholdMinutes} minutes for owners (DUMONT_MAX_THRESHOLD_MINUTES); an admin may set it`,
    );
  }
  if (!limits.ownerMayDisable) {
    if (patch.enabled === false) {
      throw forbidden('enabled', `owners may not turn hibernation off on this server (DUMONT_OWNER_MAY_DISABLE=off); an admin may`);
    }
    if (patch.dry_run === true) {
      throw forbidden('dry_run', `owners may not put an instance in dry-run on this server (DUMONT_OWNER_MAY_DISABLE=off); an admin may`);
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
export function keepAliveLeft(limits: AdminLimits, used: number): number | null {
  return limits.keepAliveBudgetMinutes === null ? null : Math.max(0, limits.keepAliveBudgetMinutes - used);
}

/** Refuses an owner's keep-alive beyond the per-request limit or the budget left; an admin's passes. */
export function checkKeepAlive(limits: AdminLimits, minutes: number, used: number, admin: boolean): void {
  if (admin) return;
  if (minutes > limits.maxKeepAliveMinutes) {
    throw forbidden(
      'minutes',
      `${minutes} is above this server's limit of ${limits.maxKeepAliveMinutes} minutes per keep-alive for owners (DUMONT_MAX_KEEP_ALIVE_MINUTES); an admin may ask it`,
    );
  }
  const left = keepAliveLeft(limits, used);
  if (left !== null && minutes > left) {
    throw forbidden(
      'minutes',
      `${minutes} is more than the ${left} keep-alive minutes left of this instance's budget of ${limits.keepAliveBudgetMinutes} minutes per 24 h for owners (DUMONT_KEEP_ALIVE_BUDGET_MINUTES); an admin may ask it`,
    );
  }
}
