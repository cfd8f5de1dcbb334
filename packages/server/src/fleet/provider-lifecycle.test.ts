import { performance } from 'node:perf_hooks';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { OutboxRow } from '../store/schema.js';
import { testBackends } from '../test-support/backends.js';
import { HttpRecorder, refusingUrl } from '../test-support/http-recorder.js';
import { TestServer } from '../test-support/test-server.js';

/**
 * The provider stop end to end, over real HTTP on both engines: agents beat a real server, the outbox
 * worker calls a real loopback server standing in for Vast.ai's API, and every outcome is read back
 * through the API (detail, events) and the outbox rows. The clock is the test's; the network is real.
 */

const S = 1000;
const MINUTE = 60 * S;
const HOUR = 60 * MINUTE;
const KEY = 'vast-key-lifecycle-5c1e';

const idle = (instance_id: number) => ({
  instance_id,
  gpu_metrics: { utilization_percent: 0, memory_used_mb: 10, memory_total_mb: 100 },
  process_count: 0,
});
/** The GPU at 90 %: someone is using the machine. */
const gpuBusy = (instance_id: number) => ({
  instance_id,
  gpu_metrics: { utilization_percent: 90, memory_used_mb: 90, memory_total_mb: 100 },
  process_count: 2,
});

/** The server's settings for these tests: hibernation 3 s after idle starts, no warning. */
const fast = { DUMONT_IDLE_THRESHOLD_MINUTES: '0.05', DUMONT_HIBERNATION_WARNING_SECONDS: '0' };
const vastEnv = (url: string, extra: Record<string, string> = {}) => ({
  ...fast,
  DUMONT_PROVIDER: 'vast',
  DUMONT_VAST_API_URL: url,
  DUMONT_VAST_API_KEY: KEY,
  ...extra,
});

interface EventSeen {
  type: string;
  reason: string;
  at: string;
  data: Record<string, any>;
}

type Backend = Awaited<ReturnType<typeof testBackends>>[number];
type Opened = Awaited<ReturnType<Backend['open']>>;

