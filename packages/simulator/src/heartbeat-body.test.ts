import { MAX_GPUS_PER_HOST } from '@dumont/protocol';
import { describe, expect, it } from 'vitest';
import { initialState, sampleHost } from './behaviour.js';
import { planFleet } from './fleet-plan.js';
import { heartbeatBody, nextTimestamp } from './heartbeat-body.js';

describe('heartbeatBody', () => {
  const plan = planFleet({ seed: 8, agents: 400, firstInstanceId: 5000 });
  const now = Date.parse('2026-03-01T12:00:00Z');

  it('carries per-GPU rows and their aggregate (max utilization, summed memory)', () => {
    const spec = plan.find((a) => a.profile === 'busy' && a.gpus.length >= 4)!;
    const sample = sampleHost(spec, initialState(spec, now), now, 0, { daySeconds: 600 });
    const body = heartbeatBody(spec, sample, new Date(now).toISOString());
    expect(body.instance_id).toBe(spec.instanceId);
    expect(body.hostname).toBe(spec.hostname);
    expect(body.gpus).toHaveLength(spec.gpus.length);
    expect(body.gpu_metrics!.utilization_percent).toBe(Math.max(...sample.gpus.map((g) => g.utilization_percent as number)));
    expect(body.gpu_metrics!.memory_total_mb).toBe(spec.gpus.reduce((n, g) => n + g.memoryTotalMb, 0));
    expect(body.command_results).toBeUndefined();
    const ack = heartbeatBody(spec, sample, new Date(now).toISOString(), [{ id: 'c1', status: 'succeeded', detail: 'done' }]);
    expect(ack.command_results).toEqual([{ id: 'c1', status: 'succeeded', detail: 'done' }]);
  });

  it('stays far below the server body limit (64 KiB) for the largest host', () => {
    const largest = plan.reduce((a, b) => (b.gpus.length > a.gpus.length ? b : a));
    expect(largest.gpus.length).toBeLessThanOrEqual(MAX_GPUS_PER_HOST);
    const sample = sampleHost(largest, initialState(largest, now), now, 0, { daySeconds: 600 });
    expect(Buffer.byteLength(JSON.stringify(heartbeatBody(largest, sample, new Date(now).toISOString())))).toBeLessThan(8 * 1024);
  });

  it('stamps strictly increasing times even within one millisecond', () => {
    expect(nextTimestamp(0, 1000)).toBe(1000);
    expect(nextTimestamp(1000, 1000)).toBe(1001);
    expect(nextTimestamp(1005, 1000)).toBe(1006);
  });
});
