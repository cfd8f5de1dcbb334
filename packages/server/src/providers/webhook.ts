import { callHttp } from './http-call.js';
import type { Provider, ProviderAction, ProviderOutcome } from './provider.js';
import { signedHeaders } from './standard-webhooks.js';

export interface WebhookProviderOptions {
  url: string;
  /** The key from `parseWebhookSecret`. */
  secret: Buffer;
  now?: () => number;
}

/** The payload shape Standard Webhooks recommends: a type, when, and the event's data. */
export interface WebhookActionBody {
  type: 'instance.stop' | 'instance.start';
  timestamp: string;
  data: {
    instance_id: number;
    provider_instance_id: string;
    hostname: string | null;
    owner: string;
    reason: string;
  };
}

export function webhookActionBody(action: ProviderAction, at: number): WebhookActionBody {
  return {
    type: action.kind === 'stop' ? 'instance.stop' : 'instance.start',
    timestamp: new Date(at).toISOString(),
    data: {
      instance_id: action.instanceId,
      provider_instance_id: action.providerInstanceId,
      hostname: action.hostname,
      owner: action.owner,
      reason: action.reason,
    },
  };
}

/**
 * Stops and starts machines by calling the operator's own endpoint, signed so it can tell our calls
 * from anyone's. Any 2xx means done; what the endpoint answers is not read.
 */
export function createWebhookProvider(options: WebhookProviderOptions): Provider {
  requireHttpUrl(options.url);
  const now = options.now ?? Date.now;
  return {
    name: 'webhook',
    async execute(action: ProviderAction, timeoutMs: number): Promise<ProviderOutcome> {
      // Signed afresh at every attempt: a retry hours later would carry a timestamp receivers refuse.
      const at = now();
      const body = JSON.stringify(webhookActionBody(action, at));
      const headers = {
        'content-type': 'application/json',
        ...signedHeaders(options.secret, action.id, at / 1000, body),
      };
      return callHttp({ method: 'POST', url: options.url, headers, body, timeoutMs });
    },
  };
}

/** Checked once at start, so a typo fails the boot instead of every action. The URL is not echoed: it may hold a token. */
export function requireHttpUrl(url: string, variable = 'webhook url'): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`${variable} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`${variable} must be an http:// or https:// URL`);
  }
}
