import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { Pacer } from './pacer.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('Pacer', () => {
  it('runs items in due order, each not before its time', async () => {
    const started: Array<{ item: number; at: number }> = [];
    let done = 0;
    const pacer = new Pacer<number>({
      concurrency: 4,
      run: async (item) => {
        started.push({ item, at: performance.now() });
        done += 1;
      },
    });
    const t0 = performance.now();
    const due = [60, 10, 40, 20, 0, 30];
    due.forEach((offset, i) => pacer.schedule(t0 + offset, i));
    while (done < due.length) await sleep(5);
    await pacer.stop();
    expect(started.map((s) => s.item)).toEqual([4, 1, 3, 5, 2, 0]);
    for (const s of started) expect(s.at).toBeGreaterThanOrEqual(t0 + due[s.item]! - 1);
  });

  it('never has more than `concurrency` runs at once, and reports how late queued items started', async () => {
    let active = 0;
    let peak = 0;
    const lateness: number[] = [];
    const pacer = new Pacer<number>({
      concurrency: 3,
      run: async (_item, lateMs) => {
        lateness.push(lateMs);
        active += 1;
        peak = Math.max(peak, active);
        await sleep(20);
        active -= 1;
      },
    });
    const t0 = performance.now();
    for (let i = 0; i < 12; i++) pacer.schedule(t0, i);
    while (lateness.length < 12) await sleep(5);
    await pacer.stop();
    expect(peak).toBe(3);
    // 12 items, 3 at a time, 20 ms each: the last three waited about 60 ms for a slot.
    expect(Math.max(...lateness)).toBeGreaterThanOrEqual(55);
  });

  it('stop() waits for runs in progress and drops what is still waiting', async () => {
    const ran: number[] = [];
    let finished = 0;
    const pacer = new Pacer<number>({
      concurrency: 2,
      run: async (item) => {
        ran.push(item);
        await sleep(30);
        finished += 1;
      },
    });
    const t0 = performance.now();
    pacer.schedule(t0, 1);
    pacer.schedule(t0, 2);
    pacer.schedule(t0 + 10_000, 3);
    await sleep(10);
    await pacer.stop();
    expect(finished).toBe(2);
    pacer.schedule(t0, 4);
    await sleep(20);
    expect(ran).toEqual([1, 2]);
  });

  it('keeps going after a run throws, reporting the error', async () => {
    const errors: string[] = [];
    let ok = 0;
    const pacer = new Pacer<number>({
      concurrency: 1,
      run: async (item) => {
        if (item === 1) throw new Error('boom');
        ok += 1;
      },
      onError: (error, item) => errors.push(`${item}: ${(error as Error).message}`),
    });
    const t0 = performance.now();
    [1, 2, 3].forEach((i) => pacer.schedule(t0, i));
    while (ok < 2) await sleep(5);
    await pacer.stop();
    expect(errors).toEqual(['1: boom']);
  });
});
