import { createServer } from 'node:http';
import { join } from 'node:path';
import { ApiClient, registerFleet } from '../../packages/simulator/dist/index.js';
import { benchFleet, heartbeatRequests, writeRequestFile } from './payloads.mjs';
import { machineMeter } from './machine.mjs';
import { cpuMeter, peakRssMb } from './proc-stats.mjs';
import { startDumont, tempDir } from './targets.mjs';
import { runWrkSet } from './wrk.mjs';

/**
 * "No provider call runs on the heartbeat's request path, and a slow or dead provider never slows
 * heartbeats." The same load three times, each on a fresh Dumont (SQLite, default durability):
 *
 *   none  DUMONT_PROVIDER=none: a confirmed hibernation is final at once, nothing goes to the outbox;
 *   slow  DUMONT_PROVIDER=vast against a loopback Vast.ai stand-in that answers 200 after `slowMs`;
 *   hang  DUMONT_PROVIDER=vast against one that accepts the request and never answers (the worker
 *         gives up on each call after DUMONT_PROVIDER_TIMEOUT_SECONDS and retries with backoff).
 *
 * The load: wrk, closed loop, plain heartbeats of the bench fleet (what is measured), while a driver in
 * this process hibernates `hibernationsPerSecond` other instances, open loop, each through the agent's
 * whole exchange: an idle beat, an idle beat past its tiny threshold (warning 0) whose answer carries
 * the hibernate command, then a beat reporting the command `succeeded`. With a provider that last beat
 * queues a stop in the outbox; the worker sends it after the commit, off the request path. A hibernated
 * machine is off, so the instance then stays silent. The plain fleet keeps the default threshold and
 * never hibernates.
 */

/** Instance ids of the hibernating share, far from the plain fleet's (1,000,000…). */
const FIRST_HIBERNATOR_ID = 2_000_000;
/** Threshold of the hibernating share: 120 ms of idleness. */
const HIBERNATOR_THRESHOLD_MINUTES = 0.002;
/** Between the two idle beats: past the threshold. */
const IDLE_GAP_MS = 150;
/** Hibernations run this long before wrk starts: the first reports, an outbox poll, the provider's answer. */
const PRIMING_MS = 2500;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/**
 * A loopback stand-in for Vast.ai's `PUT /api/v0/instances/{id}/`: answers `{"success": true}` after
 * `delayMs`, or (hang) reads the request and never answers. Counts what it was asked.
 */
async function startFakeVast({ hang, delayMs }) {
  const stats = { received: 0, answered: 0, open: 0, other: 0, instances: new Set() };
  const sockets = new Set();
  const timers = new Set();
  const server = createServer((req, res) => {
    const match = /^\/api\/v0\/instances\/([^/]+)\/$/.exec(req.url ?? '');
    if (req.method !== 'PUT' || !match) {
      stats.other += 1;
      res.writeHead(404).end();
      return;
    }
    stats.received += 1;
    stats.instances.add(match[1]);
    req.resume();
    if (hang) {
      stats.open += 1;
      res.on('close', () => (stats.open -= 1));
      return;
    }
    const timer = setTimeout(() => {
      timers.delete(timer);
      stats.answered += 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"success":true}');
    }, delayMs);
    timers.add(timer);
  });
  // A hung call ends when the worker's timeout aborts it, not on the server's own clocks.
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.keepAliveTimeout = 60_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stats,
    async stop() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function idleBody(instanceId, timestamp) {
  return {
    instance_id: instanceId,
    hostname: `bench-hibernator-${instanceId}`,
    timestamp,
    gpu_metrics: { utilization_percent: 0, memory_used_mb: 10, memory_total_mb: 81_920 },
    process_count: 0,
  };
}

/**
 * Starts one hibernation every 1/rate s (open loop: a slow answer does not slow the next start), each
 * on an instance of its own. `stop()` stops starting and waits for those under way.
 */
