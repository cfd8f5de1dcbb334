/**
 * Delays between beats. After a failure: exponential backoff with full jitter (a uniformly random
 * delay between 0 and min(cap, base·2^(n-1))), so a fleet that lost its server together does not
 * come back together. A Retry-After is a floor: the delay is that plus a random share of it.
 */
export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BASE_BACKOFF_MS = 1000;
/** A Retry-After beyond this is treated as this: a bad header must not silence an agent for days. */
export const MAX_RETRY_AFTER_MS = 60 * 60 * 1000;

export function backoffCeiling(attempt: number, { baseMs, capMs }: BackoffOptions): number {
  const exp = baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30);
  return Math.min(capMs, exp);
}

/** `attempt` counts consecutive failures, from 1. `random` returns [0, 1). */
export function retryDelay(attempt: number, random: () => number, options: BackoffOptions, retryAfterMs: number | null = null): number {
  const ceiling = backoffCeiling(attempt, options);
  if (retryAfterMs === null) return random() * ceiling;
  const floor = Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  return floor + random() * Math.min(ceiling, floor);
}

/** The server's `next_heartbeat_in`, ±10 % so agents started together drift apart. */
export function beatDelay(intervalMs: number, random: () => number): number {
  return intervalMs * (0.9 + 0.2 * random());
}

/** Retry-After is seconds or an HTTP date (RFC 9110 §10.2.3); null when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | null {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined || raw.trim() === '') return null;
  const text = raw.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}
