import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_RETRY_AFTER_MS, backoffCeiling, beatDelay, parseRetryAfter, retryDelay } from './backoff.js';

const opts = { baseMs: 1000, capMs: 300_000 };

describe('retry backoff', () => {
  it('doubles its ceiling per failure up to the cap', () => {
    expect([1, 2, 3, 4, 9, 10, 50].map((n) => backoffCeiling(n, opts))).toEqual([1000, 2000, 4000, 8000, 256_000, 300_000, 300_000]);
  });

  it('uses full jitter: anywhere from 0 to the ceiling', () => {
    expect(retryDelay(4, () => 0, opts)).toBe(0);
    expect(retryDelay(4, () => 0.5, opts)).toBe(4000);
    expect(retryDelay(4, () => 0.999, opts)).toBeCloseTo(7992);
  });

  it('stays within [0, min(cap, base·2^(n-1))) for any failure count and random value', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (n, r) => {
        const d = retryDelay(n, () => r, opts);
        return d >= 0 && d < Math.min(opts.capMs, 1000 * 2 ** (n - 1)) + 1e-9;
      }),
    );
  });

  it('spreads a fleet that failed together: 1000 agents at their 6th failure do not come back at once', () => {
    // A seeded generator stands in for each agent's Math.random.
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const delays = Array.from({ length: 1000 }, () => retryDelay(6, random, opts));
    const buckets = new Array(8).fill(0) as number[];
    for (const d of delays) buckets[Math.floor(d / 4000)]! += 1;
    // Uniform over 0–32 s: every 4 s slice gets about an eighth, none gets the crowd.
    for (const b of buckets) expect(b).toBeGreaterThan(80);
    for (const b of buckets) expect(b).toBeLessThan(170);
  });

  it('never retries before Retry-After, and spreads retries after it', () => {
    expect(retryDelay(1, () => 0, opts, 10_000)).toBe(10_000);
    expect(retryDelay(1, () => 0.5, opts, 10_000)).toBe(10_500);
    expect(retryDelay(8, () => 0.999, opts, 10_000)).toBeCloseTo(19_990);
    expect(retryDelay(1, () => 0, opts, 10 * 24 * 3600_000)).toBe(MAX_RETRY_AFTER_MS);
  });

  it('sleeps the server’s interval ±10 %', () => {
    expect(beatDelay(30_000, () => 0)).toBe(27_000);
    expect(beatDelay(30_000, () => 0.5)).toBe(30_000);
    expect(beatDelay(30_000, () => 0.999)).toBeCloseTo(32_994);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2024-12-20T15:30:00Z');
  it.each([
    ['120', 120_000],
    [' 3 ', 3000],
    ['0.5', 500],
    ['Fri, 20 Dec 2024 15:30:30 GMT', 30_000],
    ['Fri, 20 Dec 2024 15:29:00 GMT', 0],
    ['soon', null],
    ['', null],
    [undefined, null],
  ] as const)('%j → %j', (value, expected) => {
    expect(parseRetryAfter(value, now)).toBe(expected);
  });
});
