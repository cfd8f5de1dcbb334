import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FleetStore } from '../store/store.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';

/**
 * A plain beat is read without a lock and written with a compare-and-set on the version it read. Here
 * an operator's change commits between that read and that write (the store below runs it right after
 * the unlocked read returns), on a real server over HTTP and both engines: the beat must be decided
 * again on the locked path, so the operator's change stays, the beat's metrics are stored once, and
 * the answer describes the instance as it is after both.
 */

const INSTANCE = 456789;
const idleBeat = (memoryUsedMb = 100) => ({
  instance_id: INSTANCE,
  gpu_metrics: { utilization_percent: 0, memory_used_mb: memoryUsedMb, memory_total_mb: 24576 },
  process_count: 0,
});

/** The real store, with a hook run once after its next unlocked `getLifecycle` (the plain beat's read). */
function racingStore(store: FleetStore): { store: FleetStore; raceAfterRead(work: () => Promise<void>): void; raced(): number } {
  let race: (() => Promise<void>) | null = null;
  let raced = 0;
  const proxy = new Proxy(store, {
    get(target, property) {
      if (property === 'getLifecycle') {
        return async (instanceId: number, options?: { forUpdate?: boolean }) => {
          const row = await target.getLifecycle(instanceId, options);
          const work = options?.forUpdate ? null : race;
          if (work) {
            race = null;
            raced += 1;
            await work();
          }
          return row;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { store: proxy, raceAfterRead: (work) => void (race = work), raced: () => raced };
}

for (const backend of await testBackends()) {
  // Only stores that take the optimistic path (PostgreSQL); SQLite runs every beat in its group commit.
  const optimistic = backend.name === 'postgres';
  describe.skipIf(backend.skipReason !== null || !optimistic)(`a plain beat racing an operator (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    let racing: ReturnType<typeof racingStore>;
    let token: string;

    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      expect(db.store.optimisticPlainBeats).toBe(true);
      racing = racingStore(db.store);
      t = await new TestServer(async () => racing.store).start();
      token = await t.register(INSTANCE);
      // Scheduled after a minute of idle beats; the beats after that are plain (a countdown, no event).
      await t.request('PATCH', `/api/v1/agent/instances/${INSTANCE}/hibernation`, { body: { threshold_minutes: 1 } });
      const countdown = [];
      for (let i = 0; i < 4; i++) {
        countdown.push((await t.beat(token, idleBeat())).json.hibernate_in_seconds);
        t.clock.advance(30_000);
      }
      expect(countdown).toEqual([null, null, 300, 270]);
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    const detail = async () => (await t.request('GET', `/api/v1/agent/instances/${INSTANCE}`)).json;

    it('the same beat with nothing racing is plain: a countdown, no event', async () => {
      const events = await t.eventTypes(INSTANCE);
      const res = await t.beat(token, idleBeat(4242));
      expect(res.json).toMatchObject({ commands: [], hibernate_in_seconds: 240 });
      expect(await t.eventTypes(INSTANCE)).toEqual(events);
      expect(await detail()).toMatchObject({ heartbeat_count: 5, gpu_metrics: { memory_used_mb: 4242 }, hibernation: { scheduled: true } });
    });

    it('a keep-alive committed between the read and the write is kept, and the answer has no countdown', async () => {
      racing.raceAfterRead(async () => {
        const res = await t.request('POST', `/api/v1/agent/instances/${INSTANCE}/keep-alive?minutes=60`);
        expect(res.status).toBe(200);
      });
      const res = await t.beat(token, idleBeat(4242));
      expect(racing.raced()).toBe(1);
      expect(res.status).toBe(200);
      // The plain write would have answered from the row it read: 240 s to a hibernation.
      expect(res.json).toMatchObject({ commands: [], hibernate_in_seconds: null });
      const after = await detail();
      expect(after).toMatchObject({ heartbeat_count: 5, gpu_metrics: { memory_used_mb: 4242 }, hibernation: { scheduled: false, scheduled_at: null } });
      expect(after.postponed_until).toBe(new Date(t.clock.now() + 60 * 60_000).toISOString());
      // Past the countdown the row had when the beat read it: the keep-alive holds, nothing is issued.
      for (let i = 0; i < 12; i++) {
        t.clock.advance(30_000);
        const beat = (await t.beat(token, idleBeat())).json;
        expect(beat).toMatchObject({ commands: [], hibernate_in_seconds: null });
      }
      expect(await t.eventTypes(INSTANCE)).not.toContain('command_issued');
    });

    it('hibernation disabled between the read and the write stays disabled and unscheduled', async () => {
      racing.raceAfterRead(async () => {
        const res = await t.request('PATCH', `/api/v1/agent/instances/${INSTANCE}/hibernation`, { body: { enabled: false } });
        expect(res.status).toBe(200);
      });
      const res = await t.beat(token, idleBeat(4242));
      expect(racing.raced()).toBe(1);
      expect(res.json).toMatchObject({ commands: [], hibernate_in_seconds: null });
      expect(await detail()).toMatchObject({
        heartbeat_count: 5,
        gpu_metrics: { memory_used_mb: 4242 },
        hibernation: { enabled: false, scheduled: false, scheduled_at: null },
      });
    });

    it('a command issued between the read and the write goes out in the answer to that beat', async () => {
      let commandId = '';
      racing.raceAfterRead(async () => {
        const res = await t.request('POST', `/api/v1/agent/instances/${INSTANCE}/commands`, { body: { type: 'snapshot' } });
        expect(res.status).toBe(201);
        commandId = res.json.id;
      });
      const res = await t.beat(token, idleBeat(4242));
      expect(racing.raced()).toBe(1);
      expect(res.json.commands.map((c: { id: string }) => c.id)).toEqual([commandId]);
      expect(await detail()).toMatchObject({ heartbeat_count: 5, gpu_metrics: { memory_used_mb: 4242 } });
      expect(await t.eventTypes(INSTANCE)).toContain('command_delivered');
    });
  });
}
