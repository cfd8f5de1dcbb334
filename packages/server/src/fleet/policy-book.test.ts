import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { testBackends } from '../test-support/backends.js';
import type { FleetStore, StoredPolicy } from '../store/store.js';
import { POLICY_REFRESH_MS, PolicyBook } from './policy-book.js';

/** The per-process policy cache over a real SQLite store. */
const sqlite = (await testBackends()).find((b) => b.name === 'sqlite')!;

const policy = (name: string, priority: number, at: number, extra: Record<string, unknown> = {}): StoredPolicy => ({
  name,
  priority,
  spec: { selector: [`kind=${name}`], priority, ...extra },
  createdAt: at,
  updatedAt: at,
  updatedBy: 'admin',
});

describe('PolicyBook', () => {
  let store: FleetStore;
  let dispose: () => Promise<void>;
  const clock = new ManualClock();
  const errors: unknown[] = [];
  beforeEach(async () => {
    const db = await sqlite.open();
    store = db.store;
    dispose = db.dispose;
    errors.length = 0;
  });
  afterEach(async () => {
    await store.close();
    await dispose();
  });

  it('a read that started before a newer one finished does not put the older policies back', async () => {
    await store.putPolicy(policy('notebooks', 10, 1));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    // The first read sees the store as it was, but answers only after the second one.
    const slow = { listPolicies: async () => { const seen = await store.listPolicies(); await gate; return seen; } };
    const book = new PolicyBook(store, clock);
    const older = book.load(slow);
    await store.putPolicy(policy('notebooks', 10, 2, { threshold_minutes: 20 }));
    await book.load();
    release();
    expect((await older)[0]!.spec.threshold_minutes).toBeUndefined();
    expect(book.current()[0]!.spec.threshold_minutes).toBe(20);
  });

  it('re-reads in the background once stale, without making the caller wait', async () => {
    const book = new PolicyBook(store, clock);
    await book.load();
    await store.putPolicy(policy('training', 20, 3));
    expect(book.current()).toEqual([]);
    clock.advance(POLICY_REFRESH_MS + 1);
    expect(book.current()).toEqual([]); // this call starts the re-read
    // The re-read is real I/O on the store: wait for it to land, not for a time to pass.
    for (let i = 0; i < 200 && book.current().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(book.current().map((p) => p.name)).toEqual(['training']);
  });

  it('a stored policy this server cannot compile keeps matching with hibernation off, or is left out when its selector does not read; the server still starts', async () => {
    await store.putPolicy(policy('zoned', 30, 4, { threshold_minutes: 5, schedule: { timezone: 'Mars/Olympus', active: ['Mon 08:00-20:00'], outside: 'hibernate' } }));
    await store.putPolicy({ ...policy('broken', 20, 4), spec: { selector: ['Bad Key=1'], priority: 20 } });
    await store.putPolicy(policy('fine', 10, 4));
    const book = new PolicyBook(store, clock, (error) => errors.push(error));
    const loaded = await book.load();
    expect(loaded.map((p) => p.name)).toEqual(['zoned', 'fine']);
    expect(loaded[0]!.spec.enabled).toBe(false);
    expect(loaded[0]!.schedule).toBeNull();
    expect(String(errors[0])).toContain('policy "broken" cannot be read');
  });
});
