import fc from 'fast-check';
import { INSTANCE_STATUSES, PROVIDER_STATES } from '@dumont/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TestBackend } from '../test-support/backends.js';
import { rowsOf } from '../test-support/rows.js';
import { newInstanceRow, type NewInstanceRow, type OutboxRow } from './schema.js';
import { INSTANCE_ORDER_KEYS, type FleetStore, type InstanceListQuery, type InstanceOrderKey, type InstanceSortValue, type InstanceListEntry, type MetricsSample } from './store.js';

/** Every page of a list walked with keyset cursors from each page's last row. */
export async function walkInstances(store: FleetStore, query: Omit<InstanceListQuery, 'after' | 'limit'>, pageSize: number): Promise<InstanceListEntry[]> {
  const all: InstanceListEntry[] = [];
  let after: InstanceListQuery['after'];
  for (let pages = 0; ; pages++) {
    if (pages > 10_000) throw new Error('paging does not end');
    const page = await store.listInstances({ ...query, after, limit: pageSize });
    all.push(...page);
    if (page.length < pageSize) return all;
    const last = page[page.length - 1]!;
    after = { value: last.sortKey ?? null, instanceId: last.instanceId };
  }
}

/** What each order sorts on, as the API's numbers would order (see ORDER_KEY_SQL). */
export function orderValueOf(row: NewInstanceRow, key: InstanceOrderKey): InstanceSortValue {
  switch (key) {
    case 'instance_id':
      return row.instance_id;
    case 'hostname':
      return row.hostname ?? null;
    case 'last_heartbeat':
      return row.last_heartbeat_at ?? null;
    case 'gpu_utilization':
      return row.utilization_percent ?? null;
    case 'idle_seconds': {
      const since = row.idle_since ?? null;
      const last = row.last_heartbeat_at ?? null;
      return since === null || last === null ? 0 : Math.max(0, Math.floor((last - since) / 1000));
    }
    case 'hibernate_in_seconds':
      return row.status === 'hibernating' ? 0 : (row.scheduled_at ?? null);
  }
}

/** The expected order: by value (unknown last either way), ties by instance id in the same direction. */
export function expectedOrder(rows: readonly NewInstanceRow[], key: InstanceOrderKey, descending: boolean): number[] {
  const sign = descending ? -1 : 1;
  return [...rows]
    .sort((a, b) => {
      const va = orderValueOf(a, key);
      const vb = orderValueOf(b, key);
      if (va === null || vb === null) {
        if (va !== vb) return va === null ? 1 : -1;
      } else if (va !== vb) {
        return sign * (va < vb ? -1 : 1);
      }
      return sign * (a.instance_id - b.instance_id);
    })
    .map((r) => r.instance_id);
}

const T = 1_767_225_600_000; // epoch ms well past 2^32, as real timestamps are

/** A one-GPU heartbeat's readings at `utilization` percent. */
function sample(utilization: number): MetricsSample {
  const gpu = { index: 0, utilization_percent: utilization, memory_used_mb: 100, memory_total_mb: 1000, temperature_celsius: null, power_watts: 50 };
  return {
    agentTimestamp: new Date(T).toISOString(),
    agentTimestampMs: T,
    aggregate: { utilization_percent: utilization, memory_used_mb: 100, memory_total_mb: 1000, temperature_celsius: null, power_watts: 50 },
    gpus: [gpu],
    gpuCount: 1,
    processCount: null,
    activeUsers: null,
    lastActivity: null,
    agentVersion: null,
    collectorErrors: [],
  };
}

export function instanceRow(instanceId: number, overrides: Partial<NewInstanceRow> = {}): NewInstanceRow {
  return newInstanceRow({
    instance_id: instanceId,
    owner: 'alice',
    agent_token_hash: `hash-${instanceId}`,
    hostname: `gpu-${instanceId}`,
    registered_at: T,
    ...overrides,
  });
}

