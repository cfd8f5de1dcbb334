import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { TEST_DATABASE_URL, testBackends } from './test-support/backends.js';
import { recordFigure, scaled, SOAK } from './test-support/reliability.js';
import { startServerProcess, type ServerProcess } from './test-support/server-process.js';
import { Rng } from '../../simulator/src/prng.js';

/**
 * Crash safety: the real server process is killed with SIGKILL at a random moment while agents and
 * operators talk to it, restarted on the same database, and everything it acknowledged must still be
 * there.
 *
 * What a process kill can and cannot show. docs/OPERATIONS.md promises that "every request is answered
 * only after its transaction committed, so a crash of the server process loses nothing" — for every
 * request, plain metrics beats included, under both DUMONT_FSYNC=transitions and DUMONT_FSYNC=always;
 * on PostgreSQL a commit lives in PostgreSQL's own process, which our kill does not touch (its
 * `synchronous_commit=off` for plain beats only matters if PostgreSQL's machine fails). So this suite
 * holds every 2xx-answered beat to be present after the kill, under both durabilities. What the two
 * settings differ in — whether the WAL was fsync'd before the answer, so that a power cut cannot lose
 * the commit — is out of reach here: SIGKILL leaves the operating system's page cache intact, so a
 * commit that only reached the cache survives it just as a fsync'd one does. The suite shows that
 * nothing is answered before its commit and that the files recover cleanly; it cannot show that
 * anything reached the disk.
 */

const ROUNDS = scaled(5, 20);
const INSTANCES = 24;
const SUITE = 'Crash safety';
const SEED = Number(process.env.DUMONT_CRASH_SEED ?? randomBytes(4).readUInt32LE(0));
const ADMIN_KEY = `dmk_test_${randomBytes(16).toString('hex')}`;

const SERVER_ENV = {
  DUMONT_ADMIN_KEY: ADMIN_KEY,
  // A whole lifecycle (idle → scheduled → hibernating) in about a second, so each round sees some.
  DUMONT_IDLE_THRESHOLD_MINUTES: '0.01',
  DUMONT_HIBERNATION_WARNING_SECONDS: '0.5',
  DUMONT_HEARTBEAT_INTERVAL_SECONDS: '1',
  // Longer than the whole test: no instance goes offline while the server is down, so a restart's
  // silence never turns into a transition the ledger below would have to predict.
  DUMONT_OFFLINE_AFTER_SECONDS: '3600',
  DUMONT_SWEEP_INTERVAL_MS: '50',
  DUMONT_RATE_LIMIT_PER_MINUTE: '0',
};

type CommandType = 'hibernate' | 'snapshot' | 'update' | 'restart';

/** What one simulated agent (and the operators, about its instance) were told by the server. */
interface Agent {
  id: number;
  token: string;
  /** Operators post keep-alives only to these, so the others stay free to hibernate by policy. */
  keepAliveTarget: boolean;
  busyChance: number;
  busyFor: number;
  lastTimestamp: number;
  /** Beats put on the wire: an unanswered one may still have been applied. */
  beatsSent: number;
  /** Beats answered 200; each had a newer timestamp than the last, so each was applied. */
  beatsAcked: number;
  /** Results to report until a beat carrying them is answered; `attempts`: beats that carried it so far. */
  pendingResults: Map<string, { type: CommandType; attempts: number }>;
  /** Acknowledged results to repeat once ("a repeated result is harmless"). */
  resend: Map<string, CommandType>;
  resultAcked: Map<string, CommandType>;
  /** Commands that reached the agent in a 200 answer: their delivery was committed first. */
  delivered: Map<string, CommandType>;
  /** Commands an operator created (201). */
  created: Map<string, CommandType>;
  /** Acknowledged `succeeded` results of hibernate commands: each ended one hibernation. */
  hibernationsAcked: number;
  /** Keep-alives answered 200, by the `hibernation_postponed_until` they announced. */
  keepAlives: string[];
  /** The status the acknowledged answers imply, while nothing unacknowledged could have moved it. */
  expectStatus: 'hibernating' | 'hibernated' | null;
  /** A hibernated machine stays silent a while, then wakes with a beat. */
  offUntil: number;
}

