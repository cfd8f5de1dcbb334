import type { ProviderOutcome } from './provider.js';

const MESSAGE_CHARS = 300;

export interface HttpCall {
  method: 'POST' | 'PUT';
  url: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
}

/** `Retry-After` as seconds or an HTTP date, in ms from `now`; null when absent or unreadable. */
export function retryAfterMs(value: string | null, now: number = Date.now()): number | null {
  if (value === null || value.trim() === '') return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** A short, single-line excerpt of what the other side said, for the event log. */
export function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > MESSAGE_CHARS ? `${flat.slice(0, MESSAGE_CHARS)}…` : flat;
}

/**
 * Sends one request and classifies the answer the way every HTTP provider retries: 2xx is handed to
 * `accept` (which may still refuse, e.g. `{"success": false}`), 5xx, 429, a timeout or a refused
 * connection are retryable, any other status fails at once.
 */
export async function callHttp(call: HttpCall, accept: (answer: HttpAnswer) => ProviderOutcome = () => ({ ok: true })): Promise<ProviderOutcome> {
  let response: Response;
  let text: string;
  try {
    response = await fetch(call.url, {
      method: call.method,
      headers: call.headers,
      body: call.body,
      redirect: 'manual',
      signal: AbortSignal.timeout(call.timeoutMs),
    });
    text = await response.text();
  } catch (error) {
    const e = error as Error & { cause?: { code?: string; message?: string } };
    const timedOut = e.name === 'TimeoutError' || e.name === 'AbortError';
    const why = timedOut ? `no answer within ${Math.round(call.timeoutMs / 1000)} s` : (e.cause?.code ?? e.cause?.message ?? e.message);
    return { ok: false, retryable: true, message: `${call.method} ${new URL(call.url).host}: ${why}` };
  }
  const answer = { status: response.status, headers: response.headers, text };
  if (response.status >= 200 && response.status < 300) return accept(answer);
  const said = excerpt(text);
  const message = `HTTP ${response.status}${said ? `: ${said}` : ''}`;
  const retryable = response.status === 429 || response.status >= 500;
  // A 503 may say when to come back as well as a 429.
  const wait = retryable ? retryAfterMs(response.headers.get('retry-after')) : null;
  return wait === null ? { ok: false, retryable, message } : { ok: false, retryable, message, retryAfterMs: wait };
}
