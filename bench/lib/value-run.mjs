// One threshold of the hibernation-value benchmark, in a process of its own: the real server
// in-process (SQLite in a temp dir, a real loopback port) on a manual clock, and the simulated fleet
// driven in lock-step with it, one 30 s step at a time, for a week.
// Usage: node bench/lib/value-run.mjs '{"seed":1,"instances":32,"days":7,"thresholdMinutes":30}'
// Prints one JSON line: what the server and the bookkeeping here measured.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { judgeReading } from '../../packages/agent/dist/commands/hibernate-guard.js';
import { idleRuleOf } from '../../packages/protocol/dist/index.js';
import { ManualClock } from '../../packages/server/dist/clock.js';
import { loadConfig } from '../../packages/server/dist/config.js';
import { startServer } from '../../packages/server/dist/server.js';
import { ApiClient, heartbeatBody } from '../../packages/simulator/dist/index.js';
import { sampleAt, STEP_MS, STEP_SECONDS, STEPS_PER_HOUR, valueFleet, WEEK_START_MS } from './value-traces.mjs';

const options = JSON.parse(process.argv[2] ?? '{}');
const { seed = 1, instances = 32, days = 7, thresholdMinutes = 30 } = options;
/** Woken again within this long of its hibernation: a regret. */
const REGRET_MS = 60 * 60_000;
/** The history is written in batches, as the server's own timer would, and rolled up hourly. */
const HISTORY_FLUSH_STEPS = 2;
const HISTORY_MAINTAIN_STEPS = STEPS_PER_HOUR;

const fleet = valueFleet({ seed, instances, days });
const steps = fleet[0].trace.steps;
const dir = mkdtempSync(join(tmpdir(), 'dumont-value-'));
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const adminKey = `dmk_value_${randomBytes(12).toString('hex')}`;
const clock = new ManualClock(WEEK_START_MS);
const config = loadConfig({
  DUMONT_PORT: '0',
  DUMONT_ADMIN_KEY: adminKey,
  DUMONT_DATABASE_URL: `sqlite:${join(dir, 'dumont.db')}`,
  DUMONT_LOG_LEVEL: 'warn',
  // On, as by default, with a limit no agent reaches: a simulated week of beats passes in minutes.
  DUMONT_RATE_LIMIT_PER_MINUTE: '100000000',
  DUMONT_IDLE_THRESHOLD_MINUTES: String(thresholdMinutes),
});
// No timers: the sweeper, the outbox and the history are driven below, at the simulated time.
const server = await startServer(config, { clock, logger: false, sweep: false, outbox: false });
const client = new ApiClient(server.url, { maxSockets: 16, timeoutMs: 60_000 });
const wall0 = performance.now();

const iso = (ms) => new Date(ms).toISOString();
const fail = (what, res) => {
  throw new Error(`${what}: HTTP ${res.status} ${JSON.stringify(res.json)}`);
};

const agents = [];
for (const f of fleet) {
  const res = await client.request('POST', '/api/v1/agent/instances', adminKey, {
    instance_id: f.spec.instanceId,
    hostname: f.spec.hostname,
    price_per_hour: f.pricePerHour,
  });
  if (res.status !== 201) fail(`register ${f.spec.instanceId}`, res);
  agents.push({
    ...f,
    token: res.json.agent_token,
    nextStep: 0,
    /** Off (hibernated) since this time; null while the machine runs. */
    offSince: null,
    /** A hibernate command being carried out: its id, rule and the activity mark of the beat that delivered it. */
    hook: null,
    results: [],
    seen: new Set(),
    lastTimestamp: 0,
  });
}

const counts = {
  beats: 0,
  commandsDelivered: 0,
  guardRefusals: 0,
  guardRefusalReasons: {},
  hibernations: 0,
  busyHibernations: 0,
  /** Hibernate commands that reached a machine whose trace was busy at that beat (the server fired on a busy beat). */
  commandsOnBusyBeat: 0,
  wakes: 0,
  regrets: 0,
  errors: 0,
};
const offIntervals = [];
const perProfile = {};
const profileOf = (a) => (perProfile[a.spec.profile] ??= { gpuHours: 0, hibernations: 0, regrets: 0 });

const activityOf = (a, k) => ({ mark: a.trace.lastAct[k] + 1, lastActivity: null, source: 'session' });

function closeOff(a, at) {
  const ms = at - a.offSince;
  offIntervals.push({ index: a.spec.index, from: a.offSince, to: at });
  profileOf(a).gpuHours += (ms / 3_600_000) * a.trace.gpuCount;
  a.offSince = null;
  return ms;
}

