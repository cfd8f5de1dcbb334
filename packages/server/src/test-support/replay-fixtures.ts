import type { FleetStore } from '../store/store.js';

/**
 * An instance as a replay reads it: registered to `owner` at `at` with a price, and with `gpus` GPUs
 * (the replay multiplies by the GPU count of the instance's last beat, stored here as one).
 */
export async function replayInstance(store: FleetStore, instanceId: number, owner: string, gpus: number, pricePerHour: number | null, at: number): Promise<void> {
  await store.insertInstance({ instanceId, owner, agentTokenHash: `hash-${instanceId}`, hostname: `gpu-${instanceId}`, registeredAt: at, settings: { pricePerHour } });
  const current = (await store.getLifecycle(instanceId))!;
  await store.updateInstance(instanceId, current.version, {
    metrics: {
      agentTimestamp: new Date(at).toISOString(),
      agentTimestampMs: at,
      aggregate: { utilization_percent: 0, memory_used_mb: 0, memory_total_mb: 0, temperature_celsius: 0, power_watts: 0 },
      gpus: Array.from({ length: gpus }, (_, index) => ({ index })),
      gpuCount: gpus,
      processCount: 0,
      activeUsers: 0,
      lastActivity: null,
      agentVersion: null,
      collectorErrors: [],
    },
  });
}