describe.each(await testBackends())('provider stop lifecycle over HTTP ($name)', (backend: Backend) => {
  const test = it.skipIf(backend.skipReason !== null);
  let t: TestServer | undefined;
  let db: Opened | undefined;
  let recorder: HttpRecorder;

  beforeEach(async () => {
    recorder = await HttpRecorder.start();
  });
  afterEach(async () => {
    await t?.close();
    await db?.dispose();
    await recorder.close();
    t = undefined;
    db = undefined;
  });

  /** A server over a fresh database; `t.restart()` reopens the same data. */
  const start = async (env: Record<string, string>): Promise<TestServer> => {
    const opened = await backend.open();
    db = opened;
    let first = true;
    t = await new TestServer(async () => (first ? ((first = false), opened.store) : opened.reopen()), env).start();
    return t;
  };

  const server = () => t!;

  /** Registers with the given provider fields; returns the agent token. */
  const register = async (instanceId: number, fields: Record<string, unknown> = {}): Promise<string> => {
    const res = await server().request('POST', '/api/v1/agent/instances', { body: { instance_id: instanceId, hostname: `gpu-${instanceId}`, ...fields } });
    expect(res.status, res.text).toBe(201);
    return res.json.agent_token;
  };

  const detail = async (id: number) => {
    const res = await server().request('GET', `/api/v1/agent/instances/${id}`);
    expect(res.status, res.text).toBe(200);
    return res.json;
  };

  /** Every event of one instance, oldest first. */
  const events = async (id: number): Promise<EventSeen[]> =>
    ((await server().request('GET', `/api/v1/agent/instances/${id}/events?limit=1000`)).json.events as EventSeen[]).reverse();
  const types = async (id: number) => (await events(id)).map((e) => e.type);
  const ofType = async (id: number, type: string) => (await events(id)).filter((e) => e.type === type);

  const stopRows = async (id: number): Promise<OutboxRow[]> =>
    (await server().server.store.listOutbox(id)).filter((row) => row.kind === 'stop');
  const onlyStopRow = async (id: number): Promise<OutboxRow> => {
    const rows = await stopRows(id);
    expect(rows).toHaveLength(1);
    return rows[0];
  };

  /** Idle beats a second apart until an answer carries the hibernate command; returns its id. */
  const beatUntilHibernate = async (token: string, id: number): Promise<string> => {
    for (let i = 0; i < 6; i++) {
      const answer = (await server().beat(token, idle(id))).json;
      server().clock.advance(S);
      const command = answer.commands.find((c: { type: string }) => c.type === 'hibernate');
      if (command) return command.id;
    }
    throw new Error(`instance ${id}: no hibernate command after 6 idle beats`);
  };

  /** The agent ran its hook and reports success: the beat that makes a provider stop due. */
  const confirm = async (token: string, id: number, command: string) => {
    const res = await server().beat(token, { ...idle(id), command_results: [{ id: command, status: 'succeeded', detail: 'checkpoint saved' }] });
    expect(res.status, res.text).toBe(200);
    return res;
  };

  /** Registers, goes idle, gets the command and confirms it. */
  const hibernateUpToProvider = async (id: number, fields: Record<string, unknown> = {}) => {
    const token = await register(id, fields);
    server().clock.advance(90 * S);
    const command = await beatUntilHibernate(token, id);
    server().clock.advance(S);
    await confirm(token, id, command);
    return { token, command };
  };

  /** The types in `expected` appear in `seen` in this order (others may come between). */
  const expectInOrder = (seen: string[], expected: string[]) => {
    let from = 0;
    for (const type of expected) {
      const at = seen.indexOf(type, from);
      expect(at, `${type} after position ${from} in ${seen.join(', ')}`).toBeGreaterThanOrEqual(0);
      from = at + 1;
    }
  };

  test("1: the stop is sent by the outbox after the agent's confirmation, never on the heartbeat path", async () => {
    const t = await start(vastEnv(recorder.url));
    const { token, command } = await hibernateUpToProvider(101, { provider_instance_id: 'C.9911' });

    // Confirmed: the machine is not stopped yet, and nothing has been sent while the beat was answered.
    expect(await detail(101)).toMatchObject({
      status: 'hibernating',
      provider: { name: 'vast', instance_id: 'C.9911', state: 'stopping', last_error: null },
    });
    expect(recorder.requests).toHaveLength(0);
    const queued = await onlyStopRow(101);
    expect(queued).toMatchObject({ target: 'vast', state: 'pending', attempts: 0 });
    expect(await types(101)).not.toContain('hibernated');

    // The agent's answer was lost; it re-sends the result while the stop is pending.
    t.clock.advance(S);
    await confirm(token, 101, command);
    expect(await detail(101)).toMatchObject({ status: 'hibernating', provider: { state: 'stopping' } });
    expect((await onlyStopRow(101)).id).toBe(queued.id);
    expect(await types(101)).not.toContain('hibernated');
    expect(recorder.requests).toHaveLength(0);

    expect(await t.drainOutbox()).toBe(1);
    expect(recorder.requests).toHaveLength(1);
    const [sent] = recorder.requests;
    expect(sent.method).toBe('PUT');
    expect(sent.path).toBe('/api/v0/instances/C.9911/');
    expect(sent.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(JSON.parse(sent.body)).toEqual({ state: 'stopped' });

    expect(await detail(101)).toMatchObject({ status: 'hibernated', provider: { name: 'vast', state: 'stopped', last_error: null } });
    expect(await onlyStopRow(101)).toMatchObject({ id: queued.id, state: 'done', attempts: 1 });
    const seen = await types(101);
    expectInOrder(seen, ['command_issued', 'provider_stop_requested', 'provider_stopped', 'hibernated']);
    expect(seen.filter((type) => type === 'hibernated')).toHaveLength(1);
    expect(seen.filter((type) => type === 'provider_stop_requested')).toHaveLength(1);

    // Nothing is left to send, even much later.
    t.clock.advance(HOUR);
    expect(await t.drainOutbox()).toBe(0);
    expect(recorder.requests).toHaveLength(1);
  });

  test('2: 500 then 429 (Retry-After: 120) then 200: backoff, Retry-After honoured, exactly three requests', async () => {
    const t = await start(vastEnv(recorder.url));
    recorder
      .replyOnce({ status: 500, body: 'upstream exploded' })
      .replyOnce({ status: 429, headers: { 'retry-after': '120' }, body: 'slow down' });
    await hibernateUpToProvider(201);

    expect(await t.drainOutbox()).toBe(1);
    expect(recorder.requests).toHaveLength(1);
    expect(await detail(201)).toMatchObject({ status: 'hibernating', provider: { state: 'stopping' } });
    expect((await detail(201)).provider.last_error).toMatch(/500/);
    const [firstFailure] = await ofType(201, 'provider_stop_failed');
    expect(firstFailure.data).toMatchObject({ final: false, attempt: 1 });
    expect(firstFailure.data.message).toMatch(/500/);

    // The first retry comes within seconds, and not before it is due.
    const afterFirst = await onlyStopRow(201);
    expect(afterFirst).toMatchObject({ state: 'pending', attempts: 1 });
    const firstWait = afterFirst.due_at - t.clock.now();
    expect(firstWait).toBeGreaterThan(0);
    expect(firstWait).toBeLessThanOrEqual(2 * S);
    t.clock.advance(firstWait - 1);
    expect(await t.drainOutbox()).toBe(0);
    expect(recorder.requests).toHaveLength(1);
    t.clock.advance(1);
    expect(await t.drainOutbox()).toBe(1);
    expect(recorder.requests).toHaveLength(2);

    // The 429 asked for 120 s: not a millisecond less.
    expect(await detail(201)).toMatchObject({ status: 'hibernating', provider: { state: 'stopping' } });
    expect((await detail(201)).provider.last_error).toMatch(/429/);
    const afterSecond = await onlyStopRow(201);
    expect(afterSecond.due_at - t.clock.now()).toBe(120 * S);
    t.clock.advance(60 * S);
    expect(await t.drainOutbox()).toBe(0);
    t.clock.advance(60 * S - 1);
    expect(await t.drainOutbox()).toBe(0);
    expect(recorder.requests).toHaveLength(2);
    t.clock.advance(1);
    expect(await t.drainOutbox()).toBe(1);
    expect(recorder.requests).toHaveLength(3);

    expect(await detail(201)).toMatchObject({ status: 'hibernated', provider: { state: 'stopped' } });
    expect(await onlyStopRow(201)).toMatchObject({ state: 'done', attempts: 3 });
    const failures = await ofType(201, 'provider_stop_failed');
    expect(failures.map((e) => e.data.final)).toEqual([false, false]);
    expect(failures[1].data.message).toMatch(/429/);
    const seen = await types(201);
    expect(seen.filter((type) => type === 'provider_stop_requested')).toHaveLength(3);
    expectInOrder(seen, ['provider_stop_requested', 'provider_stop_failed', 'provider_stop_requested', 'provider_stop_failed', 'provider_stop_requested', 'provider_stopped', 'hibernated']);

    t.clock.advance(24 * HOUR);
    expect(await t.drainOutbox()).toBe(0);
    expect(recorder.requests).toHaveLength(3);
  });

  test('3: a refusal (401, or 200 with success:false) fails at once: one request, back under watch, never retried', async () => {
    const t = await start(vastEnv(recorder.url));
    recorder.reply((request) =>
      request.path === '/api/v0/instances/301/'
        ? { status: 401, headers: { 'content-type': 'application/json' }, body: '{"error":"invalid api key"}' }
        : { status: 200, headers: { 'content-type': 'application/json' }, body: '{"success": false, "msg": "no such instance"}' },
    );
    const first = await hibernateUpToProvider(301);
    await hibernateUpToProvider(302);

    expect(await t.drainOutbox()).toBe(2);
    expect(recorder.requests.map((r) => r.path).sort()).toEqual(['/api/v0/instances/301/', '/api/v0/instances/302/']);

    for (const [id, said] of [
      [301, /401/],
      [302, /no such instance/],
    ] as const) {
      const view = await detail(id);
      expect(view).toMatchObject({ status: 'active', provider: { name: 'vast', state: 'stop_failed' } });
      expect(view.provider.last_error).toMatch(said);
      expect(await onlyStopRow(id)).toMatchObject({ state: 'failed', attempts: 1 });
      const failures = await ofType(id, 'provider_stop_failed');
      expect(failures).toHaveLength(1);
      expect(failures[0].data).toMatchObject({ final: true, action: 'stop' });
      expect(failures[0].data.message).toMatch(said);
      const seen = await types(id);
      expectInOrder(seen, ['provider_stop_requested', 'provider_stop_failed', 'hibernation_failed']);
      expect(seen).not.toContain('hibernated');
    }

    // Nothing more is ever sent for these stops.
    t.clock.advance(24 * HOUR);
    expect(await t.drainOutbox()).toBe(0);
    expect(recorder.requests).toHaveLength(2);

    // Back under watch: a new idle streak leads to a new hibernate command.
    const again = await beatUntilHibernate(first.token, 301);
    expect(again).not.toBe(first.command);
    expect((await detail(301)).status).toBe('hibernating');
  });

  test('4: gives up after DUMONT_PROVIDER_RETRY_HOURS, with a backoff that starts within seconds and never exceeds 10 min', async () => {
    const t = await start(vastEnv(recorder.url, { DUMONT_PROVIDER_RETRY_HOURS: '1' }));
    recorder.reply({ status: 503, body: 'maintenance' });
    await hibernateUpToProvider(401);
    const created = (await onlyStopRow(401)).created_at;

    // Time passes in steps (a second at first, then half a minute), draining after each, as the worker would.
    for (let step = 0; step < 1000 && (await onlyStopRow(401)).state === 'pending'; step++) {
      await t.drainOutbox();
      t.clock.advance(t.clock.now() - created < 20 * S ? S : 30 * S);
    }
    const row = await onlyStopRow(401);
    expect(row.state).toBe('failed');
    expect(row.last_error).toMatch(/503/);
    expect(recorder.requests).toHaveLength(row.attempts);

    const attempts = (await ofType(401, 'provider_stop_requested')).map((e) => Date.parse(e.at));
    expect(attempts).toHaveLength(row.attempts);
    expect(attempts[0]).toBe(created);
    const gaps = attempts.slice(1).map((at, i) => at - attempts[i]);
    expect(gaps[0]).toBeLessThanOrEqual(2 * S);
    for (const gap of gaps) expect(gap).toBeLessThanOrEqual(10 * MINUTE);
    // The backoff grows: an hour of retries is not a request every step.
    expect(row.attempts).toBeGreaterThan(5);
    expect(row.attempts).toBeLessThan(40);
    // It stopped at the first attempt past the window, not before.
    expect(attempts.at(-1)!).toBeGreaterThanOrEqual(created + HOUR);
    expect(attempts.at(-2)!).toBeLessThan(created + HOUR);

    const failures = await ofType(401, 'provider_stop_failed');
    expect(failures).toHaveLength(row.attempts);
    expect(failures.slice(0, -1).every((e) => e.data.final === false)).toBe(true);
    const last = failures.at(-1)!;
    expect(last.data).toMatchObject({ final: true, action: 'stop' });
    expect(last.data.message).toMatch(/503/);
    expect(last.reason).toMatch(/gave up/);
    const view = await detail(401);
    expect(view).toMatchObject({ status: 'active', provider: { state: 'stop_failed' } });
    expect(view.provider.last_error).toMatch(/503/);
    expect(await types(401)).toContain('hibernation_failed');
    expect(await types(401)).not.toContain('hibernated');

    const sent = recorder.requests.length;
    t.clock.advance(24 * HOUR);
    expect(await t.drainOutbox()).toBe(0);
    expect(recorder.requests).toHaveLength(sent);
  });

  test('5: activity while the stop is pending withdraws it (GPU busy or fresh last_activity); an idle beat keeps it', async () => {
    const t = await start(vastEnv(await refusingUrl()));
    const a = await hibernateUpToProvider(501);
    const b = await hibernateUpToProvider(502);

    // The provider refuses the connection: both stops stay pending, to be retried.
    expect(await t.drainOutbox()).toBe(2);
    for (const id of [501, 502]) {
      expect(await detail(id)).toMatchObject({ status: 'hibernating', provider: { state: 'stopping' } });
      expect(await onlyStopRow(id)).toMatchObject({ state: 'pending', attempts: 1 });
      expect((await ofType(id, 'provider_stop_failed'))[0].data.final).toBe(false);
    }

    // An idle beat while stopping: nothing changes.
    t.clock.advance(S);
    await t.beat(a.token, idle(501));
    await t.beat(b.token, idle(502));
    for (const id of [501, 502]) {
      expect(await detail(id)).toMatchObject({ status: 'hibernating', provider: { state: 'stopping' } });
      expect((await onlyStopRow(id)).state).toBe('pending');
      expect(await types(id)).not.toContain('hibernation_cancelled');
    }

    // Someone uses the machines again.
    t.clock.advance(S);
    const busyA = await t.beat(a.token, gpuBusy(501));
    const busyB = await t.beat(b.token, { ...idle(502), active_users: 1, last_activity: new Date(t.clock.now()).toISOString() });
    expect([busyA.status, busyB.status]).toEqual([200, 200]);
    for (const id of [501, 502]) {
      expect(await detail(id)).toMatchObject({ status: 'active', provider: { state: null } });
      const row = await onlyStopRow(id);
      expect(row.state).toBe('cancelled');
      expect(row.attempts).toBe(1);
      expect(await types(id)).toContain('hibernation_cancelled');
    }

    // Later drains send nothing, and nothing ever becomes hibernated.
    for (const advance of [2 * S, 10 * MINUTE, 24 * HOUR]) {
      t.clock.advance(advance);
      expect(await t.drainOutbox()).toBe(0);
    }
    for (const id of [501, 502]) {
      const seen = await types(id);
      expect(seen.filter((type) => type === 'provider_stop_requested')).toHaveLength(1);
      expect(seen).not.toContain('hibernated');
      expect((await detail(id)).status).toBe('active');
    }
  });

  test('6: a stop confirmed before a restart is sent exactly once after it', async () => {
    const t = await start(vastEnv(recorder.url));
    await hibernateUpToProvider(601);
    const before = await onlyStopRow(601);

    await t.restart();
    expect(recorder.requests).toHaveLength(0);
    expect(await detail(601)).toMatchObject({ status: 'hibernating', provider: { state: 'stopping' } });
    expect((await onlyStopRow(601)).id).toBe(before.id);

    expect(await t.drainOutbox()).toBe(1);
    expect(recorder.requests).toHaveLength(1);
    expect(recorder.requests[0].path).toBe('/api/v0/instances/601/');
    expect(await detail(601)).toMatchObject({ status: 'hibernated', provider: { state: 'stopped' } });
    t.clock.advance(HOUR);
    expect(await t.drainOutbox()).toBe(0);
    expect(recorder.requests).toHaveLength(1);
    expect((await types(601)).filter((type) => type === 'hibernated')).toHaveLength(1);
  });

  test('7: a hanging provider never slows heartbeats; the hang becomes a retryable failure', async () => {
    const t = await start(vastEnv(recorder.url, { DUMONT_PROVIDER_TIMEOUT_SECONDS: '1' }));
    recorder.reply({ hang: true });
    await hibernateUpToProvider(701);
    const b = await hibernateUpToProvider(702);
    const others = [703, 704, 705, 706];
    const tokens = new Map<number, string>();
    for (const id of others) {
      tokens.set(id, await register(id));
      await t.beat(tokens.get(id)!, gpuBusy(id));
    }

    let finished = false;
    const draining = t.drainOutbox().finally(() => {
      finished = true;
    });
    await recorder.waitFor(2);
    for (const id of others) {
      const began = performance.now();
      const res = await t.beat(tokens.get(id)!, id % 2 === 0 ? idle(id) : gpuBusy(id));
      const took = performance.now() - began;
      expect(res.status).toBe(200);
      expect(took, `heartbeat of ${id} took ${took.toFixed(0)} ms`).toBeLessThan(500);
      expect(finished).toBe(false);
    }
    // 702 is used again while its stop is on the wire: the stop cannot be withdrawn, only flagged.
    const busy = await t.beat(b.token, gpuBusy(702));
    expect(busy.status).toBe(200);
    expect(finished).toBe(false);
    expect((await detail(702)).status).toBe('active');
    expect((await ofType(702, 'hibernation_cancelled')).some((e) => e.data.stop_in_flight === true)).toBe(true);

    expect(await draining).toBe(2);
    expect(recorder.requests).toHaveLength(2);

    // 701: a retryable failure, still stopping.
    const view = await detail(701);
    expect(view).toMatchObject({ status: 'hibernating', provider: { state: 'stopping' } });
    expect(view.provider.last_error).toContain('no answer within 1 s');
    const row = await onlyStopRow(701);
    expect(row).toMatchObject({ state: 'pending', attempts: 1 });
    expect(row.last_error).toContain('no answer within 1 s');
    const [failure] = await ofType(701, 'provider_stop_failed');
    expect(failure.data).toMatchObject({ final: false });
    expect(failure.data.message).toContain('no answer within 1 s');

    // 702: its stop failed while flagged, so it is not retried.
    expect(await onlyStopRow(702)).toMatchObject({ state: 'cancelled', attempts: 1 });
    expect((await ofType(702, 'provider_stop_failed'))[0].data.final).toBe(false);

    // The provider answers again: only 701's stop is retried, and it hibernates.
    recorder.reply({ status: 200, headers: { 'content-type': 'application/json' }, body: '{"success": true}' });
    t.clock.advance(row.due_at - t.clock.now());
    expect(await t.drainOutbox()).toBe(1);
    expect(recorder.requests.slice(0, 2).map((r) => r.path).sort()).toEqual(['/api/v0/instances/701/', '/api/v0/instances/702/']);
    expect(recorder.requests.slice(2).map((r) => r.path)).toEqual(['/api/v0/instances/701/']);
    expect(await detail(701)).toMatchObject({ status: 'hibernated', provider: { state: 'stopped' } });
    expect((await detail(702)).status).toBe('active');
    expect(await types(702)).not.toContain('hibernated');
  });

  test("8: provider none (the default) hibernates on the agent's confirmation and queues no stop", async () => {
    const t = await start(fast);
    await hibernateUpToProvider(801);
    expect(await detail(801)).toMatchObject({ status: 'hibernated', provider: { name: 'none', instance_id: '801', state: null } });
    expect(await stopRows(801)).toEqual([]);
    expect(await t.drainOutbox()).toBe(0);
    const seen = await types(801);
    expect(seen).toContain('hibernated');
    expect(seen).not.toContain('provider_stop_requested');
    expect(recorder.requests).toHaveLength(0);
  });

  test('9: an instance naming its own provider is stopped through it; its neighbour without one is not', async () => {
    // The server's default is none; Vast.ai is configured for the instances that ask for it.
    const t = await start({ ...fast, DUMONT_VAST_API_URL: recorder.url, DUMONT_VAST_API_KEY: KEY });
    const token = await register(901);
    const patched = await t.request('PATCH', '/api/v1/agent/instances/901', { body: { provider: 'vast', provider_instance_id: 'abc-1' } });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.json.provider).toMatchObject({ name: 'vast', instance_id: 'abc-1' });
    t.clock.advance(90 * S);
    const command = await beatUntilHibernate(token, 901);
    t.clock.advance(S);
    await confirm(token, 901, command);
    await hibernateUpToProvider(902);

    expect(await detail(902)).toMatchObject({ status: 'hibernated', provider: { name: 'none', state: null } });
    expect(await stopRows(902)).toEqual([]);
    expect(await detail(901)).toMatchObject({ status: 'hibernating', provider: { name: 'vast', instance_id: 'abc-1', state: 'stopping' } });
    expect(recorder.requests).toHaveLength(0);

    expect(await t.drainOutbox()).toBe(1);
    expect(recorder.requests).toHaveLength(1);
    expect(recorder.requests[0]).toMatchObject({ method: 'PUT', path: '/api/v0/instances/abc-1/' });
    expect(recorder.requests[0].headers.authorization).toBe(`Bearer ${KEY}`);
    expect(JSON.parse(recorder.requests[0].body)).toEqual({ state: 'stopped' });
    expect(await detail(901)).toMatchObject({ status: 'hibernated', provider: { state: 'stopped' } });
    expect(await types(902)).not.toContain('provider_stop_requested');
  });
});
