import type { PolicyEvent } from '../policy/hibernation-policy.js';
import type { Notification, NotificationType } from './notifier.js';

/** Which lifecycle events a person hears about, and under which name. */
const NOTIFIED: Partial<Record<PolicyEvent['type'], NotificationType>> = {
  hibernation_scheduled: 'hibernation.scheduled',
  hibernation_cancelled: 'hibernation.cancelled',
  hibernated: 'instance.hibernated',
  hibernation_failed: 'hibernation.failed',
  offline: 'instance.offline',
  woke: 'instance.woke',
  wake_failed: 'wake.failed',
};

/**
 * The notification an event makes, if any. A provider failure is told once, when the outbox gives
 * up (`final`), not at every retry.
 */
export function notificationOf(
  event: PolicyEvent,
  instance: { instanceId: number; hostname: string | null; owner: string },
  providerInstanceId: string,
  at: number,
): Notification | null {
  const providerFailed = (event.type === 'provider_stop_failed' || event.type === 'provider_start_failed') && event.data?.final === true;
  const type = providerFailed ? 'provider.failed' : NOTIFIED[event.type];
  if (type === undefined) return null;
  return {
    type,
    at,
    instanceId: instance.instanceId,
    hostname: instance.hostname,
    owner: instance.owner,
    providerInstanceId,
    reason: event.reason,
    data: { ...(event.data ?? {}) },
  };
}