/** The one store contract, run against every backend (see store.test.ts). */
export function storeContract(backend: TestBackend): void {
  describe.skipIf(backend.skipReason !== null)(`store contract: ${backend.name}`, () => {
    let db: Awaited<ReturnType<TestBackend['open']>>;
    let store: FleetStore;
    beforeEach(async () => {
      db = await backend.open();
      store = db.store;
    });
    afterEach(async () => {
      await store.close();
      await db.dispose();
    });

    it('round-trips an instance with millisecond times and nulls as numbers and nulls', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(456789, { last_heartbeat_at: T + 1, deadline: T + 90_000, threshold_minutes: 0.05 }));
      const row = await rowsOf(store).getInstanceRow(456789);
      expect(row).toMatchObject({ instance_id: 456789, last_heartbeat_at: T + 1, deadline: T + 90_000, threshold_minutes: 0.05, idle_since: null, version: 0 });
      expect(typeof row!.heartbeat_count).toBe('number');
      expect(await rowsOf(store).getInstanceRow(1)).toBeUndefined();
      expect(await store.findInstanceIdByTokenHash('hash-456789')).toBe(456789);
      expect(await store.findInstanceIdByTokenHash('nope')).toBeUndefined();
    });

    it('speaks the domain: a new instance and a change come back as facts, settings and readings, untouched fields kept', async () => {
      await store.insertInstance({
        instanceId: 31,
        owner: 'alice',
        agentTokenHash: 'hash-31',
        hostname: 'gpu-31',
        registeredAt: T,
        settings: { provider: 'vast', providerInstanceId: 'v-31', pricePerHour: 1.5, dryRun: true },
      });
      const fresh = (await store.getInstance(31))!;
      expect(fresh).toMatchObject({
        instanceId: 31,
        owner: 'alice',
        hostname: 'gpu-31',
        registeredAt: T,
        version: 0,
        facts: { status: 'offline', lastHeartbeatAt: null, idleSince: null, providerState: null },
        settings: { hibernationEnabled: true, thresholdMinutes: null, ignoreGpuProcesses: false, dryRun: true, provider: 'vast', providerInstanceId: 'v-31', pricePerHour: 1.5 },
        readings: { agentTimestamp: null, gpus: [], gpuCount: 0, collectorErrors: [], aggregate: { utilization_percent: null } },
      });
      const readings = { ...sample(42), collectorErrors: [{ collector: 'nvidia-smi', message: 'timed out' }] };
      const changed = await store.updateInstance(31, 0, {
        facts: { status: 'idle', idleSince: T + 1, lastHeartbeatAt: T + 2 },
        deadline: T + 3,
        settings: { hibernationEnabled: false, thresholdMinutes: 0.5 },
        metrics: readings,
        hibernateCommandId: 'command-1',
        openCommands: 1,
        heartbeatCount: 3,
      });
      expect(changed).toBe(true);
      const after = (await store.getInstance(31))!;
      expect(after).toMatchObject({
        version: 1,
        deadline: T + 3,
        hibernateCommandId: 'command-1',
        openCommands: 1,
        heartbeatCount: 3,
        agentTimestampMs: T,
        gpuCount: 1,
        facts: { status: 'idle', idleSince: T + 1, lastHeartbeatAt: T + 2, onlineSince: null },
        settings: { hibernationEnabled: false, thresholdMinutes: 0.5, dryRun: true, provider: 'vast', pricePerHour: 1.5 },
      });
      const { agentTimestampMs: _parsed, ...stored } = readings;
      expect(after.readings).toEqual(stored);
      const { readings: _readings, registeredAt: _registered, providerError: _error, providerUpdatedAt: _updated, ...lifecycle } = after;
      expect(await store.getLifecycle(31)).toEqual(lifecycle);
      // What the change left out is left as it was: the row itself shows the 0/1 flags and the JSON.
      expect(await rowsOf(store).getInstanceRow(31)).toMatchObject({ hibernation_enabled: 0, dry_run: 1, hostname: 'gpu-31', gpus_json: JSON.stringify(readings.gpus) });
    });

    it('any sequence of domain changes reads back as the same changes applied to the domain (property)', async () => {
      const time = fc.option(fc.integer({ min: T, max: T + 1e10 }), { nil: null });
      const text = fc.string({ maxLength: 12 }).filter((t) => !t.includes('\u0000'));
      const amount = fc.double({ min: 0, max: 1e6, noNaN: true }).map((x) => x + 0);
      const facts = fc.record(
        {
          status: fc.constantFrom(...INSTANCE_STATUSES),
          lastHeartbeatAt: time,
          idleSince: time,
          scheduledAt: time,
          postponedUntil: time,
          hibernateIssuedAt: time,
          onlineSince: time,
          offlineSince: time,
          providerState: fc.option(fc.constantFrom(...PROVIDER_STATES), { nil: null }),
          wakeRequestedAt: time,
          savingSince: time,
        },
        { requiredKeys: [] },
      );
      const settings = fc.record(
        {
          hibernationEnabled: fc.boolean(),
          thresholdMinutes: fc.option(amount, { nil: null }),
          ignoreGpuProcesses: fc.boolean(),
          dryRun: fc.boolean(),
          provider: fc.option(fc.constantFrom('vast', 'webhook', 'command'), { nil: null }),
          providerInstanceId: fc.option(text, { nil: null }),
          pricePerHour: fc.option(amount, { nil: null }),
        },
        { requiredKeys: [] },
      );
      const change = fc.record(
        {
          facts,
          settings,
          deadline: time,
          hostname: fc.option(text, { nil: null }),
          hibernateCommandId: fc.option(fc.uuid(), { nil: null }),
          openCommands: fc.nat({ max: 50 }),
          heartbeatCount: fc.nat({ max: 1e9 }),
          metrics: fc.integer({ min: 0, max: 100 }).map(sample),
          providerError: fc.option(text, { nil: null }),
        },
        { requiredKeys: [] },
      );
      let id = 1000;
      await fc.assert(
        fc.asyncProperty(fc.array(change, { minLength: 1, maxLength: 4 }), async (changes) => {
          id += 1;
          await store.insertInstance({ instanceId: id, owner: 'alice', agentTokenHash: `hash-${id}`, hostname: null, registeredAt: T });
          const expected = (await store.getInstance(id))!;
          for (const c of changes) {
            expect(await store.updateInstance(id, expected.version, c)).toBe(true);
            expected.version += 1;
            expected.facts = { ...expected.facts, ...c.facts };
            expected.settings = { ...expected.settings, ...c.settings };
            if (c.deadline !== undefined) expected.deadline = c.deadline;
            if (c.hostname !== undefined) expected.hostname = c.hostname;
            if (c.hibernateCommandId !== undefined) expected.hibernateCommandId = c.hibernateCommandId;
            if (c.openCommands !== undefined) expected.openCommands = c.openCommands;
            if (c.heartbeatCount !== undefined) expected.heartbeatCount = c.heartbeatCount;
            if (c.providerError !== undefined) expected.providerError = c.providerError;
            if (c.metrics !== undefined) {
              const { agentTimestampMs, ...readings } = c.metrics;
              expected.readings = readings;
              expected.agentTimestampMs = agentTimestampMs;
              expected.gpuCount = readings.gpuCount;
            }
          }
          expect(await store.getInstance(id)).toEqual(expected);
          const { readings: _r, registeredAt: _a, providerError: _e, providerUpdatedAt: _u, ...lifecycle } = expected;
          expect(await store.getLifecycle(id)).toEqual(lifecycle);
        }),
        { numRuns: 25 },
      );
    });

    it('updates only when the version matches (compare-and-set)', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      expect(await rowsOf(store).updateInstanceColumns(1, 0, { status: 'active' })).toBe(true);
      expect(await rowsOf(store).updateInstanceColumns(1, 0, { status: 'idle' })).toBe(false);
      expect(await rowsOf(store).getInstanceRow(1)).toMatchObject({ status: 'active', version: 1 });
      expect(await rowsOf(store).updateInstanceColumns(2, 0, { status: 'idle' })).toBe(false);
    });

    it('rolls a failed transaction back entirely', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      await expect(
        store.transaction(async (repo) => {
          await rowsOf(repo).updateInstanceColumns(1, 0, { status: 'idle' });
          await repo.insertEvents([{ instanceId: 1, at: T, type: 'idle_detected', reason: 'x', data: {} }]);
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect(await rowsOf(store).getInstanceRow(1)).toMatchObject({ status: 'offline', version: 0 });
      expect(await store.listEvents(1, undefined, 10)).toEqual([]);
    });

    it('isolates concurrent transactions: one failing among many rolls back alone', async () => {
      for (let id = 1; id <= 10; id++) await rowsOf(store).insertInstanceRow(instanceRow(id));
      const outcomes = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) =>
          store.transaction(async (repo) => {
            const row = await repo.getLifecycle(i + 1, { forUpdate: true });
            await rowsOf(repo).updateInstanceColumns(i + 1, row!.version, { status: 'active', heartbeat_count: i + 1 });
            await repo.insertEvents([{ instanceId: i + 1, at: T, type: 'online', reason: 'r', data: {} }]);
            if (i === 4) throw new Error('instance 5 fails');
            return i + 1;
          }),
        ),
      );
      expect(outcomes.map((o) => o.status)).toEqual(Array.from({ length: 10 }, (_, i) => (i === 4 ? 'rejected' : 'fulfilled')));
      for (let id = 1; id <= 10; id++) {
        expect(await rowsOf(store).getInstanceRow(id), `instance ${id}`).toMatchObject(
          id === 5 ? { status: 'offline', heartbeat_count: 0, version: 0 } : { status: 'active', heartbeat_count: id, version: 1 },
        );
        expect(await store.listEvents(id, undefined, 5)).toHaveLength(id === 5 ? 0 : 1);
      }
    });

    it('lists by owner and status in id order with keyset paging, and counts by status', async () => {
      for (let id = 1; id <= 25; id++) {
        await rowsOf(store).insertInstanceRow(instanceRow(id, { owner: id % 5 === 0 ? 'bob' : 'alice', status: id % 2 === 0 ? 'idle' : 'active' }));
      }
      const page1 = await store.listInstances({ owner: 'alice', limit: 7 });
      expect(page1.map((r) => r.instanceId)).toEqual([1, 2, 3, 4, 6, 7, 8]);
      const page2 = await store.listInstances({ owner: 'alice', limit: 7, afterInstanceId: 8 });
      expect(page2[0]!.instanceId).toBe(9);
      const idle = await store.listInstances({ owner: null, status: 'idle', limit: 100 });
      expect(idle.every((r) => r.status === 'idle')).toBe(true);
      expect(idle).toHaveLength(12);
      expect(Object.fromEntries(await store.countInstancesByStatus('bob'))).toEqual({ active: 3, idle: 2 });
      expect(Object.fromEntries(await store.countInstancesByStatus(null))).toEqual({ active: 13, idle: 12 });
    });

    it('pages every order with nulls last and ties by instance id, neither skipping nor repeating a row', async () => {
      // Hostnames that order alike under any collation (byte order in SQLite, the database's in PostgreSQL).
      const hostnames = ['alpha', 'bravo', null, 'charlie', 'bravo', 'alpha', null, 'delta'];
      const rows = Array.from({ length: 23 }, (_, i) => {
        const id = 100 + ((i * 7) % 23);
        const beat = i % 5 === 0 ? null : T + (i % 4) * 60_000;
        return instanceRow(id, {
          owner: i % 6 === 0 ? 'bob' : 'alice',
          hostname: hostnames[i % hostnames.length]!,
          status: ['active', 'idle', 'hibernating', 'offline'][i % 4]!,
          last_heartbeat_at: beat,
          idle_since: beat !== null && i % 3 === 0 ? beat - (i % 2) * 90_500 - 400 : null,
          scheduled_at: i % 3 === 1 ? T + (i % 2) * 5_000 : null,
          utilization_percent: i % 4 === 3 ? null : [0, 12.5, 99][i % 3]!,
        });
      });
      for (const row of rows) await rowsOf(store).insertInstanceRow(row);
      for (const key of INSTANCE_ORDER_KEYS) {
        for (const descending of [false, true]) {
          for (const owner of ['alice', null]) {
            const visible = rows.filter((r) => owner === null || r.owner === owner);
            const walked = await walkInstances(store, { owner, order: { key, descending } }, 4);
            expect(walked.map((r) => r.instanceId), `${descending ? '-' : ''}${key} for ${owner}`).toEqual(expectedOrder(visible, key, descending));
            if (key !== 'instance_id') expect(walked.map((r) => r.sortKey)).toEqual(walked.map((r) => orderValueOf(rows.find((x) => x.instance_id === r.instanceId)!, key)));
          }
        }
      }
      const hibernating = await walkInstances(store, { owner: null, status: 'hibernating', order: { key: 'hostname', descending: true } }, 2);
      expect(hibernating.map((r) => r.instanceId)).toEqual(expectedOrder(rows.filter((r) => r.status === 'hibernating'), 'hostname', true));
    });

    it('searches hostnames case-insensitively with LIKE characters taken literally, ids by their digits, and counts the matches', async () => {
      const hostnames: Record<number, string | null> = {
        1: 'GPU-Alpha.lab',
        2: 'gpu-alpha-2',
        3: '100%_done',
        4: '100x_done',
        5: 'back\\slash',
        6: null,
        7: 'node-42',
        42: 'other',
        8: 'under_score',
        9: 'underXscore',
      };
      for (const [id, hostname] of Object.entries(hostnames)) {
        await rowsOf(store).insertInstanceRow(instanceRow(Number(id), { hostname, owner: id === '9' ? 'bob' : 'alice', status: Number(id) % 2 ? 'idle' : 'active' }));
      }
      const search = async (text: string, extra: Partial<InstanceListQuery> = {}) => {
        const filter = { owner: null, search: text, ...extra };
        const ids = (await store.listInstances({ ...filter, limit: 100 })).map((r) => r.instanceId);
        expect(await store.countInstances(filter), `count of ${text}`).toBe(ids.length);
        return ids;
      };
      expect(await search('alpha')).toEqual([1, 2]);
      expect(await search('GPU-ALPHA')).toEqual([1, 2]);
      expect(await search('%')).toEqual([3]);
      expect(await search('0%_')).toEqual([3]);
      expect(await search('_')).toEqual([3, 4, 8]);
      expect(await search('r_s')).toEqual([8]);
      expect(await search('\\')).toEqual([5]);
      expect(await search('k\\s')).toEqual([5]);
      expect(await search('42')).toEqual([7, 42]);
      expect(await search('4')).toEqual([4, 7]);
      expect(await search('9')).toEqual([9]);
      expect(await search('99999999999999999999')).toEqual([]);
      expect(await search('nothing')).toEqual([]);
      expect(await search('o', { owner: 'bob' })).toEqual([9]);
      expect(await search('o', { status: 'active' })).toEqual([4, 8, 42]);
      expect(await search('alpha', { order: { key: 'instance_id', descending: true } })).toEqual([2, 1]);
    });

    it('pages every owner\'s instances by id with their last per-GPU readings, JSON included', async () => {
      const gpus = JSON.stringify([{ index: 0, uuid: 'GPU-a', utilization_percent: 7, memory_used_mb: 1, memory_total_mb: 2, temperature_celsius: null, power_watts: 50 }]);
      for (let id = 1; id <= 7; id++) {
        await rowsOf(store).insertInstanceRow(instanceRow(id, { owner: id % 2 === 0 ? 'bob' : 'alice', gpus_json: id === 3 ? gpus : '[]', gpu_count: id === 3 ? 1 : 0 }));
      }
      const first = await store.listGpuReadings(undefined, 3);
      expect(first.map((r) => r.instanceId)).toEqual([1, 2, 3]);
      expect(first[2]).toMatchObject({ gpus: JSON.parse(gpus), gpuCount: 1, aggregate: { power_watts: null } });
      expect(first[2]).not.toHaveProperty('agentTokenHash'); // only what a scrape shows
      expect((await store.listGpuReadings(3, 3)).map((r) => r.instanceId)).toEqual([4, 5, 6]);
      expect((await store.listGpuReadings(6, 3)).map((r) => r.instanceId)).toEqual([7]);
    });

    it('keeps status counts exact through inserts, transitions and owner changes', async () => {
      const statuses = ['active', 'idle', 'hibernating', 'hibernated', 'offline'];
      const owners = ['alice', 'bob'];
      const versions = new Map<number, number>();
      for (let id = 1; id <= 40; id++) {
        await rowsOf(store).insertInstanceRow(instanceRow(id, { owner: owners[id % 2]!, status: statuses[id % 5]! }));
        versions.set(id, 0);
      }
      let seed = 7;
      const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
      for (let step = 0; step < 200; step++) {
        const id = 1 + next(40);
        const patch = next(4) === 0 ? { owner: owners[next(2)]! } : { status: statuses[next(5)]!, heartbeat_count: step };
        const v = versions.get(id)!;
        await store.transaction((repo) => rowsOf(repo).updateInstanceColumns(id, v, patch));
        versions.set(id, v + 1);
      }
      for (const owner of [...owners, null]) {
        const rows = await store.listInstances({ owner, limit: 1000 });
        const expected = new Map<string, number>();
        for (const r of rows) expected.set(r.status, (expected.get(r.status) ?? 0) + 1);
        expect(Object.fromEntries(await store.countInstancesByStatus(owner)), `owner ${owner}`).toEqual(Object.fromEntries(expected));
      }
    });

    it('returns only due deadlines, soonest first, up to the limit', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1, { deadline: T + 30 }));
      await rowsOf(store).insertInstanceRow(instanceRow(2, { deadline: T + 10 }));
      await rowsOf(store).insertInstanceRow(instanceRow(3, { deadline: T + 1000 }));
      await rowsOf(store).insertInstanceRow(instanceRow(4, { deadline: null }));
      await rowsOf(store).insertInstanceRow(instanceRow(5, { deadline: T + 20 }));
      expect(await store.dueInstanceIds(T + 30, 10)).toEqual([2, 5, 1]);
      expect(await store.dueInstanceIds(T + 30, 2)).toEqual([2, 5]);
      expect(await store.dueInstanceIds(T, 10)).toEqual([]);
    });

    it('pages events newest first', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      await store.insertEvents(
        Array.from({ length: 5 }, (_, i) => ({ instanceId: 1, at: T + i, type: 'keep_alive' as const, reason: `r${i}`, data: { i } })),
      );
      const first = await store.listEvents(1, undefined, 2);
      expect(first.map((e) => e.reason)).toEqual(['r4', 'r3']);
      const next = await store.listEvents(1, first[1]!.id, 10);
      expect(next.map((e) => e.reason)).toEqual(['r2', 'r1', 'r0']);
      expect(typeof next[0]!.id).toBe('number');
      expect(next[0]).toMatchObject({ instanceId: 1, at: T + 2, type: 'keep_alive', data: { i: 2 } });
    });

    it('changes a command only from the expected states', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      const base = { instanceId: 1, type: 'snapshot' as const, args: { label: 'nightly' }, issuedBy: 'x', deliveredAt: null, completedAt: null, detail: null, idempotencyKey: null };
      await store.insertCommand({ ...base, id: 'a', state: 'pending', issuedAt: T });
      await store.insertCommand({ ...base, id: 'b', state: 'delivered', issuedAt: T + 1 });
      await store.insertCommand({ ...base, id: 'c', state: 'succeeded', issuedAt: T + 2 });
      expect((await store.openCommands(1)).map((c) => c.id)).toEqual(['a', 'b']);
      expect(await store.updateCommand('b', ['pending', 'delivered'], { state: 'succeeded', completedAt: T + 5 })).toBe(true);
      expect(await store.updateCommand('b', ['pending', 'delivered'], { state: 'failed' })).toBe(false);
      expect(await store.getCommand('b')).toEqual({ ...base, id: 'b', state: 'succeeded', issuedAt: T + 1, completedAt: T + 5 });
      expect((await store.listCommands(1, 2)).map((c) => c.id)).toEqual(['c', 'b']);
    });

    it('finds a command by its idempotency key, per instance; a key is unique per instance, null never collides', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      await rowsOf(store).insertInstanceRow(instanceRow(2));
      const base = { type: 'snapshot' as const, args: {}, state: 'pending' as const, issuedAt: T, issuedBy: 'x', deliveredAt: null, completedAt: null, detail: null };
      await store.insertCommand({ ...base, id: 'a', instanceId: 1, idempotencyKey: 'k-1' });
      await store.insertCommand({ ...base, id: 'b', instanceId: 2, idempotencyKey: 'k-1' });
      await store.insertCommand({ ...base, id: 'c', instanceId: 1, idempotencyKey: null });
      await store.insertCommand({ ...base, id: 'd', instanceId: 1, idempotencyKey: null });
      expect(await store.findCommandByIdempotencyKey(1, 'k-1')).toMatchObject({ id: 'a', idempotencyKey: 'k-1' });
      expect((await store.findCommandByIdempotencyKey(2, 'k-1'))?.id).toBe('b');
      expect(await store.findCommandByIdempotencyKey(1, 'k-2')).toBeUndefined();
      expect(await store.findCommandByIdempotencyKey(3, 'k-1')).toBeUndefined();
      await expect(store.insertCommand({ ...base, id: 'e', instanceId: 1, idempotencyKey: 'k-1' })).rejects.toThrow();
      expect((await store.transaction((repo) => repo.findCommandByIdempotencyKey(1, 'k-1')))?.id).toBe('a');
    });

    it('stores API keys by hash', async () => {
      expect(await store.countAdminKeys()).toBe(0);
      await store.insertApiKey({ key_hash: 'h1', owner: 'root', is_admin: 1, label: null, created_at: T });
      await store.insertApiKey({ key_hash: 'h2', owner: 'alice', is_admin: 0, label: 'ci', created_at: T });
      expect(await store.countAdminKeys()).toBe(1);
      expect(await store.findApiKey('h2')).toMatchObject({ owner: 'alice', is_admin: 0 });
    });

    const outboxRow = (id: string, instanceId: number, overrides: Partial<OutboxRow> = {}): OutboxRow => ({
      id,
      instance_id: instanceId,
      kind: 'stop',
      target: 'vast',
      payload_json: '{}',
      state: 'pending',
      attempts: 0,
      created_at: T,
      due_at: T,
      claimed_by: null,
      claimed_until: null,
      cancel_requested: 0,
      last_error: null,
      completed_at: null,
      ...overrides,
    });

    it('claims due outbox rows once, by target, oldest first, and only the claimer records an outcome', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      await store.insertOutbox([
        outboxRow('b', 1, { due_at: T + 2 }),
        outboxRow('a', 1, { due_at: T + 1 }),
        outboxRow('later', 1, { due_at: T + 60_000 }),
        outboxRow('n', 1, { kind: 'notify', target: 'notify' }),
        outboxRow('gone', 1, { target: 'retired-provider' }),
      ]);
      const first = await store.transaction((repo) => repo.claimOutbox(T + 10, 'w1', T + 10_000, 10, { is: 'vast' }));
      expect(first.map((r) => [r.id, r.claimed_by, r.claimed_until, r.attempts])).toEqual([
        ['a', 'w1', T + 10_000, 1],
        ['b', 'w1', T + 10_000, 1],
      ]);
      // Held by a live claim: nobody else gets them; the others are other targets' or not due.
      expect(await store.transaction((repo) => repo.claimOutbox(T + 20, 'w2', T + 20_000, 10, { is: 'vast' }))).toEqual([]);
      expect((await store.transaction((repo) => repo.claimOutbox(T + 20, 'w2', T + 20_000, 10, { notIn: ['vast', 'notify'] }))).map((r) => r.id)).toEqual(['gone']);
      expect(await store.finishOutbox('a', 'w2', { state: 'done' })).toBe(false);
      expect(await store.finishOutbox('a', 'w1', { state: 'done', completed_at: T + 30 })).toBe(true);
      expect(await store.finishOutbox('a', 'w1', { state: 'failed' })).toBe(false);
      // A claim whose process died expires; the row is taken again and its attempt counted.
      const again = await store.transaction((repo) => repo.claimOutbox(T + 10_000, 'w2', T + 30_000, 10, { is: 'vast' }));
      expect(again.map((r) => [r.id, r.claimed_by, r.attempts])).toEqual([['b', 'w2', 2]]);
      expect((await store.getOutbox('a'))!.state).toBe('done');
    });

    it('cancels a pending outbox row, flags one being sent, and never sends a flagged row again', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      await rowsOf(store).insertInstanceRow(instanceRow(2));
      await store.insertOutbox([outboxRow('waiting', 1), outboxRow('sending', 2)]);
      await store.transaction((repo) => repo.claimOutbox(T, 'w1', T + 10_000, 10, { is: 'vast' }).then((rows) => rows.filter((r) => r.id === 'sending')));
      // Both were claimed above; release the first as a retry waiting in backoff would be.
      expect(await store.finishOutbox('waiting', 'w1', { claimed_by: null, claimed_until: null, due_at: T + 5000 })).toBe(true);
      expect(await store.cancelOutbox(1, 'stop', T + 100)).toEqual({ cancelled: 1, inFlight: 0 });
      expect(await store.cancelOutbox(2, 'stop', T + 100)).toEqual({ cancelled: 0, inFlight: 1 });
      expect((await store.getOutbox('waiting'))!.state).toBe('cancelled');
      expect((await store.getOutbox('sending'))!).toMatchObject({ state: 'pending', cancel_requested: 1 });
      // Its sender died: once the claim expires the row is closed, not sent.
      expect(await store.transaction((repo) => repo.claimOutbox(T + 20_000, 'w2', T + 40_000, 10, { is: 'vast' }))).toEqual([]);
      await store.closeAbandonedWithdrawals(T + 20_000);
      expect((await store.getOutbox('sending'))!.state).toBe('cancelled');
      expect((await store.listOutbox(2)).map((r) => r.id)).toEqual(['sending']);
    });

    it('lists savings intervals overlapping a range, and open intervals, per owner or instance', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1, { status: 'hibernated', saving_since: T + 500, price_per_hour: 2 }));
      await rowsOf(store).insertInstanceRow(instanceRow(2, { owner: 'bob' }));
      const interval = { instance_id: 1, owner: 'alice', kind: 'hibernated', gpu_count: 4, price_per_hour: 2 };
      await store.insertSavings({ ...interval, started_at: T, ended_at: T + 100 });
      await store.insertSavings({ ...interval, started_at: T + 200, ended_at: T + 300 });
      await store.insertSavings({ ...interval, instance_id: 2, owner: 'bob', started_at: T, ended_at: T + 300 });
      const ranges = async (owner: string | null, from: number, to: number) =>
        (await store.listSavings({ owner, from, to })).map((r) => [r.instance_id, r.started_at - T, r.ended_at - T]);
      expect(await ranges('alice', T + 50, T + 250)).toEqual([
        [1, 0, 100],
        [1, 200, 300],
      ]);
      expect(await ranges('alice', T + 100, T + 200)).toEqual([]);
      expect(await ranges(null, T, T + 1)).toEqual([
        [1, 0, 100],
        [2, 0, 300],
      ]);
      expect(await store.listOpenSavings({ owner: 'alice' })).toEqual([
        { instance_id: 1, owner: 'alice', hostname: 'gpu-1', status: 'hibernated', saving_since: T + 500, gpu_count: 0, price_per_hour: 2 },
      ]);
      expect(await store.listOpenSavings({ owner: 'bob' })).toEqual([]);
      expect(await store.hostnamesOf([1, 2, 3])).toEqual(new Map([[1, 'gpu-1'], [2, 'gpu-2']]));
    });

    it('stores labels per instance: round trip, replace as a whole, read for many ids at once, gone with the instance', async () => {
      for (const id of [1, 2, 3]) await rowsOf(store).insertInstanceRow(instanceRow(id));
      await store.transaction(async (repo) => {
        await repo.setLabels(1, { team: 'vision', kind: 'notebook', empty: '' });
        await repo.setLabels(2, { team: 'nlp' });
      });
      expect(await store.labelsOf([1, 2, 3, 99])).toEqual(
        new Map([
          [1, { empty: '', kind: 'notebook', team: 'vision' }],
          [2, { team: 'nlp' }],
        ]),
      );
      expect(await store.labelsOf([])).toEqual(new Map());
      await store.setLabels(1, { team: 'audio' });
      expect((await store.labelsOf([1])).get(1)).toEqual({ team: 'audio' });
      await store.setLabels(1, {});
      expect(await store.labelsOf([1, 2])).toEqual(new Map([[2, { team: 'nlp' }]]));
      // A failed transaction leaves the labels it set unwritten.
      await expect(
        store.transaction(async (repo) => {
          await repo.setLabels(2, { team: 'lost' });
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect((await store.labelsOf([2])).get(2)).toEqual({ team: 'nlp' });
      await store.kysely.deleteFrom('instances').where('instance_id', '=', 2).execute();
      expect(await store.kysely.selectFrom('instance_labels').selectAll().execute()).toEqual([]);
    });

    it("keeps the instance row's copy of its labels in step, so the heartbeat's one read carries them", async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      expect((await store.getLifecycle(1))!.labels).toEqual({});
      await store.setLabels(1, { team: 'vision', kind: 'notebook' });
      expect((await store.getLifecycle(1))!.labels).toEqual({ kind: 'notebook', team: 'vision' });
      await store.transaction(async (repo) => {
        expect((await repo.getLifecycle(1, { forUpdate: true }))!.labels).toEqual({ kind: 'notebook', team: 'vision' });
        await repo.setLabels(1, { team: 'nlp' });
      });
      expect((await store.getInstance(1))!.labels).toEqual({ team: 'nlp' });
      await expect(
        store.transaction(async (repo) => {
          await repo.setLabels(1, {});
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect((await store.getLifecycle(1))!.labels).toEqual({ team: 'nlp' });
    });

    it('stores named policies: highest priority first, replaced by name, deleted once, a priority held by one policy only', async () => {
      const policy = (name: string, priority: number, at: number) => ({
        name,
        priority,
        spec: { selector: [`kind=${name}`], priority, threshold_minutes: priority * 2 },
        createdAt: at,
        updatedAt: at,
        updatedBy: 'admin',
      });
      expect(await store.listPolicies()).toEqual([]);
      await store.transaction(async (repo) => {
        expect(await repo.putPolicy(policy('notebooks', 10, 1_000))).toBe(true);
        expect(await repo.putPolicy(policy('training', 20, 2_000))).toBe(true);
      });
      expect((await store.listPolicies()).map((p) => p.name)).toEqual(['training', 'notebooks']);
      // Replaced, not created: the stored creation time is kept (1,000, not the 4,000 passed).
      expect(await store.putPolicy({ ...policy('notebooks', 30, 4_000), updatedAt: 5_000, updatedBy: 'ops' })).toBe(false);
      expect(await store.listPolicies()).toEqual([{ ...policy('notebooks', 30, 1_000), updatedAt: 5_000, updatedBy: 'ops' }, policy('training', 20, 2_000)]);
      await expect(store.putPolicy(policy('other', 20, 6_000))).rejects.toThrow();
      expect(await store.deletePolicy('training')).toBe(true);
      expect(await store.deletePolicy('training')).toBe(false);
      expect((await store.listPolicies()).map((p) => p.name)).toEqual(['notebooks']);
    });

    it('filters the list and its count by label terms, keeping keyset paging in id and hostname order', async () => {
      const expected: number[] = [];
      for (let id = 1; id <= 30; id++) {
        await rowsOf(store).insertInstanceRow(instanceRow(id, { owner: id % 7 === 0 ? 'bob' : 'alice', hostname: `gpu-${String(31 - id).padStart(2, '0')}`, status: id % 2 ? 'idle' : 'active' }));
        const labels: Record<string, string> = { team: id % 3 === 0 ? 'vision' : 'nlp' };
        if (id % 2 === 0) labels.kind = 'notebook';
        if (id % 5 === 0) labels.spot = '';
        await store.setLabels(id, labels);
        if (id % 3 === 0 && id % 2 === 0) expected.push(id);
      }
      const both = [
        { key: 'team', op: 'eq', value: 'vision' },
        { key: 'kind', op: 'eq', value: 'notebook' },
      ] as const;
      expect(expected).toEqual([6, 12, 18, 24, 30]);
      const byId = await walkInstances(store, { owner: null, labels: both }, 2);
      expect(byId.map((r) => r.instanceId)).toEqual(expected);
      // Hostnames run opposite to ids: the hostname order pages the same rows backwards.
      const byHost = await walkInstances(store, { owner: null, labels: both, order: { key: 'hostname', descending: false } }, 2);
      expect(byHost.map((r) => r.instanceId)).toEqual([...expected].reverse());
      expect(await store.countInstances({ owner: null, labels: both })).toBe(5);
      // Owner, status and labels together: of bob's 7, 14, 21 and 28 only 21 is vision.
      expect(await store.countInstances({ owner: 'bob', labels: [{ key: 'team', op: 'eq', value: 'vision' }] })).toBe(1);
      expect(await store.countInstances({ owner: null, status: 'active', labels: [{ key: 'team', op: 'eq', value: 'vision' }] })).toBe(5);
      const ids = async (labels: { key: string; op: 'eq' | 'ne' | 'exists' | 'absent'; value: string | null }[]) =>
        (await store.listInstances({ owner: null, labels, limit: 100 })).map((r) => r.instanceId);
      expect(await ids([{ key: 'spot', op: 'exists', value: null }])).toEqual([5, 10, 15, 20, 25, 30]);
      expect(await ids([{ key: 'spot', op: 'eq', value: '' }, { key: 'kind', op: 'absent', value: null }])).toEqual([5, 15, 25]);
      expect(await ids([{ key: 'team', op: 'ne', value: 'nlp' }, { key: 'kind', op: 'ne', value: 'notebook' }])).toEqual([3, 9, 15, 21, 27]);
      expect(await ids([{ key: 'team', op: 'eq', value: 'Vision' }])).toEqual([]);
      // A search and a selector: gpu-13 and gpu-19 (ids 18 and 12) of gpu-10 to gpu-19.
      expect(await store.countInstances({ owner: null, search: 'gpu-1', labels: both })).toBe(2);
    });

    it('filters savings, closed and open, by label terms', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1, { status: 'hibernated', saving_since: T + 500 }));
      await rowsOf(store).insertInstanceRow(instanceRow(2, { status: 'hibernated', saving_since: T + 500 }));
      await store.setLabels(1, { team: 'vision' });
      await store.setLabels(2, { team: 'nlp' });
      const interval = { owner: 'alice', kind: 'hibernated', gpu_count: 1, price_per_hour: 1, started_at: T, ended_at: T + 100 };
      await store.insertSavings({ ...interval, instance_id: 1 });
      await store.insertSavings({ ...interval, instance_id: 2 });
      const vision = [{ key: 'team', op: 'eq', value: 'vision' }] as const;
      expect((await store.listSavings({ owner: null, labels: vision, from: T, to: T + 1000 })).map((r) => r.instance_id)).toEqual([1]);
      expect((await store.listOpenSavings({ owner: 'alice', labels: vision })).map((r) => r.instance_id)).toEqual([1]);
      expect((await store.listSavings({ owner: null, labels: [{ key: 'team', op: 'absent', value: null }], from: T, to: T + 1000 })).length).toBe(0);
      expect((await store.listOpenSavings({ owner: null, labels: [] })).map((r) => r.instance_id)).toEqual([1, 2]);
    });

    it('keeps everything across a reopen (migrations are idempotent)', async () => {
      await store.transaction(async (repo) => {
        await rowsOf(repo).insertInstanceRow(instanceRow(7, { scheduled_at: T + 300_000 }));
        await repo.requireDurableCommit();
      });
      await store.close();
      store = await db.reopen();
      expect(await rowsOf(store).getInstanceRow(7)).toMatchObject({ scheduled_at: T + 300_000 });
      await store.ping();
    });

    it('writes a plain beat with a compare-and-set on version: false when it moved or the row is gone', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      expect(await store.writePlainBeat(1, 0, { metrics: sample(5), heartbeatCount: 1 })).toBe(true);
      expect(await rowsOf(store).getInstanceRow(1)).toMatchObject({ utilization_percent: 5, heartbeat_count: 1, version: 1 });
      // Read before a transaction committed: the write loses, the transaction's change stays.
      const read = (await store.getLifecycle(1))!;
      await store.transaction(async (repo) => void (await rowsOf(repo).updateInstanceColumns(1, read.version, { status: 'idle' })));
      expect(await store.writePlainBeat(1, read.version, { metrics: sample(6), heartbeatCount: 2 })).toBe(false);
      expect(await rowsOf(store).getInstanceRow(1)).toMatchObject({ status: 'idle', utilization_percent: 5, heartbeat_count: 1, version: 2 });
      expect(await store.writePlainBeat(2, 0, { metrics: sample(7) })).toBe(false);
      expect(await rowsOf(store).getInstanceRow(2)).toBeUndefined();
    });

    it('plain writes arriving together: one wins per version, a failing one fails alone, transactions beside them commit', async () => {
      for (let id = 1; id <= 4; id++) await rowsOf(store).insertInstanceRow(instanceRow(id));
      // Issued in one turn of the event loop: on SQLite one group commit, in this order.
      const outcomes = await Promise.allSettled([
        store.writePlainBeat(1, 0, { metrics: sample(11), heartbeatCount: 1 }),
        store.writePlainBeat(1, 0, { metrics: sample(12), heartbeatCount: 1 }),
        store.transaction(async (repo) => {
          const row = await repo.getLifecycle(2, { forUpdate: true });
          await rowsOf(repo).updateInstanceColumns(2, row!.version, { status: 'active' });
          await repo.insertEvents([{ instanceId: 2, at: T, type: 'online', reason: 'r', data: {} }]);
          return 'committed';
        }),
        store.writePlainBeat(2, 0, { metrics: sample(21), heartbeatCount: 1 }),
        // Another instance's token hash: a unique violation, this statement only.
        store.writePlainBeat(3, 0, { agentTokenHash: 'hash-4', metrics: sample(31) }),
        store.writePlainBeat(4, 0, { metrics: sample(41), heartbeatCount: 1 }),
      ]);
      const values = outcomes.map((o) => (o.status === 'fulfilled' ? o.value : 'rejected'));
      expect(values[4]).toBe('rejected');
      expect(values[5]).toBe(true);
      // Exactly one write per version of a row; on SQLite the first in the batch.
      expect([values[0], values[1]].filter((v) => v === true)).toHaveLength(1);
      // The transaction reads the row under a lock, so it commits whichever came first.
      expect(values[2]).toBe('committed');
      if (backend.name === 'sqlite') expect(values.slice(0, 4)).toEqual([true, false, 'committed', false]);
      const one = (await rowsOf(store).getInstanceRow(1))!;
      expect(one).toMatchObject({ utilization_percent: values[0] === true ? 11 : 12, heartbeat_count: 1, version: 1 });
      expect(await rowsOf(store).getInstanceRow(2)).toMatchObject({ status: 'active', utilization_percent: values[3] === true ? 21 : null, version: values[3] === true ? 2 : 1 });
      expect(await store.listEvents(2, undefined, 5)).toHaveLength(1);
      expect(await rowsOf(store).getInstanceRow(3)).toMatchObject({ agent_token_hash: 'hash-3', utilization_percent: null, version: 0 });
      expect(await rowsOf(store).getInstanceRow(4)).toMatchObject({ utilization_percent: 41, version: 1 });
    });

    it('a read outside a transaction never sees the uncommitted writes of one in progress', async () => {
      await rowsOf(store).insertInstanceRow(instanceRow(1));
      let reading: Promise<unknown> | undefined;
      await expect(
        store.transaction(async (repo) => {
          await rowsOf(repo).updateInstanceColumns(1, 0, { status: 'idle', utilization_percent: 1 });
          // The plain beat's unlocked read, while this transaction holds its write.
          reading = store.getLifecycle(1);
          await new Promise((resolve) => setTimeout(resolve, 20));
          throw new Error('rolled back');
        }),
      ).rejects.toThrow('rolled back');
      expect(await reading).toMatchObject({ facts: { status: 'offline' }, version: 0 });
      // So a compare-and-set on the version it read can only succeed against committed state.
      expect(await store.writePlainBeat(1, 0, { metrics: sample(2) })).toBe(true);
      expect(await rowsOf(store).getInstanceRow(1)).toMatchObject({ status: 'offline', utilization_percent: 2, version: 1 });
    });
  });
}
