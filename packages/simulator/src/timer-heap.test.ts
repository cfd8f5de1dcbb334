import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TimerHeap } from './timer-heap.js';

describe('TimerHeap', () => {
  it('pops in due order, equal times in insertion order', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 300 }), (times) => {
        const heap = new TimerHeap<number>();
        times.forEach((t, i) => heap.push(t, i));
        const out: Array<[number, number]> = [];
        for (let e = heap.pop(); e; e = heap.pop()) out.push([e.at, e.item]);
        const expected = times.map((t, i) => [t, i] as [number, number]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        expect(out).toEqual(expected);
      }),
    );
  });

  it('reports Infinity and undefined when empty', () => {
    const heap = new TimerHeap<string>();
    expect(heap.peekAt()).toBe(Infinity);
    expect(heap.pop()).toBeUndefined();
    heap.push(5, 'x');
    expect(heap.peekAt()).toBe(5);
    expect(heap.size).toBe(1);
  });
});
