import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';

/**
 * Named policies over real HTTP on both engines: admins write them, anyone reads them, bad input is a
 * 400 naming the field with nothing stored; an instance follows the highest-priority match, its
 * detail says where each value came from, and the heartbeat path enforces them — thresholds, limits,
 * schedules (across DST), max uptime and external activity signals.
 */

const POLICIES = '/api/v1/policies';
const LIST = '/api/v1/agent/instances';
const MIN = 60_000;

const notebooks = { selector: ['kind=notebook'], priority: 10, threshold_minutes: 20, limits: { max_threshold_minutes: 60, max_keep_alive_minutes: 30, keep_alive_budget_minutes: 60, owner_may_disable: false } };
const training = { selector: ['kind=training'], priority: 20, threshold_minutes: 120, warning_seconds: 600, idle_utilization_percent: 10 };

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`named policies (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    let ownerKey: string;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      t = await new TestServer(async () => db.store).start();
      ownerKey = await createApiKey(t.server.store, 'alice', false, t.clock.now());
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    const put = (name: string, body: unknown, token?: string) => t.request('PUT', `${POLICIES}/${name}`, { body, token });
    const detail = async (id: number) => (await t.request('GET', `${LIST}/${id}`)).json;
    /** Alice's instance, labelled by an admin (an owner's labels may not choose a policy). */
    const registerWith = async (id: number, labels: Record<string, string>) => {
      const res = await t.request('POST', LIST, { body: { instance_id: id, hostname: `gpu-${id}`, labels, owner: 'alice' } });
      expect(res.status, res.text).toBe(201);
      return res.json.agent_token as string;
    };
    /** Beats every 30 s for `minutes` at `utilization` %; returns the commands the answers carried (each once: an open one is re-sent every beat). */
    const beatFor = async (token: string, id: number, minutes: number, utilization: number, extra: Record<string, unknown> = {}) => {
      const commands = new Map<string, { id: string; type: string; args: Record<string, unknown> }>();
      for (let s = 0; s < minutes * 2; s++) {
        t.clock.advance(30_000);
        const res = await t.beat(token, { instance_id: id, gpus: [{ index: 0, utilization_percent: utilization }], process_count: 0, ...extra });
        expect(res.status, res.text).toBe(200);
        for (const c of res.json.commands) commands.set(c.id, c);
      }
      return [...commands.values()];
    };

    it('admins create, replace, list and delete policies; owners read but may not write', async () => {
      const created = await put('notebooks', notebooks);
      expect(created.status, created.text).toBe(201);
      expect(created.json).toMatchObject({ name: 'notebooks', updated_by: 'admin', ...notebooks });
      expect((await put('notebooks', { ...notebooks, threshold_minutes: 25 })).status).toBe(200);
      expect((await put('training', training)).status).toBe(201);
      const list = await t.request('GET', POLICIES, { token: ownerKey });
      expect(list.status).toBe(200);
      expect(list.json.policies.map((p: { name: string }) => p.name)).toEqual(['training', 'notebooks']);
      expect((await t.request('GET', `${POLICIES}/notebooks`, { token: ownerKey })).json.threshold_minutes).toBe(25);

      const refused = await put('mine', { selector: [], priority: 1 }, ownerKey);
      expect(refused.status).toBe(403);
      expect((await t.request('DELETE', `${POLICIES}/training`, { token: ownerKey })).status).toBe(403);
      expect((await t.request('DELETE', `${POLICIES}/training`)).json).toEqual({ success: true, name: 'training' });
      expect((await t.request('DELETE', `${POLICIES}/training`)).status).toBe(404);
      expect((await t.request('GET', `${POLICIES}/training`)).status).toBe(404);
      expect((await t.request('GET', POLICIES)).json.policies.map((p: { name: string }) => p.name)).toEqual(['notebooks']);
    });

    it('refuses bad policies with a 400 naming the field, and stores nothing', async () => {
      expect((await put('notebooks', notebooks)).status).toBe(201);
      const before = (await t.request('GET', POLICIES)).text;
      const cases: [string, unknown, string][] = [
        ['x', { ...notebooks, priority: 11, color: 'red' }, 'color'],
        ['x', { ...notebooks, priority: 11, selector: ['team=='] }, 'selector'],
        ['x', { ...notebooks }, 'priority'],
        ['x', { ...notebooks, priority: 11, threshold_minutes: 0 }, 'threshold_minutes'],
        ['x', { ...notebooks, priority: 11, provider: 'gcp' }, 'provider'],
        ['x', { ...notebooks, priority: 11, schedule: { timezone: 'Mars/Olympus', active: ['Mon-Fri 08:00-20:00'], outside: 'hibernate' } }, 'schedule.timezone'],
        ['x', { ...notebooks, priority: 11, schedule: { timezone: 'Europe/Berlin', active: ['Mon-Fri 08:00-25:00'], outside: 'hibernate' } }, 'schedule.active[0]'],
        ['x', { ...notebooks, priority: 11, schedule: { timezone: 'Europe/Berlin', active: ['Mon-Fri 08:00-20:00'], outside: 'idle_only' } }, 'schedule.outside_threshold_minutes'],
        ['x', { ...notebooks, priority: 11, schedule: { timezone: 'UTC', active: ['Mon 08:00-20:00'], outside: 'sometimes' } }, 'schedule.outside'],
        ['x', { ...notebooks, priority: 11, signals: [{ name: 'hub', type: 'http', url: 'ftp://example.test/' }] }, 'signals[0].url'],
        ['x', { ...notebooks, priority: 11, signals: [{ name: 'a', type: 'agent', key: 'k' }, { name: 'a', type: 'agent', key: 'j' }] }, 'signals[1].name'],
        ['x', { ...notebooks, priority: 11, limits: { max_threshold_minutes: 60, owner_may: true } }, 'limits.owner_may'],
        ['x', { ...notebooks, priority: 11, signals: [{ name: 'hub', type: 'http', url: 'http://hub.example/x', extra: 1 }] }, 'signals.0.extra'],
        ['x', { ...notebooks, priority: 11, signals: [{ name: 'hub', type: 'http', url: 'http://hub.example/x', interval_seconds: 9 }] }, 'signals.0.interval_seconds'],
        ['x', { ...notebooks, priority: 11, signals: [{ name: 'hub', type: 'http' }] }, 'signals[0].url'],
        ['x', { ...notebooks, priority: 11, signals: [{ name: 'hub', type: 'http', url: 'http://{hostname}:8888/busy' }] }, 'signals[0].url'],
        ['Bad_Name', { ...notebooks, priority: 11 }, 'name'],
      ];
      for (const [name, body, field] of cases) {
        const res = await put(name, body);
        expect(res.status, `${field}: ${res.text}`).toBe(400);
        expect(res.json.error).toBe('invalid_request');
        expect(res.json.field, res.text).toBe(field);
      }
      expect((await t.request('GET', POLICIES)).text).toBe(before);
    });

    it('an instance follows its highest-priority match; the detail says where each value came from', async () => {
      await put('notebooks', notebooks);
      await put('everyone', { selector: [], priority: 1, warning_seconds: 120 });
      await put('vision-notebooks', { selector: ['kind=notebook', 'team=vision'], priority: 30, idle_utilization_percent: 2 });
      await registerWith(1, { kind: 'notebook' });
      await registerWith(2, { kind: 'notebook', team: 'vision' });
      await registerWith(3, {});

      const one = (await detail(1)).effective_policy;
      expect(one).toMatchObject({
        policy: 'notebooks',
        threshold_minutes: { value: 20, source: 'policy' },
        warning_seconds: { value: 300, source: 'default' },
        idle_utilization_percent: { value: 5, source: 'default' },
        enabled: { value: true, source: 'default' },
        provider: { value: 'none', source: 'default' },
      });
      expect((await detail(1)).hibernation).toMatchObject({ threshold_minutes: 20, limits: { max_threshold_minutes: 60, owner_may_disable: false } });
      expect((await detail(2)).effective_policy).toMatchObject({ policy: 'vision-notebooks', idle_utilization_percent: { value: 2, source: 'policy' }, threshold_minutes: { value: 30, source: 'default' } });
      expect((await detail(3)).effective_policy).toMatchObject({ policy: 'everyone', warning_seconds: { value: 120, source: 'policy' } });

      // An owner's value within the policy's limit is the instance's; beyond it, a 403 naming the policy's limit.
      const ok = await t.request('PATCH', `${LIST}/1/hibernation`, { token: ownerKey, body: { threshold_minutes: 45 } });
      expect(ok.json.effective_policy.threshold_minutes).toEqual({ value: 45, source: 'instance' });
      const over = await t.request('PATCH', `${LIST}/1/hibernation`, { token: ownerKey, body: { threshold_minutes: 90 } });
      expect(over.status).toBe(403);
      expect(over.json).toMatchObject({ field: 'threshold_minutes' });
      expect(over.json.message).toContain('policy "notebooks" limits.max_threshold_minutes');
      const off = await t.request('PATCH', `${LIST}/1/hibernation`, { token: ownerKey, body: { enabled: false } });
      expect(off.status).toBe(403);
      expect(off.json.message).toContain('policy "notebooks" limits.owner_may_disable');
      const tooLong = await t.request('POST', `${LIST}/1/keep-alive?minutes=45`, { token: ownerKey });
      expect(tooLong.status).toBe(403);
      expect(tooLong.json.message).toContain('limits.max_keep_alive_minutes');
      // Lowering the policy's limit bounds the owner's stored 45 when evaluated; the detail shows both.
      await put('notebooks', { ...notebooks, limits: { ...notebooks.limits, max_threshold_minutes: 40 } });
      const bounded = await detail(1);
      expect(bounded.effective_policy.threshold_minutes).toEqual({ value: 40, source: 'limit' });
      expect(bounded.hibernation.threshold_minutes_requested).toBe(45);
      // An admin's label change moves the instance to another policy at once.
      await t.request('PATCH', `${LIST}/3`, { body: { labels: { kind: 'notebook' } } });
      expect((await detail(3)).effective_policy.policy).toBe('notebooks');
    });

    it("owners may not relabel an instance into another policy nor switch away its provider; admins may", async () => {
      await put('stopped', { selector: ['kind=notebook'], priority: 5, provider: 'none', limits: { max_threshold_minutes: 30 } });
      await registerWith(4, { kind: 'notebook', team: 'a' });
      const before = await detail(4);
      const escape = await t.request('PATCH', `${LIST}/4`, { token: ownerKey, body: { labels: { kind: 'batch' } } });
      expect(escape.status).toBe(403);
      expect(escape.json).toMatchObject({ error: 'forbidden', field: 'labels' });
      expect(escape.json.message).toContain('from policy "stopped" to the server defaults');
      const viaRegister = await t.request('POST', LIST, { token: ownerKey, body: { instance_id: 4, labels: { kind: 'batch' } } });
      expect(viaRegister.status).toBe(403);
      // Nor can a new instance be labelled into a policy by its owner: it starts where an unlabelled one would.
      const fresh = await t.request('POST', LIST, { token: ownerKey, body: { instance_id: 40, labels: { kind: 'notebook' } } });
      expect(fresh.status).toBe(403);
      expect(fresh.json).toMatchObject({ field: 'labels' });
      expect((await t.request('GET', `${LIST}/40`)).status).toBe(404);
      expect((await t.request('POST', LIST, { token: ownerKey, body: { instance_id: 41, labels: { team: 'a' } } })).status).toBe(201);
      expect(await detail(4)).toEqual(before);
      // A label that does not change the policy is the owner's to set.
      expect((await t.request('PATCH', `${LIST}/4`, { token: ownerKey, body: { labels: { team: 'b' } } })).status).toBe(200);
      const provider = await t.request('PATCH', `${LIST}/4`, { token: ownerKey, body: { provider: 'none' } });
      expect(provider.status, provider.text).toBe(200);
      expect((await detail(4)).effective_policy.provider).toEqual({ value: 'none', source: 'policy' });
      const moved = await t.request('PATCH', `${LIST}/4`, { body: { labels: { kind: 'batch' } } });
      expect(moved.status, moved.text).toBe(200);
      expect(moved.json.effective_policy.policy).toBeNull();
    });

    it("an owner cannot hand an admin's value back to a policy that turns hibernation off or dry-run on", async () => {
      await put('off', { selector: ['kind=y'], priority: 11, enabled: false, dry_run: true, limits: { owner_may_disable: false } });
      await registerWith(6, { kind: 'y' });
      const byAdmin = await t.request('PATCH', `${LIST}/6/hibernation`, { body: { enabled: true, dry_run: false } });
      expect(byAdmin.json.effective_policy).toMatchObject({ enabled: { value: true, source: 'instance' }, dry_run: { value: false, source: 'instance' } });
      const before = (await t.request('GET', `${LIST}/6/events?limit=100`)).text;
      for (const [body, field] of [[{ enabled: true }, 'enabled'], [{ dry_run: false }, 'dry_run']] as const) {
        const res = await t.request('PATCH', `${LIST}/6/hibernation`, { token: ownerKey, body });
        expect(res.status, res.text).toBe(403);
        expect(res.json.field).toBe(field);
        expect(res.json.message).toContain('policy "off" limits.owner_may_disable');
      }
      expect((await detail(6)).effective_policy).toMatchObject({ enabled: { value: true }, dry_run: { value: false } });
      expect((await t.request('GET', `${LIST}/6/events?limit=100`)).text).toBe(before);
      // A threshold the owner may set still passes.
      expect((await t.request('PATCH', `${LIST}/6/hibernation`, { token: ownerKey, body: { threshold_minutes: 15 } })).status).toBe(200);
    });

    it('an own threshold set to null follows the policy again', async () => {
      await put('notebooks', notebooks);
      await registerWith(5, { kind: 'notebook' });
      expect((await t.request('PATCH', `${LIST}/5/hibernation`, { body: { threshold_minutes: 500 } })).json.effective_policy.threshold_minutes).toEqual({ value: 500, source: 'instance' });
      const reset = await t.request('PATCH', `${LIST}/5/hibernation`, { token: ownerKey, body: { threshold_minutes: null } });
      expect(reset.status, reset.text).toBe(200);
      expect(reset.json.effective_policy.threshold_minutes).toEqual({ value: 20, source: 'policy' });
    });

    it('enforces each policy on the heartbeat path: notebooks hibernate after 20 min, training not before 120', async () => {
      await put('notebooks', notebooks);
      await put('training', training);
      const nb = await registerWith(10, { kind: 'notebook' });
      const tr = await registerWith(11, { kind: 'training' });
      // 8 % is busy for a notebook (default 5 %) but idle for training (10 %).
      await beatFor(nb, 10, 25, 0);
      await beatFor(tr, 11, 25, 8);
      expect(await t.eventTypes(10)).toContain('hibernation_scheduled');
      expect((await detail(10)).status).toMatch(/hibernating|idle/);
      expect(await t.eventTypes(11)).not.toContain('hibernation_scheduled');
      expect((await detail(11)).status).toBe('idle');
      const commands = await beatFor(tr, 11, 110, 8);
      expect(commands.filter((c) => c.type === 'hibernate')).toHaveLength(1);
      const events = (await t.request('GET', `${LIST}/11/events?limit=1000`)).json.events;
      const scheduled = events.find((e: { type: string }) => e.type === 'hibernation_scheduled');
      expect(scheduled.reason).toContain('threshold 120 min');
      // The warning is the policy's 600 s: scheduled at idle + 120 min, fired 10 min later.
      expect(Date.parse(scheduled.data.scheduled_at) - Date.parse(scheduled.at)).toBe(600_000);
      expect(commands.find((c) => c.type === 'hibernate')!.args).toMatchObject({ idle_utilization_percent: 10 });
    });

    it('schedule idle_only: outside working hours the threshold shortens, across the DST change in Berlin', async () => {
      await put('office', {
        selector: ['kind=notebook'],
        priority: 10,
        threshold_minutes: 240,
        schedule: { timezone: 'Europe/Berlin', active: ['Mon-Fri 08:00-20:00'], outside: 'idle_only', outside_threshold_minutes: 15 },
      });
      const token = await registerWith(20, { kind: 'notebook' });
      // Friday 27 March 2026, 19:30 in Berlin (CET, UTC+1): still working hours.
      t.clock.set(Date.parse('2026-03-27T18:30:00Z'));
      expect((await detail(20)).effective_policy).toMatchObject({ threshold_minutes: { value: 240, source: 'policy' }, schedule: { within_active_hours: true, next_change_at: '2026-03-27T19:00:00.000Z' } });
      await beatFor(token, 20, 25, 0);
      // 19:55 local: 25 min idle, under the 240 min threshold; after 20:00 the 15 min threshold applies.
      expect(await t.eventTypes(20)).not.toContain('hibernation_scheduled');
      await beatFor(token, 20, 10, 0);
      expect(await t.eventTypes(20)).toContain('hibernation_scheduled');
      const ev = (await t.request('GET', `${LIST}/20/events?limit=1000`)).json.events.find((e: { type: string }) => e.type === 'hibernation_scheduled');
      expect(Date.parse(ev.at)).toBeGreaterThanOrEqual(Date.parse('2026-03-27T19:00:00Z'));
      expect(ev.reason).toContain('threshold 15 min');
      // Monday 30 March, after the change to CEST (UTC+2): 08:00 local is 06:00Z, no longer 07:00Z.
      t.clock.set(Date.parse('2026-03-30T06:30:00Z'));
      expect((await detail(20)).effective_policy.schedule).toMatchObject({ within_active_hours: true });
      t.clock.set(Date.parse('2026-03-30T05:59:00Z'));
      expect((await detail(20)).effective_policy).toMatchObject({ threshold_minutes: { value: 15, source: 'schedule' }, schedule: { within_active_hours: false, next_change_at: '2026-03-30T06:00:00.000Z' } });
    });

    it('schedule hibernate: outside hours even a busy machine hibernates after the warning; keep-alive holds within the budget', async () => {
      await put('nights', {
        selector: ['kind=training'],
        priority: 10,
        schedule: { timezone: 'America/New_York', active: ['Mon-Sun 07:00-22:00'], outside: 'hibernate' },
        limits: { max_keep_alive_minutes: 60, keep_alive_budget_minutes: 60 },
      });
      const token = await registerWith(30, { kind: 'training' });
      // Saturday 31 October 2026, 21:50 in New York (EDT, UTC-4).
      t.clock.set(Date.parse('2026-11-01T01:50:00Z'));
      const before = await beatFor(token, 30, 9, 97);
      expect(before).toHaveLength(0);
      expect(await t.eventTypes(30)).not.toContain('hibernation_scheduled');
      // 22:00 passes: scheduled with the warning, busy or not.
      await beatFor(token, 30, 2, 97);
      const events = (await t.request('GET', `${LIST}/30/events?limit=1000`)).json.events;
      const scheduled = events.find((e: { type: string }) => e.type === 'hibernation_scheduled');
      expect(scheduled.reason).toContain('outside its active hours');
      expect(scheduled.data.forced).toBe(true);
      expect((await detail(30)).effective_policy.forced).toContain('outside its active hours');
      // The owner keeps it for an hour (within the budget); a second hour is over the budget.
      expect((await t.request('POST', `${LIST}/30/keep-alive?minutes=60`, { token: ownerKey })).status).toBe(200);
      expect((await t.request('POST', `${LIST}/30/keep-alive?minutes=30`, { token: ownerKey })).status).toBe(403);
      expect(await beatFor(token, 30, 55, 97)).toHaveLength(0);
      // The hour is over: scheduled again with the warning, then the forced command goes out.
      const commands = await beatFor(token, 30, 15, 97);
      const hibernate = commands.filter((c) => c.type === 'hibernate');
      expect(hibernate).toHaveLength(1);
      expect(hibernate[0]!.args).toMatchObject({ forced: true });
      expect(String(hibernate[0]!.args.reason)).toContain('outside its active hours');
      // A busy beat does not withdraw it while the reason holds.
      await beatFor(token, 30, 1, 97);
      expect((await detail(30)).status).toBe('hibernating');
    });

    it('a forced hibernation whose reason ended while its hook ran, or one under a policy turned off meanwhile, stops nothing', async () => {
      await put('office', { selector: [], priority: 1, warning_seconds: 60, schedule: { timezone: 'UTC', active: ['Mon-Sun 08:00-20:00'], outside: 'hibernate' } });
      const token = await registerWith(45, {});
      t.clock.set(Date.parse('2026-03-02T07:56:00Z'));
      const busy = { instance_id: 45, gpus: [{ index: 0, utilization_percent: 95 }], process_count: 3 };
      let cmdId: string | null = null;
      while (cmdId === null) {
        t.clock.advance(30_000);
        const res = await t.beat(token, busy);
        cmdId = res.json.commands.find((c: { type: string }) => c.type === 'hibernate')?.id ?? null;
      }
      // The hook runs past 08:00: the active hours begin while it saves a busy machine.
      while (t.clock.now() < Date.parse('2026-03-02T08:03:00Z')) {
        t.clock.advance(30_000);
        expect((await t.beat(token, { ...busy, running_commands: [cmdId] })).status).toBe(200);
      }
      expect((await detail(45)).effective_policy.forced).toBeNull();
      t.clock.advance(30_000);
      const done = await t.beat(token, { ...busy, command_results: [{ id: cmdId, status: 'succeeded', detail: 'forced: saved' }] });
      expect(done.status).toBe(200);
      expect((await detail(45)).status).toBe('active');
      const types = await t.eventTypes(45);
      expect(types).not.toContain('hibernated');
      expect(types.at(-1)).toBe('hibernation_cancelled');

      // An ordinary hibernation out when an admin turns hibernation off: the result stops nothing either.
      await put('quiet', { selector: ['kind=quiet'], priority: 5, threshold_minutes: 5, warning_seconds: 0 });
      const quiet = await registerWith(46, { kind: 'quiet' });
      const issued = (await beatFor(quiet, 46, 8, 0)).find((c) => c.type === 'hibernate')!;
      expect(issued).toBeDefined();
      await put('quiet', { selector: ['kind=quiet'], priority: 5, threshold_minutes: 5, warning_seconds: 0, enabled: false });
      t.clock.advance(30_000);
      await t.beat(quiet, { instance_id: 46, gpus: [{ index: 0, utilization_percent: 0 }], process_count: 0, command_results: [{ id: issued.id, status: 'succeeded' }] });
      expect((await detail(46)).status).toBe('active');
      expect(await t.eventTypes(46)).not.toContain('hibernated');
    });

    it('max_uptime_hours hibernates a busy machine once it has run that long, with the warning', async () => {
      await put('capped', { selector: [], priority: 1, max_uptime_hours: 1, warning_seconds: 60 });
      const token = await registerWith(40, {});
      expect((await beatFor(token, 40, 59, 90)).filter((c) => c.type === 'hibernate')).toHaveLength(0);
      const commands = await beatFor(token, 40, 3, 90);
      expect(commands.filter((c) => c.type === 'hibernate')).toHaveLength(1);
      expect(String(commands.find((c) => c.type === 'hibernate')!.args.reason)).toContain('max_uptime_hours');
    });

    describe('external activity signals', () => {
      let hub: Server;
      let answer: (path: string) => { status: number; body: string } | 'hang';
      let hubUrl: string;
      beforeEach(async () => {
        answer = () => ({ status: 200, body: '{"active": false}' });
        hub = createServer((req, res) => {
          const a = answer(req.url ?? '');
          if (a === 'hang') return;
          res.writeHead(a.status, { 'content-type': 'application/json' }).end(a.body);
        });
        await new Promise<void>((resolve) => hub.listen(0, '127.0.0.1', resolve));
        hubUrl = `http://127.0.0.1:${(hub.address() as AddressInfo).port}`;
      });
      afterEach(async () => {
        hub.closeAllConnections();
        await new Promise((resolve) => hub.close(resolve));
      });

      it('an agent signal that says active, or is missing, keeps an idle GPU from hibernating, with the reason shown', async () => {
        await put('slurm', { selector: [], priority: 1, threshold_minutes: 10, signals: [{ name: 'slurm', type: 'agent', key: 'slurm-jobs' }] });
        const token = await registerWith(50, {});
        await beatFor(token, 50, 20, 0, { activity_signals: [{ key: 'slurm-jobs', state: 'active', detail: '2 jobs running' }] });
        expect((await detail(50)).status).toBe('active');
        expect((await detail(50)).effective_policy.signals).toEqual([{ name: 'slurm', type: 'agent', state: 'active', detail: '2 jobs running' }]);
        // An agent that does not report the key (an old agent, or no hook): unknown counts as active.
        await beatFor(token, 50, 20, 0);
        expect((await detail(50)).status).toBe('active');
        expect((await detail(50)).effective_policy.signals[0]).toMatchObject({ state: 'unavailable' });
        const commands = await beatFor(token, 50, 20, 0, { activity_signals: [{ key: 'slurm-jobs', state: 'idle' }] });
        expect(commands.filter((c) => c.type === 'hibernate')).toHaveLength(1);
      });

      it('an HTTP signal the server polls: unavailable, slow or malformed counts as active; idle lets it hibernate', async () => {
        await put('hub', { selector: [], priority: 1, threshold_minutes: 10, signals: [{ name: 'jupyterhub', type: 'http', url: `${hubUrl}/active/{instance_id}`, timeout_seconds: 1, interval_seconds: 10 }] });
        const token = await registerWith(60, {});
        const seen: string[] = [];
        const step = async (minutes: number, reply: { status: number; body: string } | 'hang') => {
          answer = (path) => {
            seen.push(path);
            return reply;
          };
          const commands = new Map<string, { type: string }>();
          for (let i = 0; i < minutes * 2; i++) {
            for (const c of await beatFor(token, 60, 0.5, 0)) commands.set(c.id, c);
            await t.server.signals.pollDue();
          }
          return [...commands.values()];
        };
        expect(await step(15, { status: 503, body: 'down' })).toHaveLength(0);
        expect((await detail(60)).effective_policy.signals[0]).toMatchObject({ state: 'unavailable', detail: expect.stringContaining('503') });
        expect(await step(15, { status: 200, body: '{"active": "yes"}' })).toHaveLength(0);
        expect(await step(1.5, 'hang')).toHaveLength(0);
        expect((await detail(60)).effective_policy.signals[0]).toMatchObject({ state: 'unavailable', detail: expect.stringContaining('timed out') });
        expect(await step(15, { status: 200, body: '{"active": true, "detail": "1 kernel busy"}' })).toHaveLength(0);
        expect((await detail(60)).status).toBe('active');
        const commands = await step(20, { status: 200, body: '{"active": false}' });
        expect(commands.filter((c) => c.type === 'hibernate')).toHaveLength(1);
        expect(new Set(seen)).toEqual(new Set(['/active/60']));
      });
    });
  });
}