function hibernationDriver(client, hibernators, rate) {
  const latencies = { idle: [], command: [], report: [] };
  const outcome = { started: 0, reported: 0, failed: 0, errors: [] };
  const reported = [];
  const inFlight = new Set();
  let next = 0;
  let stopped = false;

  const fail = (why) => {
    outcome.failed += 1;
    if (outcome.errors.length < 5) outcome.errors.push(why);
  };

  async function beat(h, body, kind) {
    const ms = Math.max(Date.now(), h.last + 1);
    h.last = ms;
    const res = await client.request('POST', '/api/v1/agent/status', h.token, { ...body, timestamp: new Date(ms).toISOString() });
    latencies[kind].push(res.latencyMs);
    if (res.status !== 200) throw new Error(`${kind} beat of ${h.instanceId}: HTTP ${res.status} ${res.json?.error ?? ''}`);
    return res.json;
  }

  async function cycle(h) {
    const idle = idleBody(h.instanceId, '');
    await beat(h, idle, 'idle');
    for (let attempt = 0; attempt < 8; attempt++) {
      await sleep(IDLE_GAP_MS);
      const answer = await beat(h, idle, 'command');
      const command = answer.commands?.find((c) => c.type === 'hibernate');
      if (!command) continue;
      await beat(h, { ...idle, command_results: [{ id: command.id, status: 'succeeded', detail: 'bench: state saved' }] }, 'report');
      outcome.reported += 1;
      reported.push(h);
      return;
    }
    throw new Error(`instance ${h.instanceId}: no hibernate command after 8 idle beats`);
  }

  const t0 = performance.now();
  const launch = () => {
    if (stopped) return;
    const due = Math.floor(((performance.now() - t0) / 1000) * rate) + 1;
    while (next < due && next < hibernators.length) {
      const h = hibernators[next++];
      outcome.started += 1;
      const p = cycle(h).catch((e) => fail(e.message));
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    }
    if (next >= hibernators.length) {
      stopped = true;
      return;
    }
    timer = setTimeout(launch, Math.max(1, Math.min(50, 1000 / rate)));
  };
  let timer = setTimeout(launch, 0);

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await Promise.all([...inFlight]);
      const stats = (values) => {
        const sorted = Float64Array.from(values).sort();
        return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.length ? sorted[sorted.length - 1] : null };
      };
      return {
        ...outcome,
        ranOutOfInstances: next >= hibernators.length,
        latency: { idle: stats(latencies.idle), command: stats(latencies.command), report: stats(latencies.report) },
        reportedInstances: reported,
      };
    },
  };
}

