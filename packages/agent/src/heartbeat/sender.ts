import type { DeliveredCommand, HeartbeatRequest, HeartbeatResponse } from '@dumont/protocol';
import { describeHttpFailure, httpRequest } from '../http-json.js';
import { parseRetryAfter } from './backoff.js';

/** What one POST of a heartbeat came to. Every failure is a value: the loop decides what to do. */
export type SendOutcome =
  | { kind: 'ok'; response: HeartbeatResponse }
  /** The server answered with an error status (its `{error, message, field?}` when it sent one). */
  | { kind: 'rejected'; status: number; error: string | null; message: string; field: string | null; retryAfterMs: number | null }
  /** No answer: refused, reset, DNS, TLS, timeout. */
  | { kind: 'unreachable'; message: string }
  /** A 2xx whose body is not a heartbeat response. */
  | { kind: 'bad-response'; status: number; message: string };

export type Sender = (body: HeartbeatRequest) => Promise<SendOutcome>;

export interface HttpSenderOptions {
  endpoint: string;
  token: string;
  timeoutMs: number;
  userAgent: string;
  now?: () => number;
}

export function createHttpSender(options: HttpSenderOptions): Sender {
  const now = options.now ?? Date.now;
  return async (body) => {
    const outcome = await httpRequest(options.endpoint, {
      method: 'POST',
      timeoutMs: options.timeoutMs,
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${options.token}`,
        'user-agent': options.userAgent,
      },
      body: JSON.stringify(body),
    });
    if (outcome.kind !== 'response') return { kind: 'unreachable', message: describeHttpFailure(outcome) };
    if (outcome.status < 200 || outcome.status > 299) {
      let parsed: { error?: unknown; message?: unknown; field?: unknown } = {};
      try {
        parsed = JSON.parse(outcome.body) as typeof parsed;
      } catch {
        // a proxy's HTML error page
      }
      return {
        kind: 'rejected',
        status: outcome.status,
        error: typeof parsed.error === 'string' ? parsed.error : null,
        message: typeof parsed.message === 'string' ? parsed.message : outcome.body.slice(0, 200),
        field: typeof parsed.field === 'string' ? parsed.field : null,
        retryAfterMs: parseRetryAfter(outcome.headers['retry-after'], now()),
      };
    }
    return readResponse(outcome.status, outcome.body);
  };
}

/** Checks the fields the agent acts on; anything else in the body is ignored. */
export function readResponse(status: number, text: string): SendOutcome {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { kind: 'bad-response', status, message: 'body is not JSON' };
  }
  const r = json as Partial<Record<keyof HeartbeatResponse, unknown>> | null;
  if (!r || typeof r !== 'object') return { kind: 'bad-response', status, message: 'body is not an object' };
  const next = r.next_heartbeat_in;
  if (typeof next !== 'number' || !Number.isFinite(next) || next < 0) return { kind: 'bad-response', status, message: 'next_heartbeat_in is missing or invalid' };
  const hib = r.hibernate_in_seconds ?? null;
  if (hib !== null && (typeof hib !== 'number' || !Number.isFinite(hib) || hib < 0)) {
    return { kind: 'bad-response', status, message: 'hibernate_in_seconds is invalid' };
  }
  const raw = r.commands ?? [];
  if (!Array.isArray(raw)) return { kind: 'bad-response', status, message: 'commands is not a list' };
  const commands: DeliveredCommand[] = [];
  for (const c of raw as Array<Record<string, unknown>>) {
    // A command without an id cannot be acknowledged, so it cannot be run at most once.
    if (!c || typeof c.id !== 'string' || c.id === '') continue;
    commands.push({
      id: c.id,
      // Kept even when unreadable: the runner reports it failed instead of ignoring it forever.
      type: (typeof c.type === 'string' ? c.type : String(c.type)) as DeliveredCommand['type'],
      args: c.args && typeof c.args === 'object' && !Array.isArray(c.args) ? (c.args as Record<string, unknown>) : {},
      issued_at: typeof c.issued_at === 'string' ? c.issued_at : '',
    });
  }
  return { kind: 'ok', response: { success: r.success !== false, commands, hibernate_in_seconds: hib, next_heartbeat_in: next } };
}

export function describeSendFailure(outcome: Exclude<SendOutcome, { kind: 'ok' }>): string {
  switch (outcome.kind) {
    case 'rejected':
      return `HTTP ${outcome.status}${outcome.error ? ` ${outcome.error}` : ''}: ${outcome.message}${outcome.field ? ` (field ${outcome.field})` : ''}`;
    case 'unreachable':
      return `server unreachable: ${outcome.message}`;
    case 'bad-response':
      return `unexpected answer (HTTP ${outcome.status}): ${outcome.message}`;
  }
}
