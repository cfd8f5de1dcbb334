/**
 * One interface for every way of stopping and starting a machine (Vast.ai's API, a signed webhook, a
 * cloud CLI). The outbox worker calls it, never a heartbeat; whatever happens becomes an outcome.
 */

export type ProviderActionKind = 'stop' | 'start';

export interface ProviderAction {
  /** The outbox row's id: the same for every attempt of one action (a webhook's `webhook-id`). */
  id: string;
  kind: ProviderActionKind;
  instanceId: number;
  /** The id the provider knows the machine by (validated: `^[A-Za-z0-9_.-]{1,128}$`). */
  providerInstanceId: string;
  hostname: string | null;
  owner: string;
  reason: string;
}

export type ProviderOutcome =
  | { ok: true }
  | {
      ok: false;
      /** 5xx, 429, a timeout or a connection error: try again later. Any other refusal: give up now. */
      retryable: boolean;
      /** For the event log and `provider.last_error`; never holds a credential. */
      message: string;
      /** The provider asked for this wait (429 `Retry-After`), in ms. */
      retryAfterMs?: number;
    };

export interface Provider {
  /** As instances name it (`provider`): `none`, `vast`, `webhook`, `command`. */
  readonly name: string;
  /** Never throws and never outlives `timeoutMs` by much: a hang is a retryable failure. */
  execute(action: ProviderAction, timeoutMs: number): Promise<ProviderOutcome>;
}

/** The default: the agent's pre-hibernate hook is all; nothing outside is called. */
export const noneProvider: Provider = {
  name: 'none',
  execute: async () => ({ ok: true }),
};
