import { describe, expect, it } from 'vitest';
import { LatencyHistogram } from './latency-histogram.js';
import { Rng } from './prng.js';

const exact = (sorted: number[], p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;

describe('LatencyHistogram', () => {
  it('gives percentiles within about 1 % of the exact ones over a wide range', () => {
    const rng = new Rng(3);
    const h = new LatencyHistogram();
    const samples: number[] = [];
    for (let i = 0; i < 50_000; i++) {
      // Log-uniform from 10 µs to 10 s, like real latencies with a long tail.
      const v = 10 ** rng.between(-2, 4);
      samples.push(v);
      h.record(v);
    }
    samples.sort((a, b) => a - b);
    for (const p of [1, 50, 90, 99, 99.9]) {
      const want = exact(samples, p);
      expect(Math.abs(h.percentile(p) - want) / want).toBeLessThan(0.011);
    }
    expect(h.max).toBe(samples[samples.length - 1]);
    expect(h.count).toBe(50_000);
  });

  it('merges like one histogram and answers 0 when empty', () => {
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    const both = new LatencyHistogram();
    expect(a.percentile(99)).toBe(0);
    for (let i = 1; i <= 100; i++) {
      (i % 2 ? a : b).record(i);
      both.record(i);
    }
    a.merge(b);
    expect(a.count).toBe(100);
    expect(a.percentile(50)).toBe(both.percentile(50));
    expect(a.percentile(99)).toBe(both.percentile(99));
  });
});
