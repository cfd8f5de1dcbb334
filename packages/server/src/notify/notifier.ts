import { callHttp } from '../providers/http-call.js';
import type { ProviderOutcome } from '../providers/provider.js';
import { signedHeaders } from '../providers/standard-webhooks.js';
import { requireHttpUrl } from '../providers/webhook.js';

export const NOTIFICATION_TYPES = [
  'hibernation.scheduled',
  'hibernation.cancelled',
  'instance.hibernated',
  'hibernation.failed',
  'instance.offline',
  'instance.woke',
  'wake.failed',
  'provider.failed',
] as const;

export type NotificationType = (typeof NOTIFICATION_TYPES)[number];

export interface Notification {
  type: NotificationType;
  /** ms since epoch, when it happened (server clock) */
  at: number;
  instanceId: number;
  hostname: string | null;
  owner: string;
  providerInstanceId: string;
  reason: string;
  /** event extras, e.g. scheduled_at (ISO), idle_seconds, threshold_minutes, provider, action, message */
  data: Record<string, unknown>;
}

export interface NotifierOptions {
  url: string;
  /** The key from `parseWebhookSecret`; null sends unsigned (e.g. a Slack incoming webhook). */
  secret: Buffer | null;
  /** `standard`: the Standard Webhooks payload, for programs; `slack`: `{"text"}`, for people. */
  format: 'standard' | 'slack';
  /** Where people reach this server, for the keep-alive command in a message. */
  publicUrl: string;
  now?: () => number;
}

/**
 * Tells people what happened to their machines. The outbox retries; `send` is one attempt, signed
 * with the outbox row's id so a receiver can drop a duplicate delivery.
 */
export class Notifier {
  private readonly now: () => number;

  constructor(private readonly options: NotifierOptions) {
    requireHttpUrl(options.url, 'notification url');
    this.now = options.now ?? Date.now;
  }

  send(id: string, notification: Notification, timeoutMs: number): Promise<ProviderOutcome> {
    const payload =
      this.options.format === 'slack' ? { text: slackText(notification, this.options.publicUrl) } : standardNotificationBody(notification);
    const body = JSON.stringify(payload);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.options.secret !== null) Object.assign(headers, signedHeaders(this.options.secret, id, this.now() / 1000, body));
    return callHttp({ method: 'POST', url: this.options.url, headers, body, timeoutMs });
  }
}

export function standardNotificationBody(notification: Notification): { type: NotificationType; timestamp: string; data: Record<string, unknown> } {
  const data: Record<string, unknown> = {
    instance_id: notification.instanceId,
    hostname: notification.hostname,
    owner: notification.owner,
    provider_instance_id: notification.providerInstanceId,
    reason: notification.reason,
  };
  // An extra never overrides who the event is about.
  for (const [key, value] of Object.entries(notification.data)) if (!(key in data)) data[key] = value;
  return { type: notification.type, timestamp: new Date(notification.at).toISOString(), data };
}

/** One sentence for a person, in Slack's markup. */
export function slackText(notification: Notification, publicUrl: string): string {
  const n = notification;
  const who = n.hostname ? `${slackEscape(n.hostname)} (instance ${n.instanceId})` : `instance ${n.instanceId}`;
  const because = n.reason ? `: ${slackEscape(n.reason)}` : '';
  switch (n.type) {
    case 'hibernation.scheduled': {
      const when = utcTime(n.data.scheduled_at);
      const idle = idleMinutes(n.data);
      const keepAlive = `${publicUrl.replace(/\/+$/, '')}/api/v1/agent/instances/${n.instanceId}/keep-alive?minutes=60`;
      // Double quotes so the shell expands the key; single quotes around the URL so zsh does not glob `?`.
      const command = `curl -X POST -H "Authorization: Bearer $DUMONT_API_KEY" '${keepAlive}'`;
      return `${who} will hibernate ${when ? `at ${when}` : 'soon'}${idle === null ? '' : `, idle ${idle} min`}; keep it with: \`${slackEscape(command)}\``;
    }
    case 'hibernation.cancelled':
      return `${who} will not hibernate after all${because}`;
    case 'instance.hibernated':
      return `${who} hibernated at ${utcTime(n.at) ?? 'an unknown time'}${because}`;
    case 'hibernation.failed':
      return `${who} could not be hibernated and is still running${because}`;
    case 'instance.offline':
      return `${who} went offline${because}`;
    case 'instance.woke':
      return `${who} is awake again${because}`;
    case 'wake.failed':
      return `${who} could not be woken${because}`;
    case 'provider.failed': {
      const provider = typeof n.data.provider === 'string' ? `The ${slackEscape(n.data.provider)} provider` : 'The provider';
      const action = typeof n.data.action === 'string' ? slackEscape(n.data.action) : 'act on';
      const message = typeof n.data.message === 'string' && n.data.message ? `: ${slackEscape(n.data.message)}` : because;
      return `${provider} failed to ${action} ${who}${message}`;
    }
  }
}

/** Slack reads `<`, `>` and `&` as markup (`<!channel>`, links); hostnames and reasons are not ours. */
function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** `14:05 UTC` from an ISO string or ms; null when absent or unreadable. */
function utcTime(value: unknown): string | null {
  const at = typeof value === 'number' ? value : typeof value === 'string' ? Date.parse(value) : Number.NaN;
  if (!Number.isFinite(at)) return null;
  return `${new Date(at).toISOString().slice(11, 16)} UTC`;
}

function idleMinutes(data: Record<string, unknown>): number | null {
  if (typeof data.idle_seconds === 'number' && Number.isFinite(data.idle_seconds)) return Math.round(data.idle_seconds / 60);
  if (typeof data.threshold_minutes === 'number' && Number.isFinite(data.threshold_minutes)) return data.threshold_minutes;
  return null;
}
