import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { effectivePolicyOf, instancePolicyOf } from '../fleet/instance-write.js';
import { compilePolicy } from '../policy/effective-policy.js';
import { testBackends, type TestBackend } from '../test-support/backends.js';
import { TestServer, T0 } from '../test-support/test-server.js';

const LIMITS = {
  DUMONT_MAX_THRESHOLD_MINUTES: '120',
  DUMONT_MAX_KEEP_ALIVE_MINUTES: '60',
  DUMONT_KEEP_ALIVE_BUDGET_MINUTES: '90',
  DUMONT_OWNER_MAY_DISABLE: 'off',
};
const HOUR = 3_600_000;
const idle = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 1, memory_used_mb: 10, memory_total_mb: 100 }, process_count: 0 });
const base = (id: number) => `/api/v1/agent/instances/${id}`;

type Db = Awaited<ReturnType<TestBackend['open']>>;

/** A server over `db` with these limits; the first one uses the opened store, later ones reopen it. */
function serverOver(db: Db, env: Record<string, string>, state: { first: boolean }): Promise<TestServer> {
  return new TestServer(async () => (state.first ? ((state.first = false), db.store) : db.reopen()), env).start();
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`admin limits (${backend.name})`, () => {
    let db: Db;
    let t: TestServer;
    let aliceKey: string;
    const state = { first: true };
    const servers: TestServer[] = [];

    beforeEach(async () => {
      db = await backend.open();
      state.first = true;
      t = await serverOver(db, LIMITS, state);
      servers.push(t);
      aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
    });
    afterEach(async () => {
      for (const s of servers.splice(0)) await s.close();
      await db.dispose();
    });

    /** The instance's detail and events, as an admin sees them. */
    const snapshot = async (server: TestServer, id: number) => ({
      detail: (await server.request('GET', base(id))).json,
      events: (await server.request('GET', `${base(id)}/events?limit=1000`)).json.events,
    });

    it("refuses an owner's patch or keep-alive beyond a limit with a 403 naming the field and the limit, and changes nothing", async () => {
      const token = await t.register(1, 'gpu-1', aliceKey);
      await t.beat(token, idle(1));
      t.clock.advance(60_000);
      const before = await snapshot(t, 1);
      expect(before.detail.hibernation.limits).toEqual({
        max_threshold_minutes: 120,
        max_keep_alive_minutes: 60,
        keep_alive_budget_minutes: 90,
        keep_alive_left_minutes: 90,
        owner_may_disable: false,
      });

      const refusals: [string, string, { body?: unknown }, string, RegExp][] = [
        ['PATCH', '/hibernation', { body: { threshold_minutes: 600 } }, 'threshold_minutes', /600 is above the limit of 120 minutes for owners \(DUMONT_MAX_THRESHOLD_MINUTES\); an admin may set it/],
        ['PATCH', '/hibernation', { body: { enabled: false } }, 'enabled', /DUMONT_OWNER_MAY_DISABLE=off/],
        ['PATCH', '/hibernation', { body: { dry_run: true } }, 'dry_run', /dry-run.*DUMONT_OWNER_MAY_DISABLE=off/],
        // One field beyond a limit refuses the whole patch: the allowed threshold is not stored either.
        ['PATCH', '/hibernation', { body: { threshold_minutes: 60, enabled: false } }, 'enabled', /DUMONT_OWNER_MAY_DISABLE/],
        ['POST', '/keep-alive?minutes=61', {}, 'minutes', /61 is above the limit of 60 minutes per keep-alive for owners \(DUMONT_MAX_KEEP_ALIVE_MINUTES\)/],
      ];
      for (const [method, path, options, field, message] of refusals) {
        const res = await t.request(method, `${base(1)}${path}`, { token: aliceKey, ...options });
        expect(res.status, `${method} ${path}`).toBe(403);
        expect(res.json).toMatchObject({ error: 'forbidden', field });
        expect(res.json.message).toMatch(message);
      }
      expect(await snapshot(t, 1)).toEqual(before);

      // Within the limits the same owner succeeds.
      expect((await t.request('PATCH', `${base(1)}/hibernation`, { token: aliceKey, body: { threshold_minutes: 120, enabled: true, dry_run: false } })).status).toBe(200);
      expect((await t.request('POST', `${base(1)}/keep-alive?minutes=60`, { token: aliceKey })).status).toBe(200);
    });

    it('lets an admin exceed every limit, and records who made each change', async () => {
      await t.register(2, 'gpu-2', aliceKey);
      const patched = await t.request('PATCH', `${base(2)}/hibernation`, { body: { threshold_minutes: 600, enabled: false, dry_run: true } });
      expect(patched.status).toBe(200);
      expect(patched.json.hibernation).toMatchObject({ threshold_minutes: 600, enabled: false, dry_run: true });
      expect(patched.json.hibernation).not.toHaveProperty('threshold_minutes_requested');
      expect(patched.json.hibernation).not.toHaveProperty('enabled_requested');
      expect((await t.request('POST', `${base(2)}/keep-alive?minutes=600`)).status).toBe(200);

      const events = (await t.request('GET', `${base(2)}/events`)).json.events as { type: string; data: Record<string, unknown> }[];
      expect(events.find((e) => e.type === 'keep_alive')!.data).toMatchObject({ minutes: 600, by: 'admin', by_admin: true });
      expect(events.find((e) => e.type === 'policy_changed')!.data).toMatchObject({ threshold_minutes: 600, by: 'admin', by_admin: true });
      // An admin's keep-alive spends none of the owners' budget.
      expect((await t.request('GET', base(2))).json.hibernation.limits.keep_alive_left_minutes).toBe(90);

      // An owner re-enabling is within the limits; their keep-alive is recorded as theirs.
      expect((await t.request('PATCH', `${base(2)}/hibernation`, { token: aliceKey, body: { enabled: true } })).status).toBe(200);
      expect((await t.request('POST', `${base(2)}/keep-alive?minutes=10`, { token: aliceKey })).status).toBe(200);
      const after = (await t.request('GET', `${base(2)}/events`)).json.events as { type: string; data: Record<string, unknown> }[];
      expect(after.find((e) => e.type === 'keep_alive')!.data).toMatchObject({ minutes: 10, by: 'alice', by_admin: false });
      // The admin's threshold still stands.
      expect((await t.request('GET', base(2))).json.hibernation).toMatchObject({ threshold_minutes: 600, enabled: true, dry_run: true });
    });

    it("spends an owner's keep-alive budget over a rolling 24 h", async () => {
      await t.register(3, 'gpu-3', aliceKey);
      const keepAlive = (minutes: number) => t.request('POST', `${base(3)}/keep-alive?minutes=${minutes}`, { token: aliceKey });
      const left = async () => (await t.request('GET', base(3), { token: aliceKey })).json.hibernation.limits.keep_alive_left_minutes;

      expect((await keepAlive(60)).status).toBe(200); // at T0
      expect(await left()).toBe(30);
      t.clock.advance(HOUR);
      const over = await keepAlive(40);
      expect(over.status).toBe(403);
      expect(over.json).toMatchObject({ error: 'forbidden', field: 'minutes' });
      expect(over.json.message).toMatch(/40 is more than the 30 keep-alive minutes left of this instance's budget of 90 minutes per 24 h for owners \(DUMONT_KEEP_ALIVE_BUDGET_MINUTES\)/);
      expect((await keepAlive(30)).status).toBe(200); // at T0 + 1 h
      expect(await left()).toBe(0);
      expect((await keepAlive(1)).status).toBe(403);

      t.clock.advance(23 * HOUR - 1); // just before the first one leaves the window
      expect(await left()).toBe(0);
      t.clock.advance(1); // T0 + 24 h: the 60 minutes at T0 are back
      expect(await left()).toBe(60);
      expect((await keepAlive(60)).status).toBe(200);
      expect((await keepAlive(1)).status).toBe(403);
      t.clock.advance(HOUR); // the 30 from T0 + 1 h are back
      expect(await left()).toBe(30);
      expect((await keepAlive(30)).status).toBe(200);
    });

    it("bounds an owner's value stored before a limit was lowered; an admin's stands", async () => {
      // Another server on the same data, without limits: alice stores values the later limits forbid.
      const open = await serverOver(db, {}, state);
      servers.push(open);
      const token = await open.register(4, 'gpu-4', aliceKey);
      await open.register(5, 'gpu-5', aliceKey);
      expect((await open.request('PATCH', `${base(4)}/hibernation`, { token: aliceKey, body: { threshold_minutes: 600, enabled: false, dry_run: true } })).status).toBe(200);
      expect((await open.request('PATCH', `${base(5)}/hibernation`, { body: { threshold_minutes: 600 } })).status).toBe(200);
      expect((await open.request('GET', base(4))).json.hibernation).toMatchObject({ threshold_minutes: 600, enabled: false, dry_run: true });
      await open.close();

      const strict = await serverOver(db, LIMITS, state);
      servers.push(strict);
      const h4 = (await strict.request('GET', base(4), { token: aliceKey })).json.hibernation;
      expect(h4).toMatchObject({
        threshold_minutes: 120,
        threshold_minutes_requested: 600,
        enabled: true,
        enabled_requested: false,
        dry_run: false,
        dry_run_requested: true,
      });
      const h5 = (await strict.request('GET', base(5))).json.hibernation;
      expect(h5.threshold_minutes).toBe(600);
      expect(h5).not.toHaveProperty('threshold_minutes_requested');

      // The policy evaluates the bounded values: idle for 121 minutes (not 600), hibernation is scheduled.
      for (let minute = 0; minute <= 121; minute++) {
        expect((await strict.beat(token, idle(4))).status).toBe(200);
        strict.clock.advance(60_000);
      }
      expect(await strict.eventTypes(4)).toContain('hibernation_scheduled');
      expect(await strict.eventTypes(5)).not.toContain('hibernation_scheduled');
    });
  });

  describe.skipIf(backend.skipReason !== null)(`admin limits, random owner and admin actions (${backend.name})`, () => {
    let db: Db;
    let t: TestServer;
    let aliceKey: string;
    beforeAll(async () => {
      db = await backend.open();
      t = await new TestServer(async () => db.store, LIMITS).start();
      aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
    });
    afterAll(async () => {
      await t.close();
      await db.dispose();
    });

    type PolicyLimits = { max_threshold_minutes?: number; max_keep_alive_minutes?: number; keep_alive_budget_minutes?: number | null; owner_may_disable?: boolean };
    type Action =
      | { kind: 'threshold'; admin: boolean; minutes: number }
      | { kind: 'enabled'; admin: boolean; value: boolean }
      | { kind: 'dry_run'; admin: boolean; value: boolean }
      | { kind: 'keep_alive'; admin: boolean; minutes: number }
      | { kind: 'wait'; hours: number }
      /** An admin puts (or, with null, deletes) a named policy over the instance with its own limits. */
      | { kind: 'policy'; limits: PolicyLimits | null };
    const action: fc.Arbitrary<Action> = fc.oneof(
      fc.record({ kind: fc.constant('threshold' as const), admin: fc.boolean(), minutes: fc.integer({ min: 1, max: 300 }) }),
      fc.record({ kind: fc.constant('enabled' as const), admin: fc.boolean(), value: fc.boolean() }),
      fc.record({ kind: fc.constant('dry_run' as const), admin: fc.boolean(), value: fc.boolean() }),
      fc.record({ kind: fc.constant('keep_alive' as const), admin: fc.boolean(), minutes: fc.integer({ min: 1, max: 100 }) }),
      fc.record({ kind: fc.constant('wait' as const), hours: fc.integer({ min: 1, max: 12 }) }),
      fc.record({
        kind: fc.constant('policy' as const),
        limits: fc.option(
          fc.record(
            {
              max_threshold_minutes: fc.integer({ min: 1, max: 240 }),
              max_keep_alive_minutes: fc.integer({ min: 1, max: 90 }),
              keep_alive_budget_minutes: fc.option(fc.integer({ min: 0, max: 150 })),
              owner_may_disable: fc.boolean(),
            },
            { requiredKeys: [] },
          ),
        ),
      }),
    );
    const SERVER = { maxThreshold: 120, maxKeepAlive: 60, budget: 90 as number | null, ownerMayDisable: false };
    let nextId = 100;

    it('the effective policy never exceeds a limit unless an admin set the value; a refused owner action changes nothing', async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 12 }), async (actions) => {
          const id = nextId++;
          await t.register(id, `gpu-${id}`, aliceKey);
          // Each run's instance has its own label, and its own policy selects it: runs do not meet.
          expect((await t.request('PATCH', base(id), { body: { labels: { run: String(id) } } })).status).toBe(200);
          let limits = { ...SERVER };
          // Who last wrote each value (true = admin), and the owners' keep-alives granted (at, minutes).
          const lastByAdmin = { threshold: false, enabled: false, dryRun: false };
          const ownerKeepAlives: { at: number; minutes: number }[] = [];
          const used = () => ownerKeepAlives.filter((k) => k.at > t.clock.now() - 24 * HOUR).reduce((sum, k) => sum + k.minutes, 0);
          for (const a of actions) {
            if (a.kind === 'wait') {
              t.clock.advance(a.hours * HOUR);
              continue;
            }
            if (a.kind === 'policy') {
              const path = `/api/v1/policies/run-${id}`;
              if (a.limits === null) await t.request('DELETE', path);
              else {
                const put = await t.request('PUT', path, { body: { selector: [`run=${id}`], priority: id, limits: a.limits } });
                expect([200, 201], put.text).toContain(put.status);
              }
              const own = a.limits ?? {};
              limits = {
                maxThreshold: own.max_threshold_minutes ?? SERVER.maxThreshold,
                maxKeepAlive: own.max_keep_alive_minutes ?? SERVER.maxKeepAlive,
                budget: own.keep_alive_budget_minutes !== undefined ? own.keep_alive_budget_minutes : SERVER.budget,
                ownerMayDisable: own.owner_may_disable ?? SERVER.ownerMayDisable,
              };
              continue;
            }
            const token = a.admin ? t.adminKey : aliceKey;
            const usedBefore = used();
            const before = await Promise.all([t.request('GET', base(id)), t.request('GET', `${base(id)}/events?limit=1000`)]);
            const res =
              a.kind === 'keep_alive'
                ? await t.request('POST', `${base(id)}/keep-alive?minutes=${a.minutes}`, { token })
                : await t.request('PATCH', `${base(id)}/hibernation`, {
                    token,
                    body: a.kind === 'threshold' ? { threshold_minutes: a.minutes } : { [a.kind]: a.value },
                  });
            // What the limits in force allow an owner; an admin may do anything.
            const allowed =
              a.admin ||
              (a.kind === 'threshold' && a.minutes <= limits.maxThreshold) ||
              (a.kind === 'enabled' && (a.value || limits.ownerMayDisable)) ||
              (a.kind === 'dry_run' && (!a.value || limits.ownerMayDisable)) ||
              (a.kind === 'keep_alive' && a.minutes <= limits.maxKeepAlive && (limits.budget === null || a.minutes <= limits.budget - usedBefore));
            if (!allowed) {
              // An owner's request beyond a limit is refused (no silent clamp), and nothing changes.
              expect(res.status, res.text).toBe(403);
              expect(res.json.error).toBe('forbidden');
              const after = await Promise.all([t.request('GET', base(id)), t.request('GET', `${base(id)}/events?limit=1000`)]);
              expect(after.map((r) => r.json)).toEqual(before.map((r) => r.json));
            } else {
              expect(res.status, res.text).toBe(200);
              if (a.kind === 'threshold') lastByAdmin.threshold = a.admin;
              if (a.kind === 'enabled') lastByAdmin.enabled = a.admin;
              if (a.kind === 'dry_run') lastByAdmin.dryRun = a.admin;
              if (a.kind === 'keep_alive' && !a.admin) ownerKeepAlives.push({ at: t.clock.now(), minutes: a.minutes });
            }
            const now = t.clock.now();
            const stored = (await t.server.store.getInstance(id))!;
            const effective = effectivePolicyOf(stored, await t.server.store.listPolicies().then((ps) => ps.map((p) => compilePolicy(p.name, p.spec, p.updatedAt))), t.config, now);
            const policy = instancePolicyOf(effective, stored.settings);
            const detail = (await t.request('GET', base(id))).json;
            expect(detail.hibernation).toMatchObject({ threshold_minutes: policy.thresholdMinutes, enabled: policy.enabled, dry_run: policy.dryRun });
            expect(detail.hibernation.limits).toMatchObject({ max_threshold_minutes: limits.maxThreshold, max_keep_alive_minutes: limits.maxKeepAlive, keep_alive_budget_minutes: limits.budget, owner_may_disable: limits.ownerMayDisable });
            expect(detail.hibernation.limits.keep_alive_left_minutes).toBe(limits.budget === null ? null : Math.max(0, limits.budget - used()));
            if (!lastByAdmin.threshold && stored.settings.thresholdMinutes !== null) expect(policy.thresholdMinutes).toBeLessThanOrEqual(limits.maxThreshold);
            if (!lastByAdmin.enabled && !limits.ownerMayDisable) expect(policy.enabled).toBe(true);
            if (!lastByAdmin.dryRun && !limits.ownerMayDisable) expect(policy.dryRun).toBe(false);
          }
        }),
        { numRuns: backend.name === 'sqlite' ? 40 : 15 },
      );
    }, 60_000);
  });
}
