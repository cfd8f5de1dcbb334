import { callHttp, excerpt, type HttpAnswer } from './http-call.js';
import type { Provider, ProviderAction, ProviderActionKind, ProviderOutcome } from './provider.js';

export interface VastProviderOptions {
  /** Vast.ai's console, `https://console.vast.ai` unless configured otherwise. */
  apiUrl: string;
  apiKey: string;
}

/** The instance states Vast.ai's CLI asks for (`vastai stop instance`, `vastai start instance`). */
const TARGET_STATE: Record<ProviderActionKind, string> = { stop: 'stopped', start: 'running' };

const SAFE_INSTANCE_ID = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * Stops and starts Vast.ai instances through Vast.ai's REST API, with the very request its official CLI
 * sends (test-fixtures/vast-cli): `PUT /api/v0/instances/{id}/` with the wanted state.
 */
export function createVastProvider(options: VastProviderOptions): Provider {
  const apiUrl = options.apiUrl.replace(/\/+$/, '');
  requireHttpUrl(apiUrl);
  const hideKey = keyRedactor(options.apiKey);
  return {
    name: 'vast',
    async execute(action: ProviderAction, timeoutMs: number): Promise<ProviderOutcome> {
      const id = action.providerInstanceId;
      // Validated upstream already; checked again because this id becomes part of a URL path that carries our key.
      if (!SAFE_INSTANCE_ID.test(id) || id === '.' || id === '..') {
        return { ok: false, retryable: false, message: 'refused: provider instance id is not a plain Vast.ai instance id' };
      }
      try {
        const outcome = await callHttp(
          {
            method: 'PUT',
            url: `${apiUrl}/api/v0/instances/${encodeURIComponent(id)}/`,
            headers: { Authorization: `Bearer ${options.apiKey}`, 'Content-Type': 'application/json' },
            body: JSON.stringify({ state: TARGET_STATE[action.kind] }),
            timeoutMs,
          },
          acceptVastAnswer,
        );
        return hideKey(outcome);
      } catch (error) {
        // callHttp classifies what it expects; this is for what it does not, since execute must never throw.
        return hideKey({ ok: false, retryable: true, message: `vast: ${(error as Error).message}` });
      }
    },
  };
}

/** Vast.ai answers some refusals with 200 and `{"success": false, "msg": ...}`: retrying would not change them. */
function acceptVastAnswer(answer: HttpAnswer): ProviderOutcome {
  let said: unknown;
  try {
    said = JSON.parse(answer.text);
  } catch {
    return { ok: true };
  }
  if (typeof said !== 'object' || said === null || (said as { success?: unknown }).success !== false) return { ok: true };
  const { msg, error } = said as { msg?: unknown; error?: unknown };
  const why = [msg, error].find((value) => value !== undefined && value !== null && value !== '');
  const text = why === undefined ? '' : excerpt(typeof why === 'string' ? why : JSON.stringify(why));
  return { ok: false, retryable: false, message: `Vast.ai refused${text ? `: ${text}` : ' (success: false)'}` };
}

/** Outcome messages go to the event log; a server that echoes the request must not put our key there. */
function keyRedactor(apiKey: string): (outcome: ProviderOutcome) => ProviderOutcome {
  return (outcome) => {
    if (outcome.ok || apiKey === '' || !outcome.message.includes(apiKey)) return outcome;
    return { ...outcome, message: outcome.message.split(apiKey).join('[redacted]') };
  };
}

/** Checked once at start, so a typo fails the boot instead of every action. Not echoed: a URL may hold credentials. */
function requireHttpUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error('DUMONT_VAST_API_URL is not a URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error('DUMONT_VAST_API_URL must be an http:// or https:// URL');
  }
}