interface Ledger {
  agents: Agent[];
  /** Commands that appeared in an answer after their result had been acknowledged. */
  redelivered: string[];
  /** Anything that must not happen while the server is up: a non-2xx beat, an unexpected status, a network error. */
  failures: string[];
  /** Requests that were on the wire at a kill and never answered. */
  unanswered: number;
}

interface Api {
  url: string;
}

async function call(api: Api, method: string, path: string, token: string, body?: unknown) {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

/** Resolves early when `stop` fires, so a stopped load never waits out a pause. */
function pause(ms: number, stop: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout;
  return Promise.race([new Promise<void>((r) => (timer = setTimeout(r, ms))), stop]).finally(() => clearTimeout(timer));
}

/**
 * Agents and operators against one server process until `stop()`. `crashing` is set just before the
 * kill: from then on a failed request is the crash's doing and only counts as unanswered.
 */
class Load {
  acked = 0;
  inFlight = 0;
  crashing = false;
  private stopped = false;
  private stopSignal!: () => void;
  readonly stopping = new Promise<void>((r) => (this.stopSignal = r));
  private readonly workers: Promise<void>[] = [];
  private waiters: { holds: () => boolean; resolve: () => void }[] = [];

  constructor(
    private readonly api: Api,
    private readonly ledger: Ledger,
    private readonly random: () => number,
    private readonly round: number,
  ) {}

  start(operators: number): this {
    for (const agent of this.ledger.agents) this.workers.push(this.agentLoop(agent));
    for (let i = 0; i < operators; i++) this.workers.push(this.operatorLoop());
    return this;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopSignal();
    await Promise.all(this.workers);
  }

  /** Resolves as soon as `holds()` is true: checked whenever a request starts or is answered. */
  async when(what: string, holds: () => boolean, timeoutMs = 30_000): Promise<void> {
    if (holds()) return;
    let timer: NodeJS.Timeout;
    await Promise.race([
      new Promise<void>((resolve) => this.waiters.push({ holds, resolve })),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out waiting for ${what}; load failures:\n${this.ledger.failures.slice(0, 10).join('\n')}`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
  }

  private notify(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.holds()) return true;
      w.resolve();
      return false;
    });
  }

  private get halted(): boolean {
    return this.stopped || this.crashing;
  }

  /** One request, with the crash accounted for: null when it was not answered. */
  private async request(method: string, path: string, token: string, body?: unknown) {
    this.inFlight += 1;
    this.notify();
    try {
      const res = await call(this.api, method, path, token, body);
      if (res.status >= 200 && res.status < 300) this.acked += 1;
      this.notify();
      return res;
    } catch (error) {
      if (this.crashing) this.ledger.unanswered += 1;
      else this.ledger.failures.push(`${method} ${path}: ${(error as Error).message} ${String((error as Error).cause ?? '')}`);
      return null;
    } finally {
      this.inFlight -= 1;
    }
  }

  private async agentLoop(agent: Agent): Promise<void> {
    while (!this.halted) {
      const now = Date.now();
      if (agent.offUntil > now) {
        await pause(agent.offUntil - now, this.stopping);
        continue;
      }
      await this.beat(agent);
      await pause(20 + this.random() * 40, this.stopping);
    }
  }

  private async beat(agent: Agent): Promise<void> {
    const holdsHibernate = [...agent.pendingResults.values()].some((r) => r.type === 'hibernate');
    // The beat that reports a hibernate result is idle: the hook ran and the machine is going down.
    // (A busy beat while `hibernating` may withdraw the command; that is another suite's subject.)
    if (holdsHibernate) agent.busyFor = 0;
    else if (agent.busyFor === 0 && this.random() < agent.busyChance) agent.busyFor = 1 + Math.floor(this.random() * 4);
    const busy = agent.busyFor > 0;
    if (busy) agent.busyFor -= 1;

    const carried = [...agent.pendingResults.entries()];
    const repeated = [...agent.resend.entries()];
    const results = [...carried, ...repeated].map(([id]) => ({ id, status: 'succeeded' as const, detail: `crash-safety round ${this.round}` }));
    // Strictly increasing per instance, so every acknowledged beat is also an applied one.
    agent.lastTimestamp = Math.max(Date.now(), agent.lastTimestamp + 1);
    const body = {
      instance_id: agent.id,
      hostname: `crash-${agent.id}`,
      timestamp: new Date(agent.lastTimestamp).toISOString(),
      gpu_metrics: busy
        ? { utilization_percent: 40 + Math.round(this.random() * 60), memory_used_mb: 30_000, memory_total_mb: 81_559, temperature_celsius: 70, power_watts: 300 }
        : { utilization_percent: 0, memory_used_mb: 500, memory_total_mb: 81_559, temperature_celsius: 35, power_watts: 60 },
      process_count: busy ? 1 + Math.floor(this.random() * 3) : 0,
      agent_version: 'crash-safety',
      ...(results.length > 0 ? { command_results: results } : {}),
    };

    agent.beatsSent += 1;
    // From the moment the beat is on the wire it may be applied, answered or not.
    agent.expectStatus = null;
    for (const [, pending] of carried) pending.attempts += 1;
    const res = await this.request('POST', '/api/v1/agent/status', agent.token, body);
    if (res === null) return;
    if (res.status !== 200) {
      this.ledger.failures.push(`beat of ${agent.id}: ${res.status} ${res.text}`);
      return;
    }
    agent.beatsAcked += 1;

    for (const [id] of repeated) agent.resend.delete(id);
    for (const [id, pending] of carried) {
      agent.pendingResults.delete(id);
      agent.resultAcked.set(id, pending.type);
      if (this.random() < 0.3) agent.resend.set(id, pending.type);
      if (pending.type !== 'hibernate') continue;
      agent.hibernationsAcked += 1;
      // Only when this very beat carried the result first is it known to be the beat that hibernated
      // the instance; after an unanswered try, that try may have done it and this beat woken it again.
      if (pending.attempts === 1) agent.expectStatus = 'hibernated';
      agent.offUntil = Date.now() + 100 + this.random() * 900;
    }
    for (const command of res.json.commands as { id: string; type: CommandType }[]) {
      if (agent.resultAcked.has(command.id)) {
        this.ledger.redelivered.push(`instance ${agent.id}: command ${command.id} (${command.type}) delivered again after its result was acknowledged`);
        continue;
      }
      agent.delivered.set(command.id, command.type);
      if (!agent.pendingResults.has(command.id)) agent.pendingResults.set(command.id, { type: command.type, attempts: 0 });
      if (command.type === 'hibernate') agent.expectStatus = 'hibernating';
    }
    this.notify();
  }

  private async operatorLoop(): Promise<void> {
    const agents = this.ledger.agents;
    const targets = agents.filter((a) => a.keepAliveTarget);
    while (!this.halted) {
      const roll = this.random();
      if (roll < 0.5) {
        const agent = targets[Math.floor(this.random() * targets.length)]!;
        const minutes = 1 + Math.floor(this.random() * 60);
        const res = await this.request('POST', `/api/v1/agent/instances/${agent.id}/keep-alive?minutes=${minutes}`, ADMIN_KEY);
        if (res?.status === 200) agent.keepAlives.push(res.json.hibernation_postponed_until);
        else if (res && res.status !== 409) this.ledger.failures.push(`keep-alive ${agent.id}: ${res.status} ${res.text}`);
      } else {
        const agent = agents[Math.floor(this.random() * agents.length)]!;
        const type: CommandType = roll < 0.6 ? 'hibernate' : (['snapshot', 'update', 'restart'] as const)[Math.floor(this.random() * 3)]!;
        const res = await this.request('POST', `/api/v1/agent/instances/${agent.id}/commands`, ADMIN_KEY, { type, args: { round: this.round } });
        if (res?.status === 201) agent.created.set(res.json.id, type);
        // 409: a hibernate command for an instance already hibernating or hibernated.
        else if (res && !(res.status === 409 && type === 'hibernate')) this.ledger.failures.push(`command ${type} for ${agent.id}: ${res.status} ${res.text}`);
      }
      await pause(30 + this.random() * 70, this.stopping);
    }
  }
}

async function killHard(server: ServerProcess): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) throw new Error(`the server had already exited:\n${server.output()}`);
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGKILL');
  await exited;
}

async function allEvents(api: Api, instanceId: number): Promise<{ type: string; reason: string; data: any }[]> {
  const events: { type: string; reason: string; data: any }[] = [];
  let cursor: string | null = null;
  do {
    const query: string = cursor ? `?limit=1000&cursor=${encodeURIComponent(cursor)}` : '?limit=1000';
    const res = await call(api, 'GET', `/api/v1/agent/instances/${instanceId}/events${query}`, ADMIN_KEY);
    if (res.status !== 200) throw new Error(`events of ${instanceId}: ${res.status} ${res.text}`);
    events.push(...res.json.events);
    cursor = res.json.next_cursor;
  } while (cursor);
  return events;
}

interface Verification {
  beatsChecked: number;
  transitionsChecked: number;
  lost: string[];
}

/** Everything the ledger says was acknowledged, read back from the restarted server. */
async function verify(api: Api, ledger: Ledger): Promise<Verification> {
  const lost: string[] = [];
  let beatsChecked = 0;
  let transitionsChecked = 0;
  const check = async (agent: Agent) => {
    const id = agent.id;
    const detail = await call(api, 'GET', `/api/v1/agent/instances/${id}`, ADMIN_KEY);
    if (detail.status !== 200) {
      lost.push(`instance ${id}: GET answered ${detail.status} ${detail.text}`);
      return;
    }
    beatsChecked += agent.beatsAcked;
    const count = detail.json.heartbeat_count as number;
    if (count < agent.beatsAcked) lost.push(`instance ${id}: heartbeat_count ${count} < ${agent.beatsAcked} acknowledged beats`);
    // The other bound: no beat counted twice, none invented (unanswered ones may or may not count).
    if (count > agent.beatsSent) lost.push(`instance ${id}: heartbeat_count ${count} > ${agent.beatsSent} beats ever sent`);
    if (agent.expectStatus !== null) {
      transitionsChecked += 1;
      if (detail.json.status !== agent.expectStatus) {
        lost.push(`instance ${id}: status ${detail.json.status}, but the last acknowledged answer left it ${agent.expectStatus}`);
      }
    }

    const listed = await call(api, 'GET', `/api/v1/agent/instances/${id}/commands`, ADMIN_KEY);
    if (listed.status !== 200) throw new Error(`commands of ${id}: ${listed.status} ${listed.text}`);
    const commands = new Map<string, { type: string; state: string; delivered_at: string | null }>(
      (listed.json.commands as { id: string; type: string; state: string; delivered_at: string | null }[]).map((c) => [c.id, c]),
    );
    const events = await allEvents(api, id);
    // The list holds the newest 100; an older command is found by its `command_issued` event.
    const listIsComplete = commands.size < 100;
    const issued = new Set(events.filter((e) => e.type === 'command_issued').map((e) => e.data?.command_id));

    transitionsChecked += 1;
    if (!events.some((e) => e.type === 'registered')) lost.push(`instance ${id}: no registered event`);

    const known = new Map<string, CommandType>([...agent.created, ...agent.delivered, ...agent.resultAcked]);
    for (const [commandId, type] of known) {
      const command = commands.get(commandId);
      if (!command) {
        transitionsChecked += 1;
        if (listIsComplete || !issued.has(commandId)) lost.push(`instance ${id}: acknowledged ${type} command ${commandId} is missing`);
        continue;
      }
      if (agent.created.has(commandId)) transitionsChecked += 1;
      if (command.type !== type) lost.push(`instance ${id}: command ${commandId} is a ${command.type}, was a ${type}`);
      if (agent.delivered.has(commandId)) {
        transitionsChecked += 1;
        if (command.delivered_at === null) lost.push(`instance ${id}: ${type} command ${commandId} reached the agent but is not delivered (${command.state})`);
      }
      if (agent.resultAcked.has(commandId)) {
        transitionsChecked += 1;
        if (command.state !== 'succeeded') lost.push(`instance ${id}: the succeeded result of ${type} command ${commandId} was acknowledged, state is ${command.state}`);
      }
    }

    transitionsChecked += agent.hibernationsAcked;
    const hibernated = events.filter((e) => e.type === 'hibernated').length;
    if (hibernated < agent.hibernationsAcked) {
      lost.push(`instance ${id}: ${hibernated} hibernated events for ${agent.hibernationsAcked} acknowledged hibernate results`);
    }

    const keepAliveEvents = events.filter((e) => e.type === 'keep_alive');
    for (const until of agent.keepAlives) {
      transitionsChecked += 1;
      const found = keepAliveEvents.some((e) => e.data?.postponed_until === until || e.reason.includes(until));
      if (!found) lost.push(`instance ${id}: keep-alive until ${until} was acknowledged, its keep_alive event is missing`);
    }
  };
  let next = 0;
  const agents = ledger.agents;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < agents.length) await check(agents[next++]!);
    }),
  );
  return { beatsChecked, transitionsChecked, lost };
}

/** Opened read-only exactly as the kill left it (WAL and all): the file itself must be sound. */
function sqliteIntegrity(file: string): { integrity: string; foreignKeyViolations: number } {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db.pragma('integrity_check') as { integrity_check: string }[];
    const violations = db.pragma('foreign_key_check') as unknown[];
    return { integrity: rows.map((r) => r.integrity_check).join('; '), foreignKeyViolations: violations.length };
  } finally {
    db.close();
  }
}

interface Backend {
  label: string;
  skipReason: string | null;
  /** A fresh database: the server env that names it, the SQLite file if any, and its removal. */
  open(): Promise<{ env: Record<string, string>; dataDir: string; sqliteFile: string | null; dispose(): Promise<void> }>;
}

const sqliteBackend = (fsync: 'transitions' | 'always'): Backend => ({
  label: `SQLite, DUMONT_FSYNC=${fsync}`,
  skipReason: null,
  async open() {
    const dataDir = mkdtempSync(join(tmpdir(), 'dumont-crash-'));
    const sqliteFile = join(dataDir, 'dumont.db');
    return {
      env: { DUMONT_DATABASE_URL: `sqlite:${sqliteFile}`, DUMONT_FSYNC: fsync },
      dataDir,
      sqliteFile,
      async dispose() {
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
});

const postgresSkip = (await testBackends()).find((b) => b.name === 'postgres')!.skipReason;

const postgresBackend: Backend = {
  label: 'PostgreSQL',
  skipReason: postgresSkip,
  async open() {
    const schema = `dumont_crash_${randomBytes(4).toString('hex')}`;
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    await client.query(`create schema "${schema}"`);
    const url = new URL(TEST_DATABASE_URL);
    url.searchParams.set('options', `-c search_path=${schema}`);
    const dataDir = mkdtempSync(join(tmpdir(), 'dumont-crash-'));
    return {
      env: { DUMONT_DATABASE_URL: url.toString() },
      dataDir,
      sqliteFile: null,
      async dispose() {
        await client.query(`drop schema if exists "${schema}" cascade`);
        await client.end();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
};

const BACKENDS = [sqliteBackend('transitions'), sqliteBackend('always'), postgresBackend];

describe('crash safety: kill -9 under load, restart on the same database', () => {
  BACKENDS.forEach((backend, backendIndex) => {
    it.skipIf(backend.skipReason !== null)(
      `${backend.label}: ${ROUNDS} kills; every acknowledged beat and transition survives, no acknowledged command comes back`,
      async () => {
        const seed = SEED + backendIndex;
        // Seeded (the simulator's generator): DUMONT_CRASH_SEED replays a failing run's choices, not its timing.
        const rng = new Rng(seed);
        const random = () => rng.next();
        const note = `${backend.label}, seed ${SEED} (DUMONT_CRASH_SEED), ${INSTANCES} instances${SOAK ? ', soak' : ''}`;
        const db = await backend.open();
        const env = { ...SERVER_ENV, ...db.env };
        // Every process started, so that whatever a failing run left running does not outlive it.
        const live: ServerProcess[] = [];
        const start = async () => {
          const server = await startServerProcess({ env, dataDir: db.dataDir });
          live.push(server);
          return server;
        };
        try {
          let server = await start();
          const ledger: Ledger = { agents: [], redelivered: [], failures: [], unanswered: 0 };
          for (let i = 0; i < INSTANCES; i++) {
            const id = 7_000_000 + i;
            const res = await call(server, 'POST', '/api/v1/agent/instances', ADMIN_KEY, { instance_id: id, hostname: `crash-${id}` });
            expect(res.status).toBe(201);
            const kind = i % 4;
            ledger.agents.push({
              id,
              token: res.json.agent_token,
              keepAliveTarget: kind === 0,
              busyChance: kind === 1 ? 0.3 : 0.03,
              busyFor: 0,
              lastTimestamp: 0,
              beatsSent: 0,
              beatsAcked: 0,
              pendingResults: new Map(),
              resend: new Map(),
              resultAcked: new Map(),
              delivered: new Map(),
              created: new Map(),
              hibernationsAcked: 0,
              keepAlives: [],
              expectStatus: null,
              offUntil: 0,
            });
          }

          const integrity: string[] = [];
          let foreignKeyViolations = 0;
          const inFlightAtKill: number[] = [];
          let verification: Verification = { beatsChecked: 0, transitionsChecked: 0, lost: [] };
          let lostTotal = 0;
          const lostSample: string[] = [];
          for (let round = 1; round <= ROUNDS; round++) {
            const load = new Load(server, ledger, random, round).start(2);
            // Under load: once the load flows, at a random moment within the next 0.8 s, and then only
            // while requests are on the wire, so that some are cut off mid-flight.
            const flowing = 2 * INSTANCES;
            await load.when(`${flowing} answered requests in round ${round}`, () => load.acked >= flowing);
            await pause(random() * 800, load.stopping);
            await load.when(`requests in flight in round ${round}`, () => load.inFlight >= 3);
            load.crashing = true;
            inFlightAtKill.push(load.inFlight);
            await killHard(server);
            await load.stop();
            expect(ledger.failures, `failures before the kill in round ${round}\n${server.output().slice(-2000)}`).toEqual([]);

            if (db.sqliteFile) {
              const result = sqliteIntegrity(db.sqliteFile);
              integrity.push(result.integrity);
              foreignKeyViolations += result.foreignKeyViolations;
            }
            server = await start();
            const health = await call(server, 'GET', '/healthz', ADMIN_KEY);
            expect(health.status, `healthz after restart ${round}: ${health.text}`).toBe(200);
            verification = await verify(server, ledger);
            lostTotal += verification.lost.length;
            lostSample.push(...verification.lost.slice(0, 20 - lostSample.length).map((l) => `round ${round}: ${l}`));
          }
          // The last restart gets its own load, without a kill: whatever it answers must not hand out a
          // command whose result was acknowledged before the crash either.
          const answeredBefore = ledger.agents.map((a) => a.beatsAcked);
          const settle = new Load(server, ledger, random, ROUNDS + 1).start(0);
          await settle.when('a beat of every agent after the last restart', () => ledger.agents.every((a, i) => a.beatsAcked > answeredBefore[i]!));
          await settle.stop();
          await server.stop();

          const agents = ledger.agents;
          const sum = (f: (a: Agent) => number) => agents.reduce((n, a) => n + f(a), 0);
          const figure = (name: string, value: string | number) => recordFigure({ suite: SUITE, figure: `${name} (${backend.label})`, value, note });
          figure('kill -9 rounds', ROUNDS);
          figure('acknowledged beats checked', verification.beatsChecked);
          figure('acknowledged transitions checked', verification.transitionsChecked);
          figure('acknowledged hibernations', sum((a) => a.hibernationsAcked));
          figure('acknowledged keep-alives', sum((a) => a.keepAlives.length));
          figure('requests in flight at the kills', inFlightAtKill.reduce((a, b) => a + b, 0));
          figure('requests cut off unanswered', ledger.unanswered);
          figure('lost: acknowledged items missing after a restart (all restarts)', lostTotal);
          figure('redelivered after acknowledgement', ledger.redelivered.length);
          figure('integrity_check', db.sqliteFile ? `${integrity.filter((r) => r === 'ok').length}/${integrity.length} ok, ${foreignKeyViolations} foreign key violations` : 'n/a (PostgreSQL)');

          expect(ledger.failures).toEqual([]);
          expect(lostSample, `seed ${SEED}`).toEqual([]);
          expect(ledger.redelivered, `seed ${SEED}`).toEqual([]);
          if (db.sqliteFile) {
            expect(integrity).toEqual(Array(ROUNDS).fill('ok'));
            expect(foreignKeyViolations).toBe(0);
          }
          // The run was not vacuous: kills cut requests off, and every kind of transition occurred.
          expect(ledger.unanswered, `in flight at each kill: ${inFlightAtKill}`).toBeGreaterThan(0);
          expect(sum((a) => a.hibernationsAcked)).toBeGreaterThan(0);
          expect(sum((a) => a.keepAlives.length)).toBeGreaterThan(0);
          expect(sum((a) => a.created.size)).toBeGreaterThan(0);
        } finally {
          for (const server of live.splice(0)) if (server.child.exitCode === null && server.child.signalCode === null) await killHard(server);
          await db.dispose();
        }
      },
      scaled(120_000, 900_000),
    );
  });
});
