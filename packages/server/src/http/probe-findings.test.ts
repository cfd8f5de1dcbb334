import { afterEach, describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';

/**
 * What an adversarial probe of the lifecycle found (findings 1, 2, 3, 4, 6 and 10 of the
 * "trustworthy hibernation" issue), each replayed against a real server over loopback on both
 * engines. Every test here failed on the code the probe attacked.
 */

const S = 1000;
const idle = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 0, memory_used_mb: 10, memory_total_mb: 100 }, process_count: 0 });
const busyNow = (instance_id: number, now: number) => ({
  instance_id,
  gpu_metrics: { utilization_percent: 95, memory_used_mb: 90, memory_total_mb: 100 },
  process_count: 3,
  last_activity: new Date(now).toISOString(),
});

type Opened = Awaited<ReturnType<Awaited<ReturnType<typeof testBackends>>[number]['open']>>;

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`probe findings (${backend.name})`, () => {
    let t: TestServer;
    let db: Opened;
    const start = async (env: Record<string, string> = {}) => {
      db = await backend.open();
      let first = true;
      t = await new TestServer(async () => (first ? ((first = false), db.store) : db.reopen()), env).start();
      return t;
    };
    afterEach(async () => {
      await t.close();
      await db.dispose();
    });
    const events = async (id: number) =>
      ((await t.request('GET', `/api/v1/agent/instances/${id}/events?limit=1000`)).json.events as { type: string; reason: string }[]).map((e) => e.type).reverse();
    const detail = async (id: number) => (await t.request('GET', `/api/v1/agent/instances/${id}`)).json;
    /** Idle beats a second apart until an answer carries the hibernate command; returns that answer. */
    const beatUntilHibernate = async (token: string, id: number) => {
      for (let i = 0; i < 5; i++) {
        const answer = (await t.beat(token, idle(id))).json;
        t.clock.advance(1 * S);
        if (answer.commands.length > 0) return answer;
      }
      throw new Error(`instance ${id}: no hibernate command after 5 idle beats`);
    };

    it('1: silence then a busy beat: the sweeper never fires on stale facts, and the busy answer carries no command', async () => {
      await start({ DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '4', DUMONT_OFFLINE_AFTER_SECONDS: '10' });
      const token = await t.register(7001);
      t.clock.advance(10 * S); // past the restart grace
      for (let i = 0; i < 4; i++) {
        await t.beat(token, idle(7001));
        t.clock.advance(1 * S);
      }
      expect(await detail(7001)).toMatchObject({ status: 'idle', hibernation: { scheduled: true } });
      // The agent is silent for 5.5 s: the schedule comes due with nothing fresh to act on.
      t.clock.advance(5_500);
      await t.sweep();
      expect((await detail(7001)).status).toBe('idle');
      const answer = await t.beat(token, busyNow(7001, t.clock.now()));
      expect(answer.json.commands).toEqual([]);
      expect(answer.json.hibernate_in_seconds).toBeNull();
      expect((await detail(7001)).status).toBe('active');
      expect(await events(7001)).not.toContain('command_issued');
    });

    it('1: a busy beat after the command went out withdraws it; the late result stops nothing', async () => {
      await start({ DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '0' });
      const token = await t.register(7002);
      t.clock.advance(90 * S);
      const answer = await beatUntilHibernate(token, 7002);
      const id = answer.commands[0].id;
      expect(answer.commands[0]).toMatchObject({ type: 'hibernate', args: { idle_utilization_percent: 5, ignore_gpu_processes: false } });
      t.clock.advance(1 * S);
      const busy = (await t.beat(token, busyNow(7002, t.clock.now()))).json;
      expect(busy.commands).toEqual([]);
      const commands = (await t.request('GET', '/api/v1/agent/instances/7002/commands')).json.commands;
      expect(commands[0]).toMatchObject({ id, state: 'cancelled' });
      t.clock.advance(1 * S);
      await t.beat(token, { ...busyNow(7002, t.clock.now()), command_results: [{ id, status: 'succeeded' }] });
      expect((await detail(7002)).status).toBe('active');
      expect(await events(7002)).not.toContain('hibernated');
      expect(await events(7002)).toContain('command_cancelled');
    });

    it("1: a busy beat withdraws the command even when the agent's clock stepped back (its timestamp looks old)", async () => {
      await start({ DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '0' });
      const token = await t.register(7009);
      t.clock.advance(90 * S);
      const answer = await beatUntilHibernate(token, 7009);
      expect(answer.commands[0].type).toBe('hibernate');
      // NTP stepped the agent's clock back two minutes; its next beat shows a job on the GPU.
      const stepped = new Date(t.clock.now() - 120 * S).toISOString();
      const busy = await t.request('POST', '/api/v1/agent/status', { token, body: { ...busyNow(7009, t.clock.now()), hostname: 'gpu', timestamp: stepped, last_activity: stepped } });
      expect(busy.json.commands).toEqual([]);
      expect((await detail(7009)).status).toBe('active');
    });

    it('1: a busy beat while the agent runs the hook leaves the command out of the answer but keeps it', async () => {
      await start({ DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '0' });
      const token = await t.register(7003);
      t.clock.advance(90 * S);
      const answer = await beatUntilHibernate(token, 7003);
      const id = answer.commands[0].id;
      const during = (await t.beat(token, { ...busyNow(7003, t.clock.now() - 60 * S), last_activity: null, running_commands: [id] })).json;
      expect(during.commands).toEqual([]);
      expect(during.hibernate_in_seconds).toBe(0);
      t.clock.advance(1 * S);
      await t.beat(token, { ...idle(7003), command_results: [{ id, status: 'succeeded', detail: 'checkpoint saved' }] });
      expect((await detail(7003)).status).toBe('hibernated');
      expect((await events(7003)).filter((e) => e === 'hibernated')).toHaveLength(1);
    });

    it('2: the same succeeded result re-sent with a newer timestamp never wakes a hibernated instance', async () => {
      await start({ DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '0' });
      const ids = Array.from({ length: 150 }, (_, i) => 8000 + i);
      const tokens = new Map<number, string>();
      for (const id of ids) tokens.set(id, await t.register(id));
      t.clock.advance(90 * S);
      const commandOf = new Map<number, string>();
      for (let round = 0; round < 6 && commandOf.size < ids.length; round++) {
        await Promise.all(
          ids.map(async (id) => {
            const answer = (await t.beat(tokens.get(id)!, idle(id))).json;
            if (answer.commands[0]) commandOf.set(id, answer.commands[0].id);
          }),
        );
        t.clock.advance(1 * S);
      }
      expect(commandOf.size).toBe(ids.length);
      // The agent's answer is lost, so it sends the result again, newer beat after newer beat, racing itself.
      const report = (id: number) => ({ ...idle(id), command_results: [{ id: commandOf.get(id)!, status: 'succeeded', detail: 'saved' }] });
      await Promise.all(ids.map((id) => t.beat(tokens.get(id)!, report(id))));
      t.clock.advance(1);
      await Promise.all(ids.flatMap((id) => [t.beat(tokens.get(id)!, report(id)), t.beat(tokens.get(id)!, report(id))]));
      t.clock.advance(2 * S);
      await Promise.all(ids.map((id) => t.beat(tokens.get(id)!, report(id))));
      const list = (await t.request('GET', '/api/v1/agent/instances?limit=1000')).json;
      expect(list.hibernated_count).toBe(ids.length);
      for (const id of ids.slice(0, 10)) expect(await events(id)).not.toContain('woke');
      for (const id of ids.slice(0, 10)) expect((await events(id)).filter((e) => e === 'hibernated')).toHaveLength(1);
      // A beat without the result is a machine running again: then, and only then, it wakes.
      t.clock.advance(1 * S);
      await t.beat(tokens.get(8000)!, idle(8000));
      expect((await events(8000)).slice(-2)).toEqual(['woke', 'idle_detected']);
    });

    it('3: a beat with a GPU collector error (a torn nvidia-smi line) is never idle', async () => {
      await start({ DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '0' });
      const token = await t.register(7004);
      for (let i = 0; i < 20; i++) {
        const answer = await t.beat(token, {
          instance_id: 7004,
          gpus: [{ index: 0, uuid: 'GPU-0', utilization_percent: 0, memory_used_mb: 1, memory_total_mb: 80 }],
          process_count: 0,
          collector_errors: [{ collector: 'nvidia-smi', message: 'unexpected line (7 fields, expected 8): "1, GPU-1, H100, 97, 100"' }],
        });
        expect(answer.json.commands).toEqual([]);
        t.clock.advance(5 * S);
      }
      expect(await detail(7004)).toMatchObject({ status: 'active', activity: { idle_seconds: 0 } });
      expect(await events(7004)).toEqual(['registered', 'online']);
    });

    it("4: the server's rule alone decides, and its hibernate command carries that rule to the agent", async () => {
      await start({ DUMONT_IDLE_UTILIZATION_PERCENT: '10', DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '0' });
      const token = await t.register(7005);
      await t.request('PATCH', '/api/v1/agent/instances/7005/hibernation', { body: { ignore_gpu_processes: true } });
      let answer;
      for (let i = 0; i < 6 && !(answer?.commands.length > 0); i++) {
        answer = (await t.beat(token, { instance_id: 7005, gpu_metrics: { utilization_percent: 7 }, process_count: 1 })).json;
        t.clock.advance(1 * S);
      }
      expect(answer.commands[0]).toMatchObject({ type: 'hibernate', args: { idle_utilization_percent: 10, ignore_gpu_processes: true } });
      // An operator's hibernate command carries it too.
      const other = await t.register(7006);
      await t.beat(other, { instance_id: 7006, gpu_metrics: { utilization_percent: 50 }, process_count: 0 });
      const created = await t.request('POST', '/api/v1/agent/instances/7006/commands', { body: { type: 'hibernate' } });
      expect(created.json.args).toEqual({ idle_utilization_percent: 10, ignore_gpu_processes: false });
    });

    it('6: a leap second is a time, not a NaN: stored, ordered, and no event storm', async () => {
      await start({ DUMONT_MAX_CLOCK_SKEW_SECONDS: '1000000000' });
      const token = await t.register(7007);
      const body = { instance_id: 7007, hostname: 'gpu', gpu_metrics: { utilization_percent: 0 }, process_count: 0, last_activity: '2016-12-31T23:59:60Z' };
      const first = await t.request('POST', '/api/v1/agent/status', { token, body: { ...body, timestamp: '2016-12-31T23:59:60Z' } });
      expect(first.status).toBe(200);
      for (let i = 1; i <= 5; i++) {
        t.clock.advance(30 * S);
        const res = await t.request('POST', '/api/v1/agent/status', { token, body: { ...body, timestamp: `2017-01-01T00:00:${String(i * 10).padStart(2, '0')}Z` } });
        expect(res.status).toBe(200);
      }
      const d = await detail(7007);
      expect(d).toMatchObject({ status: 'idle', heartbeat_count: 6, activity: { last_activity: '2016-12-31T23:59:60Z' } });
      expect((await events(7007)).filter((e) => e === 'idle_detected')).toHaveLength(1);
    });

    it('10: a far-future agent timestamp is refused (400 naming it) and cannot block later beats', async () => {
      await start();
      const token = await t.register(7008);
      const future = await t.request('POST', '/api/v1/agent/status', { token, body: { ...idle(7008), hostname: 'gpu', timestamp: '9999-12-31T23:59:59Z' } });
      expect(future.status).toBe(400);
      expect(future.json).toMatchObject({ error: 'invalid_request', field: 'timestamp' });
      expect((await detail(7008)).heartbeat_count).toBe(0);
      for (let i = 0; i < 3; i++) {
        expect((await t.beat(token, idle(7008))).status).toBe(200);
        t.clock.advance(30 * S);
      }
      expect((await detail(7008)).heartbeat_count).toBe(3);
    });

    it('10: after a downtime longer than the offline window, a restart waits one window before marking anything offline', async () => {
      await start();
      const tokens = new Map<number, string>();
      for (const id of [7010, 7011, 7012]) tokens.set(id, await t.register(id));
      t.clock.advance(90 * S);
      for (const [id, token] of tokens) await t.beat(token, idle(id));
      await t.server.close();
      t.clock.advance(10 * 60 * S); // down for ten minutes
      await t.start();
      expect(await t.sweep()).toBe(0);
      t.clock.advance(60 * S);
      await t.beat(tokens.get(7010)!, idle(7010));
      await t.beat(tokens.get(7011)!, idle(7011));
      expect(await t.sweep()).toBe(0);
      const statuses = async () => (await t.request('GET', '/api/v1/agent/instances')).json.instances.map((i: { status: string }) => i.status);
      expect(await statuses()).toEqual(['idle', 'idle', 'idle']);
      // One window after the restart, the one that never came back is offline; the others are not.
      t.clock.advance(30 * S);
      expect(await t.sweep()).toBe(1);
      expect(await statuses()).toEqual(['idle', 'idle', 'offline']);
    });
  });
}