/** Where each hibernated instance's stop stands, from the detail and events APIs. */
async function stopStats(client, adminKey, instances) {
  const s = { hibernated: 0, stopping: 0, retrying: 0, stopFailed: 0, other: 0, requested: 0, failedAttempts: 0, stopped: 0, lastError: null };
  let i = 0;
  const worker = async () => {
    while (i < instances.length) {
      const h = instances[i++];
      const [detail, events] = await Promise.all([
        client.request('GET', `/api/v1/agent/instances/${h.instanceId}`, adminKey),
        client.request('GET', `/api/v1/agent/instances/${h.instanceId}/events?limit=1000`, adminKey),
      ]);
      if (detail.status !== 200 || events.status !== 200) throw new Error(`reading instance ${h.instanceId}: HTTP ${detail.status}/${events.status}`);
      const d = detail.json;
      if (d.status === 'hibernated') s.hibernated += 1;
      else if (d.status === 'hibernating' && d.provider.state === 'stopping') {
        s.stopping += 1;
        if (d.provider.last_error !== null) {
          s.retrying += 1;
          s.lastError ??= d.provider.last_error;
        }
      } else s.other += 1;
      if (d.provider.state === 'stop_failed') s.stopFailed += 1;
      for (const e of events.json.events) {
        if (e.type === 'provider_stop_requested') s.requested += 1;
        else if (e.type === 'provider_stop_failed') s.failedAttempts += 1;
        else if (e.type === 'provider_stopped') s.stopped += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return s;
}

async function register(client, adminKey, specs) {
  const r = await registerFleet(client, adminKey, specs, { concurrency: 32 });
  if (r.failed > 0) throw new Error(`registration failed: ${r.errors.join('; ')}`);
  return r.tokens;
}

async function runOne(scenario, o) {
  const { say } = o;
  const fake = scenario.provider === 'vast' ? await startFakeVast({ hang: scenario.hang, delayMs: o.slowMs }) : null;
  const data = tempDir(`provider-${scenario.key}`);
  const env = {
    DUMONT_HIBERNATION_WARNING_SECONDS: '0',
    DUMONT_PROVIDER: scenario.provider,
    DUMONT_PROVIDER_TIMEOUT_SECONDS: String(o.providerTimeoutSeconds),
    ...(fake ? { DUMONT_VAST_API_URL: fake.url, DUMONT_VAST_API_KEY: 'bench-vast-key' } : {}),
  };
  let server = null;
  try {
    server = await startDumont({ databaseUrl: `sqlite:${join(data.dir, 'dumont.db')}`, adminKey: o.adminKey, env, cpuProfDir: o.cpuProfDir });
    const client = new ApiClient(server.url, { maxSockets: 32, timeoutMs: 30_000 });
    try {
      say(`provider ${scenario.key}: registering ${o.instances} instances and ${o.pool} to hibernate…`);
      const fleet = benchFleet(o.instances);
      const fleetTokens = await register(client, o.adminKey, fleet.map((h, index) => ({ index, instanceId: h.instanceId, hostname: h.hostname })));
      const hibernators = Array.from({ length: o.pool }, (_, index) => ({ index, instanceId: FIRST_HIBERNATOR_ID + index, hostname: `bench-hibernator-${index}` }));
      const hibernatorTokens = await register(client, o.adminKey, hibernators);
      hibernators.forEach((h, i) => Object.assign(h, { token: hibernatorTokens[i], last: 0 }));
      for (let i = 0; i < hibernators.length; i += 32) {
        await Promise.all(
          hibernators.slice(i, i + 32).map(async (h) => {
            const res = await client.request('PATCH', `/api/v1/agent/instances/${h.instanceId}/hibernation`, o.adminKey, { threshold_minutes: HIBERNATOR_THRESHOLD_MINUTES });
            if (res.status !== 200) throw new Error(`PATCH hibernation of ${h.instanceId}: HTTP ${res.status} ${res.json?.message ?? ''}`);
          }),
        );
      }
      const requestFile = join(o.workDir, `provider-${scenario.key}.requests`);
      const tokenOf = new Map(fleet.map((h, i) => [h.instanceId, fleetTokens[i]]));
      writeRequestFile(requestFile, heartbeatRequests(fleet, (h) => tokenOf.get(h.instanceId)));
      const runs = [{ url: server.url, requestFile, connections: o.connections }];

      const driver = hibernationDriver(client, hibernators, o.hibernationsPerSecond);
      let r;
      let cpuPercent;
      let machineBusyPercent;
      let benchCpuPercent;
      try {
        // Hibernations first, until stops flow (the worker polls every second; its first call loads
        // node's HTTP client): the measured seconds see the steady state, not the first call's start-up.
        await sleep(PRIMING_MS);
        say(`provider ${scenario.key}: warm-up ${o.warmup} s (hibernating ${o.hibernationsPerSecond}/s meanwhile)…`);
        await runWrkSet(runs, o.warmup);
        const cpu = cpuMeter([server.pid]);
        const machine = machineMeter();
        // This process drives the hibernations and plays the provider: its CPU is load too.
        const selfBefore = process.cpuUsage();
        const selfT0 = performance.now();
        say(`provider ${scenario.key}: ${o.seconds} s of wrk (${o.connections} connections) with ${o.hibernationsPerSecond} hibernations/s…`);
        r = await runWrkSet(runs, o.seconds);
        cpuPercent = cpu();
        machineBusyPercent = machine();
        const self = process.cpuUsage(selfBefore);
        benchCpuPercent = ((self.user + self.system) / 1000 / (performance.now() - selfT0)) * 100;
      } catch (error) {
        await driver.stop();
        throw error;
      }
      const hib = await driver.stop();
      if (hib.failed > 0) say(`provider ${scenario.key}: ${hib.failed} hibernation(s) failed: ${hib.errors.join('; ')}`);
      const stops = await stopStats(client, o.adminKey, hib.reportedInstances);
      const { reportedInstances, ...hibernations } = hib;
      const providerCalls = fake ? { received: fake.stats.received, answered: fake.stats.answered, openNow: fake.stats.open, instances: fake.stats.instances.size, other: fake.stats.other } : null;
      const row = {
        scenario: scenario.key,
        label: scenario.label,
        round: o.round,
        provider: scenario.provider,
        requests: r.requests,
        seconds: r.seconds,
        rps: r.rps,
        p50: r.p50,
        p90: r.p90,
        p99: r.p99,
        p999: r.p999,
        max: r.max,
        errors: r.errors,
        non2xx: r.non2xx,
        wrkCpuPercent: r.wrkCpuPercent,
        cpuPercent,
        /** Plain beats per second of server CPU: what a beat costs, whatever else took the cores. */
        beatsPerCpuSecond: cpuPercent > 0 ? r.rps / (cpuPercent / 100) : null,
        machineBusyPercent,
        benchCpuPercent,
        otherCpuPercent: Math.max(0, (machineBusyPercent / 100) * o.cpus * 100 - cpuPercent - (r.wrkCpuPercent ?? 0) - benchCpuPercent),
        rssMb: peakRssMb(server.pid),
        hibernations,
        stops: scenario.provider === 'none' ? null : stops,
        hibernatedWithoutProvider: scenario.provider === 'none' ? stops.hibernated : null,
        providerCalls,
      };
      const st = row.stops;
      say(
        `provider ${scenario.key}: ${Math.round(row.rps)} beats/s, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms, CPU ${Math.round(cpuPercent)} %, ` +
          `others ${Math.round(row.otherCpuPercent)} %; ` +
          `${hib.reported} hibernations (report beat p99 ${hib.latency.report.p99?.toFixed(2) ?? '–'} ms)` +
          (st ? `; stops: ${st.requested} calls sent, ${st.stopped} done, ${st.stopping} pending (${st.retrying} failed, retrying)` : ''),
      );
      return row;
    } finally {
      client.close();
    }
  } finally {
    if (server) await server.stop();
    if (fake) await fake.stop();
    data.remove();
  }
}

/**
 * The three runs, one after the other, with the same load; with several rounds, every other round in
 * reverse order (none slow hang, hang slow none, …), so a drift of the machine's load does not favour
 * one scenario. Returns what the report prints.
 */
export async function providerScenario({
  adminKey,
  say,
  workDir,
  seconds,
  warmup,
  connections = 64,
  instances = 2000,
  hibernationsPerSecond = 20,
  providerTimeoutSeconds = 5,
  slowMs = 200,
  rounds = 1,
  cpus = 1,
  cpuProfDir = null,
}) {
  // Enough instances for every hibernation of the run: each hibernates once and then stays off.
  const pool = Math.ceil(hibernationsPerSecond * (PRIMING_MS / 1000 + warmup + seconds + 10));
  const o = { adminKey, say, workDir, seconds, warmup, connections, instances, hibernationsPerSecond, providerTimeoutSeconds, slowMs, cpuProfDir, pool, cpus, round: 1 };
  const scenarios = [
    { key: 'none', label: 'provider none', provider: 'none', hang: false },
    { key: 'slow', label: `vast, answers 200 after ${slowMs} ms`, provider: 'vast', hang: false },
    { key: 'hang', label: `vast, never answers (timeout ${providerTimeoutSeconds} s)`, provider: 'vast', hang: true },
  ];
  const rows = [];
  for (let round = 1; round <= rounds; round++) {
    o.round = round;
    for (const s of round % 2 === 1 ? scenarios : [...scenarios].reverse()) rows.push(await runOne(s, o));
  }
  return {
    settings: {
      instances,
      connections,
      seconds,
      warmup,
      hibernationsPerSecond,
      hibernatorThresholdMinutes: HIBERNATOR_THRESHOLD_MINUTES,
      providerTimeoutSeconds,
      slowMs,
      pool,
      rounds,
    },
    rows,
  };
}
