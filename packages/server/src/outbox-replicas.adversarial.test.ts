import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { TEST_DATABASE_URL, testBackends } from './test-support/backends.js';
import { recordFigure } from './test-support/reliability.js';
import { startServerProcess, type ServerProcess } from './test-support/server-process.js';

/**
 * The provider outbox across real server processes on one PostgreSQL: several replicas poll the same
 * outbox table, and one of them dies with SIGKILL while its provider calls hang. Every machine must be
 * stopped exactly once when the provider answers, and nothing a dead process held or left in backoff
 * may be lost.
 *
 * The provider is a loopback HTTP server speaking Vast.ai's API (`PUT /api/v0/instances/{id}/`),
 * written here rather than taken from test-support/http-recorder.ts because these tests need what the
 * recorder does not give: answers after a random delay (so calls from three processes overlap) and
 * the moment each request's connection ended (to see whether two sends of one stop were open at once).
 */

const postgres = (await testBackends()).find((b) => b.name === 'postgres')!;

/**
 * Slack for times the stub's event loop saw: a close and the next request are seen in order by the
 * same process (a little slack); a request's arrival against its sender's own timer is seen across
 * processes on a loaded 2-core box (more).
 */
const SLACK_MS = 100;
const TIMER_SLACK_MS = 250;

// ---------------------------------------------------------------------------------------------
// A fake Vast.ai API

type StubMode = { kind: 'ok' } | { kind: 'hang' } | { kind: 'refuse'; retryAfterSeconds: number };

interface StubRequest {
  method: string;
  path: string;
  body: string;
  authorization: string | undefined;
  /** When the whole request had arrived. */
  at: number;
  /** The status it was answered with; null while unanswered (hung, or dropped by the caller). */
  status: number | null;
  /** When the exchange ended: the answer was written, or the caller closed the connection. */
  closedAt: number | null;
}

class VastStub {
  readonly requests: StubRequest[] = [];
  mode: StubMode = { kind: 'ok' };
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(): Promise<VastStub> {
    const server = createServer();
    const stub = new VastStub(server);
    server.on('connection', (socket) => {
      stub.sockets.add(socket);
      socket.on('close', () => stub.sockets.delete(socket));
    });
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const record: StubRequest = {
          method: req.method ?? '',
          path: req.url ?? '',
          body: Buffer.concat(chunks).toString('utf8'),
          authorization: req.headers.authorization,
          at: Date.now(),
          status: null,
          closedAt: null,
        };
        stub.requests.push(record);
        res.on('close', () => (record.closedAt ??= Date.now()));
        const mode = stub.mode;
        if (mode.kind === 'hang') return; // until the caller gives up (its timeout) or dies
        const answer = (status: number, headers: Record<string, string>, body: string) => {
          if (res.destroyed) return;
          record.status = status;
          record.closedAt = Date.now();
          res.writeHead(status, headers).end(body);
        };
        if (mode.kind === 'refuse') {
          answer(429, { 'retry-after': String(mode.retryAfterSeconds), 'content-type': 'application/json' }, '{"success": false, "msg": "rate limited"}');
          return;
        }
        // A few ms up to ~50 ms, like a real API: the calls of three pollers overlap.
        setTimeout(() => answer(200, { 'content-type': 'application/json' }, '{"success": true}'), 2 + Math.floor(Math.random() * 48));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return stub;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  byPath(): Map<string, StubRequest[]> {
    const map = new Map<string, StubRequest[]>();
    for (const r of this.requests) map.set(r.path, [...(map.get(r.path) ?? []), r]);
    for (const list of map.values()) list.sort((a, b) => a.at - b.at);
    return map;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const vastPath = (instanceId: number) => `/api/v0/instances/v-${instanceId}/`;

// ---------------------------------------------------------------------------------------------
// Replicas on one schema

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | null | undefined | false>, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

class Cluster {
  readonly schema = `dumont_outbox_${randomBytes(4).toString('hex')}`;
  readonly replicas: ServerProcess[] = [];
  readonly adminKey = `dmk_test_${randomBytes(12).toString('hex')}`;
  readonly env: Record<string, string>;

  constructor(
    readonly client: pg.Client,
    stub: VastStub,
    providerTimeoutSeconds: number,
  ) {
    const url = new URL(TEST_DATABASE_URL);
    url.searchParams.set('options', `-c search_path=${this.schema}`);
    this.env = {
      DUMONT_DATABASE_URL: url.toString(),
      DUMONT_ADMIN_KEY: this.adminKey,
      DUMONT_PROVIDER: 'vast',
      DUMONT_VAST_API_URL: stub.url,
      DUMONT_VAST_API_KEY: 'test',
      DUMONT_PROVIDER_TIMEOUT_SECONDS: String(providerTimeoutSeconds),
      DUMONT_OUTBOX_POLL_MS: '50',
      // Idle for 0.3 s, no warning: the second idle beat carries the hibernate command.
      DUMONT_IDLE_THRESHOLD_MINUTES: '0.005',
      DUMONT_HIBERNATION_WARNING_SECONDS: '0',
      DUMONT_HEARTBEAT_INTERVAL_SECONDS: '1',
      // The sweeper waits this long after a start: only beats and the outbox move instances here.
      DUMONT_OFFLINE_AFTER_SECONDS: '60',
      DUMONT_SWEEP_INTERVAL_MS: '100',
    };
  }

  async create(replicas: number): Promise<this> {
    await this.client.query(`create schema "${this.schema}"`);
    // The first start migrates the schema; the others (whose migrations then find nothing to do) start together.
    await this.startReplica();
    await Promise.all(Array.from({ length: replicas - 1 }, () => this.startReplica()));
    return this;
  }

  async startReplica(): Promise<ServerProcess> {
    const replica = await startServerProcess({ env: this.env });
    this.replicas.push(replica);
    return replica;
  }

  /** kill -9; resolves once the process is gone. */
  async kill(replica: ServerProcess): Promise<number> {
    const exited = new Promise((resolve) => replica.child.once('exit', resolve));
    replica.child.kill('SIGKILL');
    await exited;
    return Date.now();
  }

  alive(): ServerProcess[] {
    return this.replicas.filter((r) => r.child.exitCode === null && r.child.signalCode === null);
  }

  async dispose(): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.stop()));
    await this.client.query(`drop schema if exists "${this.schema}" cascade`);
  }

