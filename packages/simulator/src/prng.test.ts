import { describe, expect, it } from 'vitest';
import { deriveSeed, Rng } from './prng.js';

describe('Rng', () => {
  it('replays the same sequence for the same seed and a different one for another seed', () => {
    const draw = (seed: number) => {
      const rng = new Rng(seed);
      return Array.from({ length: 20 }, () => rng.next());
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it('stays in range: next in [0, 1), int inclusive at both ends', () => {
    const rng = new Rng(7);
    const ints = new Set<number>();
    for (let i = 0; i < 10_000; i++) {
      const x = rng.next();
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
      ints.add(rng.int(1, 8));
    }
    expect([...ints].sort()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('picks weighted keys in proportion and never a zero-weight one', () => {
    const rng = new Rng(1);
    const counts = { a: 0, b: 0, c: 0 };
    for (let i = 0; i < 20_000; i++) counts[rng.weighted([['a', 3], ['b', 1], ['c', 0]] as const)] += 1;
    expect(counts.c).toBe(0);
    expect(counts.a / counts.b).toBeGreaterThan(2.6);
    expect(counts.a / counts.b).toBeLessThan(3.4);
  });

  it('derives independent seeds per item and stream', () => {
    const seeds = new Set<number>();
    for (let i = 0; i < 1000; i++) for (let s = 0; s < 3; s++) seeds.add(deriveSeed(99, i, s));
    expect(seeds.size).toBe(3000);
    expect(deriveSeed(99, 5, 1)).toBe(deriveSeed(99, 5, 1));
  });
});
