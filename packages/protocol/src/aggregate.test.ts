import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { aggregateGpuMetrics } from './aggregate.js';

const gpu = (index: number, utilization: number | null, memory = 1000) => ({
  index,
  utilization_percent: utilization,
  memory_used_mb: memory,
  memory_total_mb: 24_000,
  temperature_celsius: 40 + index,
  power_watts: 100,
});

describe('aggregateGpuMetrics', () => {
  it('takes the busiest GPU, not the average: one busy GPU of eight reads as busy', () => {
    const gpus = [gpu(0, 97), ...[1, 2, 3, 4, 5, 6, 7].map((i) => gpu(i, 0))];
    const agg = aggregateGpuMetrics(gpus);
    expect(agg.utilization_percent).toBe(97);
    expect(agg.memory_used_mb).toBe(8000);
    expect(agg.memory_total_mb).toBe(192_000);
    expect(agg.power_watts).toBe(800);
    expect(agg.temperature_celsius).toBe(47);
  });

  it('is unknown when any GPU is unknown', () => {
    expect(aggregateGpuMetrics([gpu(0, 0), gpu(1, null)]).utilization_percent).toBeNull();
    expect(aggregateGpuMetrics([{ index: 0 }]).memory_used_mb).toBeNull();
  });

  it('is unknown for no GPUs at all', () => {
    expect(aggregateGpuMetrics([]).utilization_percent).toBeNull();
  });

  it('never reports less utilization than any single known GPU', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 100 }), { minLength: 1, maxLength: 16 }), (utils) => {
        const agg = aggregateGpuMetrics(utils.map((u, i) => gpu(i, u)));
        return utils.every((u) => (agg.utilization_percent as number) >= u);
      }),
    );
  });
});
