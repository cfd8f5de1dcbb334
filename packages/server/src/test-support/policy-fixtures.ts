import type { InstancePolicy, PolicySettings } from '../policy/hibernation-policy.js';

/** The shared starting points of the pure policy's tests. */

export const S = 1000;
export const MIN = 60 * S;
export const T0 = Date.parse('2026-01-01T00:00:00Z');

export const DEFAULT_SETTINGS: PolicySettings = {
  idleUtilizationPercent: 5,
  hibernationWarningSeconds: 300,
  offlineAfterSeconds: 90,
  hibernateTimeoutSeconds: 600,
  freshnessSeconds: 30,
  wakeTimeoutSeconds: 900,
};

/** Hibernation on, the server's threshold of 30 minutes, no provider, no dry-run. */
export const DEFAULT_POLICY: InstancePolicy = { enabled: true, thresholdMinutes: 30, ignoreGpuProcesses: false, stopsThroughProvider: false, dryRun: false };

/** A registered instance that never sent a beat. */
export { NEVER_SEEN } from '../policy/hibernation-policy.js';