async function beat(a, k, now) {
  const sample = sampleAt(a.spec, a.trace, k);
  let stopping = false;
  if (a.hook) {
    // The hook ran between the beat that delivered the command and this one; the agent looks at the
    // machine again (the reading of this step) by the rule the server sent, as the real agent does.
    const body = heartbeatBody(a.spec, sample, iso(now));
    const verdict = judgeReading({ body, activity: activityOf(a, k) }, a.hook.rule, a.hook.delivery);
    if (verdict.quiet) {
      a.results.push({ id: a.hook.id, status: 'succeeded', detail: 'simulated hibernate hook' });
      stopping = true;
    } else {
      a.results.push({ id: a.hook.id, status: 'failed', detail: `refused: ${verdict.reason}; the hook was not run` });
      counts.guardRefusals += 1;
      const key = verdict.reason.replace(/\d+/g, 'N').replace(/ \(.*$/, '');
      counts.guardRefusalReasons[key] = (counts.guardRefusalReasons[key] ?? 0) + 1;
    }
    a.hook = null;
  }
  a.lastTimestamp = now > a.lastTimestamp ? now : a.lastTimestamp + 1;
  const results = a.results;
  a.results = [];
  const body = heartbeatBody(a.spec, sample, iso(a.lastTimestamp), results);
  counts.beats += 1;
  const res = await client.request('POST', '/api/v1/agent/status', a.token, body);
  if (res.status !== 200) {
    counts.errors += 1;
    a.results = results.concat(a.results);
    a.nextStep = k + 1;
    return;
  }
  if (stopping) {
    // The server has the agent's confirmation: the machine stops now and beats no more.
    counts.hibernations += 1;
    profileOf(a).hibernations += 1;
    if (a.trace.demand[k]) counts.busyHibernations += 1;
    a.offSince = now;
    return;
  }
  for (const command of res.json.commands ?? []) {
    if (a.seen.has(command.id)) continue; // repeated until its result arrives
    a.seen.add(command.id);
    if (command.type !== 'hibernate') {
      a.results.push({ id: command.id, status: 'succeeded', detail: `simulated ${command.type}` });
      continue;
    }
    counts.commandsDelivered += 1;
    if (a.trace.demand[k]) counts.commandsOnBusyBeat += 1;
    a.hook = { id: command.id, rule: idleRuleOf(command.args), delivery: { activity: activityOf(a, k) } };
  }
  const next = Number(res.json.next_heartbeat_in);
  a.nextStep = k + Math.max(1, Math.round((Number.isFinite(next) ? next : STEP_SECONDS) / STEP_SECONDS));
}

async function wake(a, k, now) {
  const res = await client.request('POST', `/api/v1/agent/instances/${a.spec.instanceId}/wake`, adminKey);
  if (res.status !== 202) {
    counts.errors += 1;
    return false;
  }
  counts.wakes += 1;
  if (closeOff(a, now) < REGRET_MS) {
    counts.regrets += 1;
    profileOf(a).regrets += 1;
  }
  a.nextStep = k;
  return true;
}

for (let k = 0; k < steps; k++) {
  const now = WEEK_START_MS + k * STEP_MS;
  clock.set(now);
  // What the server's timers would have done by now.
  await server.sweeper.sweep();
  await server.outbox.drain();
  if (config.historyEnabled) {
    if (k % HISTORY_FLUSH_STEPS === 0) await server.history.flush();
    if (k % HISTORY_MAINTAIN_STEPS === 0) await server.history.maintain();
  }
  // Someone needs a stopped machine: they wake it through the API, and it beats at once.
  for (const a of agents) if (a.offSince !== null && a.trace.demand[k]) await wake(a, k, now);
  await Promise.all(agents.filter((a) => a.offSince === null && a.nextStep <= k).map((a) => beat(a, k, now)));
}

const end = WEEK_START_MS + steps * STEP_MS;
clock.set(end);
await server.sweeper.sweep();
const stillOff = agents.filter((a) => a.offSince !== null).length;
for (const a of agents) if (a.offSince !== null) closeOff(a, end);

const savings = await client.request('GET', `/api/v1/agent/savings?from=${iso(WEEK_START_MS)}&to=${iso(end)}`, adminKey);
if (savings.status !== 200) fail('savings', savings);

// The server's own count of hibernations: its `hibernated` events.
let serverHibernations = 0;
for (const a of agents) {
  let cursor = null;
  do {
    const res = await client.request('GET', `/api/v1/agent/instances/${a.spec.instanceId}/events?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, adminKey);
    if (res.status !== 200) fail('events', res);
    serverHibernations += res.json.events.filter((e) => e.type === 'hibernated').length;
    cursor = res.json.next_cursor;
  } while (cursor);
}

const ownGpuHours = offIntervals.reduce((s, i) => s + ((i.to - i.from) / 3_600_000) * agents[i.index].trace.gpuCount, 0);
const wallSeconds = (performance.now() - wall0) / 1000;
client.close();
await server.close();

process.stdout.write(
  `${JSON.stringify({
    thresholdMinutes,
    settings: {
      hibernationWarningSeconds: config.hibernationWarningSeconds,
      idleUtilizationPercent: config.idleUtilizationPercent,
      heartbeatIntervalSeconds: config.heartbeatIntervalSeconds,
      freshnessSeconds: config.freshnessSeconds,
      provider: config.provider,
      history: config.historyEnabled,
    },
    server: {
      gpuHoursSaved: savings.json.gpu_hours_saved,
      hibernatedHours: savings.json.hibernated_hours,
      usdSaved: savings.json.usd_saved,
      hibernations: serverHibernations,
    },
    own: { gpuHours: ownGpuHours, stillOffAtEnd: stillOff },
    /** Each stopped interval as [instance index, first step off, first step on again]. */
    offSteps: offIntervals.map((i) => [i.index, (i.from - WEEK_START_MS) / STEP_MS, (i.to - WEEK_START_MS) / STEP_MS]),
    counts,
    perProfile,
    steps,
    wallSeconds,
  })}\n`,
);
