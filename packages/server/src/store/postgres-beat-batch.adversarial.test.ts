import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import type { FleetStore } from './store.js';

/**
 * Three replicas on one database, each batching its plain beats per turn, racing locked transactions
 * of the same instances. Every write reads a count and stores the count plus one, with a
 * compare-and-set on the version it read: if a batch ever answered true for a write it did not make
 * (two beats of one row in one batch, a row another replica changed), or lost one it made, the stored
 * count would differ from the number of writes that were told they succeeded.
 */

const postgres = (await testBackends()).find((b) => b.name === 'postgres')!;
const INSTANCES = 6;

type Operation = { replica: number; instance: number; locked: boolean };

describe.skipIf(postgres.skipReason !== null)('PostgreSQL plain beat batches under three replicas (adversarial)', () => {
  let db: Awaited<ReturnType<typeof postgres.open>>;
  let replicas: FleetStore[];

  beforeEach(async () => {
    db = await postgres.open();
    replicas = [db.store, await db.reopen(), await db.reopen()];
  });
  afterEach(async () => {
    for (const replica of replicas) await replica.close();
    await db.dispose();
  });

  /** A plain beat: an unlocked (batched) read, then a batched compare-and-set on what it read. */
  async function plainBeat(store: FleetStore, instanceId: number): Promise<boolean> {
    const read = await store.getLifecycle(instanceId);
    return store.writePlainBeat(instanceId, read!.version, { heartbeatCount: read!.heartbeatCount + 1 });
  }

  /** A transition: the row locked, then written; it always succeeds. */
  async function lockedWrite(store: FleetStore, instanceId: number): Promise<boolean> {
    return store.transaction(async (repo) => {
      const row = await repo.getLifecycle(instanceId, { forUpdate: true });
      return repo.updateInstance(instanceId, row!.version, { heartbeatCount: row!.heartbeatCount + 1 });
    });
  }

  it('every write told it succeeded is counted once, and no other', async () => {
    let base = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.array(fc.record({ replica: fc.nat({ max: 2 }), instance: fc.nat({ max: INSTANCES - 1 }), locked: fc.boolean() }), {
            minLength: 1,
            maxLength: 30,
          }),
          { minLength: 1, maxLength: 4 },
        ),
        async (waves: Operation[][]) => {
          base += INSTANCES;
          for (let i = 0; i < INSTANCES; i++) {
            await db.store.insertInstance({ instanceId: base + i, owner: 'alice', agentTokenHash: `hash-${base + i}`, hostname: null, registeredAt: 0 });
          }
          const succeeded = new Array<number>(INSTANCES).fill(0);
          for (const wave of waves) {
            // One wave is issued in one turn: each replica batches its share, the locks interleave.
            const outcomes = await Promise.all(
              wave.map((op) => (op.locked ? lockedWrite : plainBeat)(replicas[op.replica]!, base + op.instance).then((ok) => ({ op, ok }))),
            );
            for (const { op, ok } of outcomes) if (ok) succeeded[op.instance]! += 1;
          }
          for (let i = 0; i < INSTANCES; i++) {
            const stored = (await db.store.getLifecycle(base + i))!;
            expect(stored.heartbeatCount, `instance ${base + i}`).toBe(succeeded[i]);
            expect(stored.version, `instance ${base + i}`).toBe(succeeded[i]);
          }
          // Every wave moved each instance it touched at least once: a plain beat loses only to a write that won.
          const touched = new Set(waves.flatMap((wave) => wave.map((op) => op.instance)));
          for (const i of touched) expect(succeeded[i]).toBeGreaterThan(0);
        },
      ),
      { numRuns: 25 },
    );
  });
});
