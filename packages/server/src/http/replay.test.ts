import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { testBackends } from '../test-support/backends.js';
import { T0, TestServer } from '../test-support/test-server.js';
import { SESSION_COOKIE } from './auth.js';

const S = 1000;
const MIN = 60 * S;
const H = 60 * MIN;
const iso = (ms: number) => new Date(ms).toISOString();
const round4 = (n: number) => Math.round(n * 10_000) / 10_000;

const GPUS = 2;
const PRICE = 1.5;
const IDLE_MINUTES = 40;
const gpus = (utilization: number) =>
  Array.from({ length: GPUS }, (_, index) => ({ index, uuid: `GPU-${index}`, utilization_percent: utilization, memory_used_mb: 10, memory_total_mb: 81_559 }));

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`GET /api/v1/agent/replay (${backend.name})`, () => {
    let t: TestServer;
    let db: Awaited<ReturnType<typeof backend.open>>;
    let aliceKey: string;
    // By default the live policy never fires in these histories (2 h threshold): what actually ran saved nothing.
    const start = async (env: Record<string, string> = { DUMONT_IDLE_THRESHOLD_MINUTES: '120' }) => {
      t = await new TestServer(async () => db.store, env).start();
      aliceKey = await createApiKey(t.server.store, 'alice', false, t.clock.now());
    };
    beforeEach(async () => {
      db = await backend.open();
    });
    afterEach(async () => {
      await t.close();
      await db.dispose();
    });

    /** Instance 7 (admin's): idle beats every 30 s from T0 for 40 min, then one busy beat; history flushed. */
    const recordIdleThenBusy = async () => {
      await start();
      const res = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 7, hostname: 'gpu-7', price_per_hour: PRICE } });
      expect(res.status, res.text).toBe(201);
      const token = res.json.agent_token as string;
      for (let at = T0; at < T0 + IDLE_MINUTES * MIN; at += 30 * S) {
        t.clock.set(at);
        expect((await t.beat(token, { instance_id: 7, gpus: gpus(0), process_count: 0 })).status).toBe(200);
      }
      t.clock.set(T0 + IDLE_MINUTES * MIN);
      expect((await t.beat(token, { instance_id: 7, gpus: gpus(95), process_count: 3 })).status).toBe(200);
      await t.server.history.flush();
      t.clock.advance(MIN);
    };
    const replay = (query: string, token?: string | null) => t.request('GET', `/api/v1/agent/replay?${query}`, token === undefined ? {} : { token });
    const range = `from=${encodeURIComponent(iso(T0 - MIN))}&to=${encodeURIComponent(iso(T0 + IDLE_MINUTES * MIN + 30 * S))}`;

    it('replays each threshold over the recorded beats: a hibernation at the first idle beat + threshold, saved until the busy beat', async () => {
      await recordIdleThenBusy();
      const res = await replay(`threshold_minutes=10,30&warning_seconds=0&${range}`);
      expect(res.status, res.text).toBe(200);
      const busyAgainAt = T0 + IDLE_MINUTES * MIN;
      const policy = (threshold: number) => {
        const hibernatedAt = T0 + threshold * MIN;
        const hours = (busyAgainAt - hibernatedAt) / H;
        return {
          threshold_minutes: threshold,
          utilization_percent: t.config.idleUtilizationPercent,
          warning_seconds: 0,
          hibernations: 1,
          gpu_hours_saved: round4(hours * GPUS),
          usd_saved: round4(hours * PRICE),
          // Busy again 30 and 10 minutes later: both within the default 60-minute regret window.
          regrets: [{ instance_id: 7, hibernated_at: iso(hibernatedAt), busy_again_at: iso(busyAgainAt) }],
          instances: [{ instance_id: 7, hibernations: 1, gpu_hours_saved: round4(hours * GPUS), usd_saved: round4(hours * PRICE), regret_count: 1 }],
        };
      };
      expect(res.json).toEqual({
        from: iso(T0 - MIN),
        to: iso(T0 + IDLE_MINUTES * MIN + 30 * S),
        // Every beat of this range is still raw.
        raw_from: iso(T0 - MIN),
        actual: { hibernations: 0, gpu_hours_saved: 0, usd_saved: 0, regrets: [], instances: [] },
        policies: [policy(10), policy(30)],
      });

      // The 10-minute policy slept 30 minutes, the 30-minute one 10: a 5-minute window keeps neither, a 15-minute one the second.
      const narrow = await replay(`threshold_minutes=10,30&warning_seconds=0&regret_minutes=5&${range}`);
      expect(narrow.json.policies.map((p: { regrets: unknown[] }) => p.regrets.length)).toEqual([0, 0]);
      const wide = await replay(`threshold_minutes=10,30&warning_seconds=0&regret_minutes=15&${range}`);
      expect(wide.json.policies.map((p: { regrets: unknown[] }) => p.regrets.length)).toEqual([0, 1]);
      // A threshold longer than the idle streak never hibernates; fractional minutes are read as such.
      const longer = await replay(`threshold_minutes=45,0.5&warning_seconds=0&${range}`);
      expect(longer.json.policies.map((p: { hibernations: number }) => p.hibernations)).toEqual([0, 1]);
      expect(longer.json.policies[1].regrets[0].hibernated_at).toBe(iso(T0 + 30 * S));
    });

    it('is owner-scoped: another owner sees none of it, and naming its instance is 404 naming instance', async () => {
      await recordIdleThenBusy();
      const own = await replay(`threshold_minutes=10&warning_seconds=0&${range}`, aliceKey);
      expect(own.status, own.text).toBe(200);
      expect(own.json.policies[0]).toMatchObject({ hibernations: 0, gpu_hours_saved: 0, regrets: [] });
      const named = await replay(`threshold_minutes=10&instance=7&${range}`, aliceKey);
      expect(named.status).toBe(404);
      expect(named.json).toMatchObject({ error: 'not_found', field: 'instance' });
      // The admin may name it.
      expect((await replay(`threshold_minutes=10&warning_seconds=0&instance=7&${range}`)).json.policies[0].hibernations).toBe(1);
    });

    it('answers 400 naming the field for bad thresholds, ranges and instance lists; 401 without a credential', async () => {
      await recordIdleThenBusy();
      for (const threshold of ['0', '-1', 'abc', '', '10,', '1e3', '10,0']) {
        const res = await replay(`threshold_minutes=${encodeURIComponent(threshold)}&${range}`);
        expect(res.status, `threshold_minutes=${threshold}: ${res.text}`).toBe(400);
        expect(res.json).toMatchObject({ error: 'invalid_request', field: 'threshold_minutes' });
      }
      const missing = await replay(range);
      expect(missing.status).toBe(400);
      expect(missing.json.field).toBe('threshold_minutes');

      const backwards = await replay(`threshold_minutes=10&from=${encodeURIComponent(iso(T0))}&to=${encodeURIComponent(iso(T0))}`);
      expect(backwards.status).toBe(400);
      expect(backwards.json.field).toBe('to');
      const beyondRetention = t.clock.now() - (t.config.historyDays * 24 + 1) * H;
      const old = await replay(`threshold_minutes=10&from=${encodeURIComponent(iso(beyondRetention))}`);
      expect(old.status).toBe(400);
      expect(old.json).toMatchObject({ error: 'invalid_request', field: 'from' });
      expect(old.json.message).toContain('DUMONT_HISTORY_DAYS');
      const notATime = await replay(`threshold_minutes=10&from=yesterday`);
      expect(notATime.json).toMatchObject({ error: 'invalid_request', field: 'from' });
      const badInstance = await replay(`threshold_minutes=10&instance=7,x`);
      expect(badInstance.json).toMatchObject({ error: 'invalid_request', field: 'instance' });
      const badPercent = await replay(`threshold_minutes=10&utilization_percent=150`);
      expect(badPercent.json).toMatchObject({ error: 'invalid_request', field: 'utilization_percent' });

      const anonymous = await replay(`threshold_minutes=10`, null);
      expect(anonymous.status).toBe(401);
    });

    it('reports beside the replay what the live policy did: its confirmed hibernation and, woken within the hour, its regret', async () => {
      // A live server whose own policy hibernates after 20 idle minutes, without warning.
      await start({ DUMONT_IDLE_THRESHOLD_MINUTES: '20', DUMONT_HIBERNATION_WARNING_SECONDS: '0' });
      const res = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 8, hostname: 'gpu-8', price_per_hour: PRICE } });
      const token = res.json.agent_token as string;
      let command: { id: string; type: string } | undefined;
      for (let at = T0; !command; at += 30 * S) {
        expect(at).toBeLessThan(T0 + 25 * MIN);
        t.clock.set(at);
        command = (await t.beat(token, { instance_id: 8, gpus: gpus(0), process_count: 0 })).json.commands[0];
      }
      expect(command.type).toBe('hibernate');
      t.clock.advance(30 * S);
      const confirmed = await t.beat(token, { instance_id: 8, gpus: gpus(0), process_count: 0, command_results: [{ id: command.id, status: 'succeeded' }] });
      expect(confirmed.status).toBe(200);
      // The machine is off until its owner comes back at 40 minutes.
      const busyAgainAt = T0 + IDLE_MINUTES * MIN;
      t.clock.set(busyAgainAt);
      expect((await t.beat(token, { instance_id: 8, gpus: gpus(95), process_count: 3 })).status).toBe(200);
      await t.server.history.flush();
      t.clock.advance(MIN);

      const replayed = await replay(`threshold_minutes=10&warning_seconds=0&instance=8&${range}`);
      expect(replayed.status, replayed.text).toBe(200);
      const { actual } = replayed.json;
      expect(actual.hibernations).toBe(1);
      expect(actual.regrets).toHaveLength(1);
      const hibernatedAt = Date.parse(actual.regrets[0].hibernated_at);
      expect(hibernatedAt).toBeGreaterThanOrEqual(T0 + 20 * MIN);
      expect(hibernatedAt).toBeLessThanOrEqual(T0 + 21 * MIN);
      expect(actual.regrets[0]).toEqual({ instance_id: 8, hibernated_at: iso(hibernatedAt), busy_again_at: iso(busyAgainAt) });
      expect(actual.gpu_hours_saved).toBe(round4(((busyAgainAt - hibernatedAt) / H) * GPUS));
      expect(actual.usd_saved).toBe(round4(((busyAgainAt - hibernatedAt) / H) * PRICE));
      // The replayed 10-minute policy hibernated at the tenth idle minute and slept until the same busy beat.
      expect(replayed.json.policies[0].regrets).toEqual([{ instance_id: 8, hibernated_at: iso(T0 + 10 * MIN), busy_again_at: iso(busyAgainAt) }]);
    });

    it("takes the dashboard's session cookie, as the other reads do", async () => {
      await start();
      const login = await t.request('POST', '/api/v1/session', { token: null, body: { api_key: t.adminKey } });
      expect(login.status, login.text).toBe(200);
      const pair = login.headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`))!.split(';')[0]!;
      const res = await t.request('GET', '/api/v1/agent/replay?threshold_minutes=10', { token: null, headers: { cookie: pair } });
      expect(res.status, res.text).toBe(200);
      expect(res.json.policies).toHaveLength(1);
    });
  });
}
