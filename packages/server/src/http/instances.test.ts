import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer, T0 } from '../test-support/test-server.js';

const idle = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 1, memory_used_mb: 10, memory_total_mb: 100 }, process_count: 0 });
const busy = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 85, memory_used_mb: 75, memory_total_mb: 100 }, process_count: 3 });

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`instances API (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      let first = true;
      // The first start uses the opened store; a restart reopens the same database.
      t = await new TestServer(async () => (first ? ((first = false), db.store) : db.reopen())).start();
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    it("lists in the seed's shape with counts per status, a status filter and cursor paging", async () => {
      const tokens = new Map<number, string>();
      for (const id of [10, 11, 12, 13, 14]) tokens.set(id, await t.register(id));
      await t.beat(tokens.get(10)!, busy(10));
      await t.beat(tokens.get(11)!, idle(11));
      await t.beat(tokens.get(12)!, idle(12));
      t.clock.advance(30_000);
      await t.beat(tokens.get(12)!, idle(12));

      const all = (await t.request('GET', '/api/v1/agent/instances')).json;
      expect(all).toMatchObject({ count: 5, active_count: 1, idle_count: 2, offline_count: 2, hibernating_count: 0, hibernated_count: 0, next_cursor: null });
      expect(all.instances.map((i: { instance_id: number }) => i.instance_id)).toEqual([10, 11, 12, 13, 14]);
      expect(all.instances[0]).toEqual({
        instance_id: 10,
        hostname: 'gpu-001',
        last_heartbeat: new Date(T0).toISOString(),
        status: 'active',
        gpu_utilization: 85,
        memory_used_percent: 75,
        idle_seconds: 0,
        agent_version: null,
        gpu_count: 1,
        hibernate_in_seconds: null,
        temperature_celsius: null,
        labels: {},
      });
      expect(all.instances[2]).toMatchObject({ status: 'idle', idle_seconds: 30 });

      const idleOnly = (await t.request('GET', '/api/v1/agent/instances?status=idle')).json;
      expect(idleOnly.count).toBe(2);
      expect(idleOnly.instances.map((i: { instance_id: number }) => i.instance_id)).toEqual([11, 12]);

      const p1 = (await t.request('GET', '/api/v1/agent/instances?limit=2')).json;
      expect(p1.instances.map((i: { instance_id: number }) => i.instance_id)).toEqual([10, 11]);
      expect(p1.count).toBe(5);
      const p2 = (await t.request('GET', `/api/v1/agent/instances?limit=2&cursor=${p1.next_cursor}`)).json;
      expect(p2.instances.map((i: { instance_id: number }) => i.instance_id)).toEqual([12, 13]);
      const p3 = (await t.request('GET', `/api/v1/agent/instances?limit=2&cursor=${p2.next_cursor}`)).json;
      expect(p3.instances.map((i: { instance_id: number }) => i.instance_id)).toEqual([14]);
      expect(p3.next_cursor).toBeNull();
    });

    it('isolates owners: another owner sees nothing and gets 404; admin sees all', async () => {
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      const bobKey = await createApiKey(t.server.store, 'bob', false, T0);
      await t.register(1, 'a', aliceKey);
      await t.register(2, 'b', bobKey);
      const aliceList = (await t.request('GET', '/api/v1/agent/instances', { token: aliceKey })).json;
      expect(aliceList.instances.map((i: { instance_id: number }) => i.instance_id)).toEqual([1]);
      expect(aliceList.count).toBe(1);
      for (const [method, path] of [
        ['GET', '/api/v1/agent/instances/2'],
        ['POST', '/api/v1/agent/instances/2/keep-alive'],
        ['GET', '/api/v1/agent/instances/2/events'],
        ['GET', '/api/v1/agent/instances/2/commands'],
      ] as const) {
        const res = await t.request(method, path, { token: aliceKey });
        expect(res.status, `${method} ${path}`).toBe(404);
        expect(res.json.error).toBe('not_found');
      }
      const patch = await t.request('PATCH', '/api/v1/agent/instances/2/hibernation', { token: aliceKey, body: { enabled: false } });
      expect(patch.status).toBe(404);
      const cmd = await t.request('POST', '/api/v1/agent/instances/2/commands', { token: aliceKey, body: { type: 'snapshot' } });
      expect(cmd.status).toBe(404);
      // Bob's instance is untouched by Alice's attempts.
      expect((await t.request('GET', '/api/v1/agent/instances/2', { token: bobKey })).json.hibernation.enabled).toBe(true);
      // Alice cannot take over Bob's instance id, and learns no more than from any other request about it.
      const steal = await t.request('POST', '/api/v1/agent/instances', { token: aliceKey, body: { instance_id: 2 } });
      expect(steal.status).toBe(404);
      expect(steal.json).toEqual((await t.request('GET', '/api/v1/agent/instances/2', { token: aliceKey })).json);
      expect((await t.request('GET', '/api/v1/agent/instances')).json.count).toBe(2);
      expect((await t.request('GET', '/api/v1/agent/instances', { token: 'dmk_unknown' })).status).toBe(401);
    });

    it("an admin's re-register rotates the token but keeps the owner; only an explicit owner moves it, recorded", async () => {
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      const bobKey = await createApiKey(t.server.store, 'bob', false, T0);
      const first = await t.register(7002, 'gpu-a', aliceKey);

      const rotate = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 7002 } });
      expect(rotate.status).toBe(200);
      expect(rotate.json).toMatchObject({ instance_id: 7002, rotated: true });
      // Still Alice's: she sees it, lists it, and its new token works while the old one does not.
      expect((await t.request('GET', '/api/v1/agent/instances/7002', { token: aliceKey })).status).toBe(200);
      expect((await t.request('GET', '/api/v1/agent/instances', { token: aliceKey })).json.count).toBe(1);
      expect((await t.beat(rotate.json.agent_token, busy(7002))).status).toBe(200);
      expect((await t.beat(first, busy(7002))).status).toBe(401);
      const rotated = (await t.request('GET', '/api/v1/agent/instances/7002/events', { token: aliceKey })).json.events.find(
        (e: { type: string }) => e.type === 'token_rotated',
      );
      expect(rotated).toMatchObject({ reason: 'instance re-registered by admin; the old agent token no longer works', data: { rotated_by: 'admin' } });

      // Alice herself may name herself; nothing moves.
      expect((await t.request('POST', '/api/v1/agent/instances', { token: aliceKey, body: { instance_id: 7002, owner: 'alice' } })).status).toBe(200);
      expect((await t.request('GET', '/api/v1/agent/instances/7002', { token: aliceKey })).status).toBe(200);

      // A transfer is an admin naming another owner, and the audit log says who moved it from whom to whom.
      const move = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 7002, owner: 'bob' } });
      expect(move.status).toBe(200);
      expect((await t.request('GET', '/api/v1/agent/instances/7002', { token: aliceKey })).status).toBe(404);
      expect((await t.request('GET', '/api/v1/agent/instances/7002', { token: bobKey })).status).toBe(200);
      const moved = (await t.request('GET', '/api/v1/agent/instances/7002/events', { token: bobKey })).json.events[0];
      expect(moved).toMatchObject({
        type: 'token_rotated',
        reason: 'instance re-registered by admin and moved from owner alice to bob; the old agent token no longer works',
        data: { rotated_by: 'admin', previous_owner: 'alice', owner: 'bob' },
      });
    });

    it("a non-admin registering another owner's id gets the same 404 as for any instance it cannot see, and changes nothing", async () => {
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      const bobKey = await createApiKey(t.server.store, 'bob', false, T0);
      const token = await t.register(7002, 'gpu-a', aliceKey);
      const eventsBefore = (await t.request('GET', '/api/v1/agent/instances/7002/events', { token: aliceKey })).json;

      const taken = await t.request('POST', '/api/v1/agent/instances', { token: bobKey, body: { instance_id: 7002, hostname: 'mine' } });
      const unseen = await t.request('GET', '/api/v1/agent/instances/7002', { token: bobKey });
      expect(taken.status).toBe(404);
      expect(taken.text).toBe(unseen.text);
      expect(taken.json).toEqual({ error: 'not_found', message: 'instance 7002 not found', field: 'instance_id' });
      // A free id and an id nobody registered answer in the same shape for every other request.
      const nowhere = await t.request('GET', '/api/v1/agent/instances/7999', { token: bobKey });
      expect(nowhere.json).toEqual({ ...unseen.json, message: 'instance 7999 not found' });
      const named = await t.request('POST', '/api/v1/agent/instances', { token: bobKey, body: { instance_id: 7002, owner: 'bob' } });
      expect(named.status).toBe(404);

      // Alice's hostname, audit log and token are untouched.
      expect((await t.request('GET', '/api/v1/agent/instances/7002', { token: aliceKey })).json.hostname).toBe('gpu-a');
      expect((await t.request('GET', '/api/v1/agent/instances/7002/events', { token: aliceKey })).json).toEqual(eventsBefore);
      expect((await t.beat(token, busy(7002))).status).toBe(200);
    });

    it('keep-alive: the seed response, default 30 min, bounds, cancels a schedule, 409 when hibernating', async () => {
      const token = await t.register(7);
      const res = await t.request('POST', '/api/v1/agent/instances/7/keep-alive');
      expect(res.status).toBe(200);
      expect(res.json).toEqual({
        success: true,
        instance_id: 7,
        hibernation_postponed_until: new Date(T0 + 30 * 60_000).toISOString(),
        message: 'Hibernation postponed by 30 minutes',
      });
      const sixty = await t.request('POST', '/api/v1/agent/instances/7/keep-alive?minutes=60');
      expect(sixty.json.message).toBe('Hibernation postponed by 60 minutes');
      for (const bad of ['0', '1441', '-5', '1.5', 'abc', '']) {
        const r = await t.request('POST', `/api/v1/agent/instances/7/keep-alive?minutes=${bad}`);
        expect(r.status, `minutes=${bad}`).toBe(400);
        expect(r.json).toMatchObject({ error: 'invalid_request', field: 'minutes' });
      }
      expect((await t.request('POST', '/api/v1/agent/instances/7/keep-alive?minutes=1440')).status).toBe(200);
      expect((await t.request('GET', '/api/v1/agent/instances/7')).json.postponed_until).toBe(new Date(T0 + 1440 * 60_000).toISOString());

      // Manual hibernate puts it in `hibernating`; keep-alive then says 409.
      await t.beat(token, busy(7));
      const hib = await t.request('POST', '/api/v1/agent/instances/7/commands', { body: { type: 'hibernate' } });
      expect(hib.status).toBe(201);
      expect((await t.request('GET', '/api/v1/agent/instances/7')).json.status).toBe('hibernating');
      const conflict = await t.request('POST', '/api/v1/agent/instances/7/keep-alive?minutes=10');
      expect(conflict.status).toBe(409);
      expect(conflict.json.error).toBe('instance_hibernating');
      expect(conflict.json.message).toMatch(/hibernating/);
    });

    it('PATCH hibernation changes the policy, validates, and disabling cancels a schedule', async () => {
      const token = await t.register(8);
      const ok = await t.request('PATCH', '/api/v1/agent/instances/8/hibernation', { body: { threshold_minutes: 0.5, ignore_gpu_processes: true } });
      expect(ok.status).toBe(200);
      expect(ok.json.hibernation).toMatchObject({ enabled: true, threshold_minutes: 0.5, ignore_gpu_processes: true });
      for (const [body, field] of [
        [{}, 'body'],
        [{ threshold_minutes: 0 }, 'threshold_minutes'],
        [{ threshold_minutes: -1 }, 'threshold_minutes'],
        [{ enabled: 'yes' }, 'enabled'],
      ] as const) {
        const r = await t.request('PATCH', '/api/v1/agent/instances/8/hibernation', { body });
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.json.field).toBe(field);
      }
      // A process on the GPU is ignored now: idle beats schedule after 30 s.
      for (let i = 0; i < 2; i++) {
        await t.beat(token, { ...idle(8), process_count: 4 });
        t.clock.advance(30_000);
      }
      expect((await t.request('GET', '/api/v1/agent/instances/8')).json.hibernation.scheduled).toBe(true);
      const off = await t.request('PATCH', '/api/v1/agent/instances/8/hibernation', { body: { enabled: false } });
      expect(off.json.hibernation).toMatchObject({ enabled: false, scheduled: false, scheduled_at: null });
      const events = (await t.request('GET', '/api/v1/agent/instances/8/events')).json.events;
      expect(events[0]).toMatchObject({ type: 'hibernation_cancelled', reason: 'hibernation disabled' });
    });

    it('queues commands, delivers them in heartbeats, tracks each state, and records the audit trail', async () => {
      const token = await t.register(9);
      const queued = await t.request('POST', '/api/v1/agent/instances/9/commands', { body: { type: 'update', args: { version: '1.3.0' } } });
      expect(queued.status).toBe(201);
      expect(queued.json).toMatchObject({ type: 'update', args: { version: '1.3.0' }, state: 'pending', delivered_at: null });
      const bad = await t.request('POST', '/api/v1/agent/instances/9/commands', { body: { type: 'format-disk' } });
      expect(bad.status).toBe(400);
      expect(bad.json.field).toBe('type');

      const delivered = (await t.beat(token, busy(9))).json.commands;
      expect(delivered).toEqual([{ id: queued.json.id, type: 'update', args: { version: '1.3.0' }, issued_at: new Date(T0).toISOString() }]);
      expect((await t.request('GET', '/api/v1/agent/instances/9/commands')).json.commands[0].state).toBe('delivered');
      t.clock.advance(30_000);
      await t.beat(token, { ...busy(9), command_results: [{ id: queued.json.id, status: 'failed', detail: 'npm: E404' }] });
      const listed = (await t.request('GET', '/api/v1/agent/instances/9/commands')).json;
      expect(listed.commands[0]).toMatchObject({ state: 'failed', detail: 'npm: E404', completed_at: new Date(T0 + 30_000).toISOString() });

      const events = (await t.request('GET', '/api/v1/agent/instances/9/events?limit=3')).json;
      expect(events.events.map((e: { type: string }) => e.type)).toEqual(['command_failed', 'command_delivered', 'online']);
      const older = (await t.request('GET', `/api/v1/agent/instances/9/events?cursor=${events.next_cursor}`)).json;
      expect(older.events.map((e: { type: string }) => e.type)).toEqual(['command_issued', 'registered']);
      expect(older.next_cursor).toBeNull();
    });

    it('the sweeper marks silent instances offline; a beat brings them back online', async () => {
      const token = await t.register(20);
      await t.beat(token, busy(20));
      t.clock.advance(89_999);
      expect(await t.sweep()).toBe(0);
      t.clock.advance(1);
      expect(await t.sweep()).toBe(1);
      expect((await t.request('GET', '/api/v1/agent/instances/20')).json.status).toBe('offline');
      t.clock.advance(600_000);
      await t.beat(token, busy(20));
      const events = (await t.request('GET', '/api/v1/agent/instances/20/events')).json.events.map((e: { type: string }) => e.type);
      expect(events.slice(0, 2)).toEqual(['online', 'offline']);
      expect((await t.request('GET', '/api/v1/agent/instances/20')).json.status).toBe('active');
    });

    it('marks offline exactly one window after the last beat, though beats do not rewrite the deadline each time', async () => {
      const token = await t.register(21);
      for (let i = 0; i < 20; i++) {
        await t.beat(token, busy(21));
        expect(await t.sweep()).toBe(0);
        t.clock.advance(30_000);
      }
      const lastBeat = t.clock.now() - 30_000;
      // Sweep every second of the silence: nothing changes before lastBeat + 90 s, and then it is offline.
      const changes: number[] = [];
      for (let at = t.clock.now(); at <= lastBeat + 95_000; at += 1000) {
        t.clock.set(at);
        if ((await t.sweep()) > 0) changes.push(at - lastBeat);
      }
      expect(changes).toEqual([90_000]);
      expect((await t.request('GET', '/api/v1/agent/instances/21')).json.status).toBe('offline');
    });

    it('restart loses nothing: state, counts and a running countdown resume where they were', async () => {
      const token = await t.register(30);
      await t.request('PATCH', '/api/v1/agent/instances/30/hibernation', { body: { threshold_minutes: 1 } });
      for (let i = 0; i < 3; i++) {
        await t.beat(token, idle(30));
        t.clock.advance(30_000);
      }
      const before = (await t.request('GET', '/api/v1/agent/instances/30')).json;
      expect(before.hibernation.scheduled).toBe(true);
      expect(before.hibernation.hibernate_in_seconds).toBe(270);

      await t.restart();
      t.clock.advance(10_000);
      const after = (await t.request('GET', '/api/v1/agent/instances/30')).json;
      expect(after).toMatchObject({ status: 'idle', heartbeat_count: 3, hibernation: { scheduled: true, scheduled_at: before.hibernation.scheduled_at, threshold_minutes: 1 } });
      expect(after.hibernation.hibernate_in_seconds).toBe(260);
      const beat = (await t.beat(token, idle(30))).json;
      expect(beat.hibernate_in_seconds).toBe(260);
      // The admin key from the environment still works and the token still authenticates.
      expect((await t.request('GET', '/api/v1/agent/instances')).json.count).toBe(1);
    });
  });
}