  async query<R = any>(sqlText: string, params: unknown[] = []): Promise<R[]> {
    return (await this.client.query(sqlText.replaceAll('$S', `"${this.schema}"`), params)).rows as R[];
  }

  /** The outbox worker id of a process: `${hostname}:${pid}:…` (outbox-worker.ts). */
  static workerOf(replica: ServerProcess): string {
    return `:${replica.child.pid}:`;
  }

  async counts(via: ServerProcess): Promise<Record<string, number>> {
    const res = await fetch(`${via.url}/api/v1/agent/instances?limit=1`, { headers: { authorization: `Bearer ${this.adminKey}` } });
    expect(res.status).toBe(200);
    return (await res.json()) as Record<string, number>;
  }

  async events(via: ServerProcess, instanceId: number): Promise<{ type: string; data: Record<string, unknown> }[]> {
    const res = await fetch(`${via.url}/api/v1/agent/instances/${instanceId}/events?limit=1000`, { headers: { authorization: `Bearer ${this.adminKey}` } });
    expect(res.status).toBe(200);
    return ((await res.json()) as { events: { type: string; data: Record<string, unknown> }[] }).events;
  }
}

// ---------------------------------------------------------------------------------------------
// Agents: plain fetch loops, as in replicas.test.ts

async function post(replica: ServerProcess, path: string, token: string, body: unknown) {
  const res = await fetch(`${replica.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  return { status: res.status, json: (await res.json()) as any };
}

async function pool<T>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

interface Agent {
  id: number;
  token: string;
  lastTs: number;
  commandId?: string;
}

async function register(cluster: Cluster, ids: number[]): Promise<Agent[]> {
  const agents: Agent[] = ids.map((id) => ({ id, token: '', lastTs: 0 }));
  await pool(agents, 16, async (agent, i) => {
    const replicas = cluster.alive();
    const res = await post(replicas[i % replicas.length]!, '/api/v1/agent/instances', cluster.adminKey, {
      instance_id: agent.id,
      hostname: `gpu-${agent.id}`,
      provider_instance_id: `v-${agent.id}`,
    });
    expect(res.status).toBe(201);
    agent.token = res.json.agent_token;
  });
  return agents;
}

/**
 * Each agent beats idle, spread across the live replicas, until an answer carries its hibernate
 * command; then it reports `succeeded` to two different replicas at the same moment (a duplicate
 * racing the original) and falls silent, as a machine about to be stopped does. Both answers must
 * be 200 without the command. Returns when every agent's result was accepted.
 */
async function hibernateAll(cluster: Cluster, agents: Agent[], failures: string[]): Promise<void> {
  let turn = 0;
  const replicaFor = () => {
    const live = cluster.alive();
    return live[turn++ % live.length]!;
  };
  const beat = (agent: Agent, replica: ServerProcess, withResult: boolean) => {
    agent.lastTs = Math.max(Date.now(), agent.lastTs + 1);
    const body: Record<string, unknown> = {
      instance_id: agent.id,
      hostname: `gpu-${agent.id}`,
      timestamp: new Date(agent.lastTs).toISOString(),
      gpu_metrics: { utilization_percent: 0, memory_used_mb: 0, memory_total_mb: 81559 },
      process_count: 0,
    };
    if (withResult) body.command_results = [{ id: agent.commandId, status: 'succeeded' }];
    return post(replica, '/api/v1/agent/status', agent.token, body);
  };
  const deadline = Date.now() + 30_000;
  await Promise.all(
    agents.map(async (agent) => {
      await sleep(Math.random() * 400);
      while (agent.commandId === undefined) {
        if (Date.now() > deadline) {
          failures.push(`${agent.id}: no hibernate command within 30 s`);
          return;
        }
        const started = Date.now();
        const res = await beat(agent, replicaFor(), false);
        if (res.status !== 200) {
          failures.push(`${agent.id}: beat ${res.status} ${JSON.stringify(res.json)}`);
          return;
        }
        const command = (res.json.commands as { id: string; type: string }[]).find((c) => c.type === 'hibernate');
        if (command) agent.commandId = command.id;
        else await sleep(Math.max(0, 400 - (Date.now() - started)));
      }
      const live = cluster.alive();
      const first = live[Math.floor(Math.random() * live.length)]!;
      const second = live[(live.indexOf(first) + 1) % live.length]!;
      const answers = await Promise.all([beat(agent, first, true), beat(agent, second, true)]);
      for (const res of answers) {
        if (res.status !== 200) failures.push(`${agent.id}: result ${res.status} ${JSON.stringify(res.json)}`);
        else if ((res.json.commands as { id: string }[]).some((c) => c.id === agent.commandId)) {
          failures.push(`${agent.id}: the hibernate command came back with its own result`);
        }
      }
    }),
  );
}

// ---------------------------------------------------------------------------------------------

describe.skipIf(postgres.skipReason !== null)('provider outbox across replicas on one PostgreSQL', () => {
  const cleanups: (() => Promise<void>)[] = [];
  const timings: Record<string, number> = {};

  const setup = async (replicas: number, providerTimeoutSeconds: number) => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    const stub = await VastStub.start();
    const cluster = new Cluster(client, stub, providerTimeoutSeconds);
    cleanups.push(async () => {
      await cluster.dispose().catch(() => {});
      await stub.close();
      await client.end();
    });
    await cluster.create(replicas);
    return { stub, cluster };
  };

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    console.log(`outbox-replicas timings (ms): ${JSON.stringify(timings)}`);
  });

  it('three replicas stop 200 machines exactly once: one PUT each, one provider_stopped each', async () => {
    const began = Date.now();
    const N = 200;
    const FIRST = 8_100_000;
    const { stub, cluster } = await setup(3, 5);
    timings.exactlyOnceStartup = Date.now() - began;

    const regBegan = Date.now();
    const agents = await register(
      cluster,
      Array.from({ length: N }, (_, i) => FIRST + i),
    );
    timings.exactlyOnceRegister = Date.now() - regBegan;
    const failures: string[] = [];
    const agentsBegan = Date.now();
    await hibernateAll(cluster, agents, failures);
    expect(failures).toEqual([]);
    timings.exactlyOnceAgents = Date.now() - agentsBegan;

    const [replica] = cluster.replicas;
    await waitUntil('all 200 hibernated', 30_000, async () => (await cluster.counts(replica!)).hibernated_count === N);
    timings.exactlyOnceTotal = Date.now() - began;

    // Exactly one stop request per machine, exactly as Vast.ai's CLI sends it, and nothing else.
    const byPath = stub.byPath();
    expect([...byPath.keys()].sort()).toEqual(agents.map((a) => vastPath(a.id)).sort());
    const repeated = [...byPath].filter(([, list]) => list.length !== 1).map(([path, list]) => `${path} × ${list.length}`);
    expect(repeated).toEqual([]);
    for (const request of stub.requests) {
      expect(request.method).toBe('PUT');
      expect(JSON.parse(request.body)).toEqual({ state: 'stopped' });
      expect(request.authorization).toBe('Bearer test');
      expect(request.status).toBe(200);
    }

    // The event log of every instance, through the API of each replica in turn.
    const eventProblems: string[] = [];
    await pool(agents, 12, async (agent, i) => {
      const types = (await cluster.events(cluster.replicas[i % 3]!, agent.id)).map((e) => e.type);
      const count = (type: string) => types.filter((t) => t === type).length;
      const got = {
        provider_stop_requested: count('provider_stop_requested'),
        provider_stopped: count('provider_stopped'),
        provider_stop_failed: count('provider_stop_failed'),
        hibernated: count('hibernated'),
        command_succeeded: count('command_succeeded'),
      };
      const want = { provider_stop_requested: 1, provider_stopped: 1, provider_stop_failed: 0, hibernated: 1, command_succeeded: 1 };
      if (JSON.stringify(got) !== JSON.stringify(want)) eventProblems.push(`${agent.id}: ${JSON.stringify(got)}`);
    });
    expect(eventProblems).toEqual([]);
    const stoppedEvents = await cluster.query(`select count(*)::int as n, count(distinct instance_id)::int as d from $S.events where type = 'provider_stopped'`);
    expect(stoppedEvents[0]).toEqual({ n: N, d: N });

    // One outbox row per instance (the duplicate results queued nothing), each sent once; the work was
    // really shared, or "exactly once" would prove nothing about concurrent pollers.
    const rows = await cluster.query<{ state: string; attempts: number; n: number }>(
      `select state, attempts, count(*)::int as n from $S.outbox group by state, attempts`,
    );
    expect(rows).toEqual([{ state: 'done', attempts: 1, n: N }]);
    const perInstance = await cluster.query(`select instance_id from $S.outbox group by instance_id having count(*) <> 1`);
    expect(perInstance).toEqual([]);
    const byWorker = await cluster.query<{ claimed_by: string; n: number }>(`select claimed_by, count(*)::int as n from $S.outbox group by claimed_by`);
    const shares = cluster.replicas.map((r) => byWorker.filter((w) => w.claimed_by.includes(Cluster.workerOf(r))).reduce((s, w) => s + w.n, 0));
    expect(shares.reduce((a, b) => a + b, 0)).toBe(N);
    expect(shares.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
    const SUITE = 'Provider stops across replicas (PostgreSQL)';
    recordFigure({ suite: SUITE, figure: 'instances hibernated through the provider by 3 replicas', value: N });
    recordFigure({ suite: SUITE, figure: 'stop requests per provider instance id (must be 1)', value: 1 });
    recordFigure({ suite: SUITE, figure: 'stops sent by each replica', value: shares.join(' / ') });

    const detail = await fetch(`${cluster.replicas[2]!.url}/api/v1/agent/instances/${FIRST}`, { headers: { authorization: `Bearer ${cluster.adminKey}` } });
    expect(((await detail.json()) as any).provider).toMatchObject({ name: 'vast', instance_id: `v-${FIRST}`, state: 'stopped', last_error: null });
  }, 90_000);

  it('kill -9 of a replica with stops on the wire loses none and never sends one twice at once', async () => {
    const began = Date.now();
    const N = 60;
    const FIRST = 8_200_000;
    const TIMEOUT_MS = 1000; // lease = 2 × 1 s + 5 s = 7 s
    const { stub, cluster } = await setup(3, TIMEOUT_MS / 1000);
    timings.killStartup = Date.now() - began;
    stub.mode = { kind: 'hang' };

    const agents = await register(
      cluster,
      Array.from({ length: N }, (_, i) => FIRST + i),
    );
    const failures: string[] = [];
    await hibernateAll(cluster, agents, failures);
    expect(failures).toEqual([]);

    // Every replica holds stops it is sending into the hanging provider; kill the one holding most.
    const liveClaims = () =>
      cluster.query<{ claimed_by: string; n: number }>(
        `select claimed_by, count(*)::int as n from $S.outbox where state = 'pending' and claimed_until > $1 group by claimed_by`,
        [Date.now()],
      );
    const holding = await waitUntil(
      'a live claim in every replica',
      10_000,
      async () => {
        const claims = await liveClaims();
        return cluster.replicas.every((r) => claims.some((c) => c.claimed_by.includes(Cluster.workerOf(r)))) ? claims : null;
      },
      20,
    );
    const most = holding.reduce((a, b) => (b.n > a.n ? b : a));
    const victim = cluster.replicas.find((r) => most.claimed_by.includes(Cluster.workerOf(r)))!;
    const killedAt = await cluster.kill(victim);
    const survivors = cluster.alive();
    expect(survivors).toHaveLength(2);
    // What the dead process still held: rows leased to it that nobody else may send until the lease ends.
    const orphaned = await cluster.query<{ instance_id: string; claimed_until: string; attempts: number }>(
      `select instance_id, claimed_until, attempts from $S.outbox where state = 'pending' and claimed_by like $1 and claimed_until > $2`,
      [`%${Cluster.workerOf(victim)}%`, killedAt],
    );
    expect(orphaned.length).toBeGreaterThan(0);
    const hangPhaseRequests = stub.requests.length;
    stub.mode = { kind: 'ok' };

    await waitUntil('all 60 hibernated through the survivors', 30_000, async () => (await cluster.counts(survivors[0]!)).hibernated_count === N, 100);
    timings.killRecovery = Date.now() - killedAt;
    timings.killTotal = Date.now() - began;
    const counts = await cluster.counts(survivors[1]!);
    expect(counts).toMatchObject({ hibernated_count: N, hibernating_count: 0, active_count: 0, idle_count: 0 });
    expect(await cluster.query(`select state, count(*)::int as n from $S.outbox group by state`)).toEqual([{ state: 'done', n: N }]);

    const byPath = stub.byPath();
    expect([...byPath.keys()].sort()).toEqual(agents.map((a) => vastPath(a.id)).sort());
    const problems: string[] = [];
    for (const [path, list] of byPath) {
      // Exactly one stop succeeded, and it was the last request: nothing followed a 200.
      const answered = list.filter((r) => r.status === 200);
      if (answered.length !== 1 || list[list.length - 1] !== answered[0]) problems.push(`${path}: ${answered.length} answered, last answered: ${list[list.length - 1]!.status}`);
      for (let i = 1; i < list.length; i++) {
        const [before, after] = [list[i - 1]!, list[i]!];
        // Never two sends of one stop open at once: each request came only after the previous one's
        // connection had ended (its timeout, or its process's death)…
        if (before.closedAt === null || after.at < before.closedAt - SLACK_MS) {
          problems.push(`${path}: request at +${after.at - began} ms while the one from +${before.at - began} ms was still open (closed +${(before.closedAt ?? NaN) - began})`);
        }
        // …and, as the previous one was never answered, not before its sender's timeout had run out.
        if (after.at - before.at < TIMEOUT_MS - TIMER_SLACK_MS) {
          problems.push(`${path}: requests ${after.at - before.at} ms apart, less than the ${TIMEOUT_MS} ms timeout`);
        }
      }
    }
    // The dead process's leases held: nobody sent those stops before the lease ran out, then a survivor did.
    for (const row of orphaned) {
      const list = byPath.get(vastPath(Number(row.instance_id)))!;
      const until = Number(row.claimed_until);
      const early = list.filter((r) => r.at > killedAt && r.at < until - SLACK_MS);
      if (early.length > 0) problems.push(`${row.instance_id}: sent ${until - early[0]!.at} ms before the dead replica's lease ended`);
      if (!list.some((r) => r.at >= until - SLACK_MS && r.status === 200)) problems.push(`${row.instance_id}: not stopped after the lease ended`);
    }
    expect(problems).toEqual([]);
    const resent = await cluster.query<{ instance_id: string; claimed_by: string; attempts: number }>(
      `select instance_id, claimed_by, attempts from $S.outbox where instance_id = any($1::bigint[])`,
      [orphaned.map((r) => r.instance_id)],
    );
    for (const row of resent) {
      expect(row.claimed_by).not.toContain(Cluster.workerOf(victim));
      expect(row.attempts).toBeGreaterThan(orphaned.find((o) => o.instance_id === row.instance_id)!.attempts);
    }
    const SUITE = 'Provider stops across replicas (PostgreSQL)';
    recordFigure({ suite: SUITE, figure: 'kill -9: stops on the wire in the killed replica, re-sent after its lease', value: orphaned.length });
    recordFigure({ suite: SUITE, figure: 'kill -9: requests in all (hung, then answered)', value: `${hangPhaseRequests} hung + ${stub.requests.length - hangPhaseRequests} after` });
    recordFigure({ suite: SUITE, figure: 'kill -9: stops lost or sent twice at once (must be 0)', value: 0 });
    recordFigure({ suite: SUITE, figure: 'kill -9: ms from the kill until every instance was hibernated', value: timings.killRecovery ?? 'n/a' });
  }, 90_000);

  it('stops waiting in backoff when the only replica is killed are sent by a restarted one, when due', async () => {
    const began = Date.now();
    const N = 20;
    const FIRST = 8_300_000;
    const RETRY_AFTER_S = 5;
    const { stub, cluster } = await setup(1, 1);
    timings.restartStartup = Date.now() - began;
    // The provider rate-limits (429) and asks to be called again in 5 s: every stop waits in backoff, unclaimed.
    stub.mode = { kind: 'refuse', retryAfterSeconds: RETRY_AFTER_S };

    const agents = await register(
      cluster,
      Array.from({ length: N }, (_, i) => FIRST + i),
    );
    const failures: string[] = [];
    await hibernateAll(cluster, agents, failures);
    expect(failures).toEqual([]);
    await waitUntil(
      'every stop refused once and parked for at least another second',
      15_000,
      async () => {
        const rows = await cluster.query<{ n: number }>(
          `select count(*)::int as n from $S.outbox where state = 'pending' and attempts >= 1 and claimed_by is null and due_at > $1`,
          [Date.now() + 1000],
        );
        return rows[0]!.n === N;
      },
      20,
    );
    const [only] = cluster.replicas;
    const killedAt = await cluster.kill(only!);
    const parked = await cluster.query<{ instance_id: string; due_at: string; attempts: number; claimed_by: string | null }>(
      `select instance_id, due_at, attempts, claimed_by from $S.outbox where state = 'pending'`,
    );
    expect(parked).toHaveLength(N);
    for (const row of parked) {
      expect(row.claimed_by).toBeNull();
      expect(Number(row.due_at)).toBeGreaterThan(killedAt);
    }
    const refusedBeforeKill = stub.requests.length;
    expect(stub.requests.every((r) => r.status === 429)).toBe(true);
    expect(cluster.alive()).toHaveLength(0); // nobody is left to send them

    stub.mode = { kind: 'ok' };
    const restarted = await cluster.startReplica();
    const restartedAt = Date.now();
    await waitUntil('all 20 hibernated by the restarted replica', 20_000, async () => (await cluster.counts(restarted)).hibernated_count === N, 100);
    timings.restartRecovery = Date.now() - restartedAt;
    timings.restartTotal = Date.now() - began;

    expect(await cluster.counts(restarted)).toMatchObject({ hibernated_count: N, hibernating_count: 0 });
    const sent = await cluster.query<{ instance_id: string; state: string; attempts: number; claimed_by: string }>(
      `select instance_id, state, attempts, claimed_by from $S.outbox`,
    );
    const byPath = stub.byPath();
    const problems: string[] = [];
    for (const row of parked) {
      const now = sent.find((s) => s.instance_id === row.instance_id)!;
      if (now.state !== 'done' || now.attempts !== row.attempts + 1 || !now.claimed_by.includes(Cluster.workerOf(restarted))) {
        problems.push(`${row.instance_id}: ${JSON.stringify(now)}`);
      }
      const list = byPath.get(vastPath(Number(row.instance_id)))!;
      const ok = list.filter((r) => r.status === 200);
      // Sent once, by the new process, and not before the backoff the dead one stored had run out.
      if (ok.length !== 1 || ok[0]!.at < Number(row.due_at)) problems.push(`${row.instance_id}: 200s at ${ok.map((r) => r.at - Number(row.due_at))} ms after due`);
      if (list.some((r) => r.at > killedAt && r.at < Number(row.due_at))) problems.push(`${row.instance_id}: sent before it was due`);
    }
    expect(problems).toEqual([]);
    const stoppedBy = await cluster.query(`select count(*)::int as n from $S.events where type = 'provider_stopped'`);
    expect(stoppedBy[0]).toEqual({ n: N });
    recordFigure({
      suite: 'Provider stops across replicas (PostgreSQL)',
      figure: 'backoff rows of a killed only replica sent by its restart, when due',
      value: N,
      note: `${refusedBeforeKill} refused requests before the kill; recovery ${timings.restartRecovery} ms after the restart`,
    });
  }, 60_000);
});
