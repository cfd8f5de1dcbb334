#!/usr/bin/env node
// `npm run bench`: the heartbeat benchmark of issue 4. Same load generator, same payloads, side by side:
// bare node:http, etcd, prometheus-pushgateway, Dumont on SQLite and on PostgreSQL (1 and 3 replicas);
// a fixed-rate run; the 100k-instance fleet; the agent's footprint; the hibernation value of a
// simulated week. Prints markdown, writes bench/results/<timestamp>.json and (full runs)
// docs/PERFORMANCE.md. Everything runs on 127.0.0.1.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ApiClient, registerFleet } from '../packages/simulator/dist/index.js';
import { agentFootprint } from './lib/agent-footprint.mjs';
import { formatProfile, summarizeProfile } from './lib/cpu-profile.mjs';
import { fleetScenario } from './lib/fleet-scenario.mjs';
import { listScenario } from './lib/list-scenario.mjs';
import { providerScenario } from './lib/provider-scenario.mjs';
import { valueScenario } from './lib/value-scenario.mjs';
import { describeMachine, machineMeter } from './lib/machine.mjs';
import { benchFleet, etcdRequests, heartbeatRequests, pushgatewayRequests, writeRequestFile } from './lib/payloads.mjs';
import { cpuMeter, peakRssMb } from './lib/proc-stats.mjs';
import { runCommand, stopAllStarted } from './lib/processes.mjs';
import { markdownReport, writePerformanceDoc } from './lib/report.mjs';
import {
  createBenchDatabase,
  postgresAvailable,
  ROOT,
  startBareHttp,
  startDumont,
  startEtcd,
  startPushgateway,
  tempDir,
} from './lib/targets.mjs';
import { ensureTools } from './lib/tools.mjs';
import { runWrkSet } from './lib/wrk.mjs';

const TARGETS = ['node-http', 'etcd', 'pushgateway', 'sqlite', 'sqlite-no-history', 'sqlite-policies', 'sqlite-fsync', 'pg-1', 'pg-3', 'provider', 'fleet', 'list', 'agent', 'value'];
const GROUPS = {
  node: ['node-http'],
  bare: ['node-http'],
  sqlite: ['sqlite', 'sqlite-no-history', 'sqlite-policies', 'sqlite-fsync'],
  pg: ['pg-1', 'pg-3'],
  postgres: ['pg-1', 'pg-3'],
  '100k': ['fleet'],
};

const USAGE = `usage: npm run bench -- [--quick] [--only LIST] [--seconds S] [--fleet N] [--no-docs] [--cpu-prof DIR]
       npm run bench -- --report bench/results/FILE.json [--docs]

  --quick          a few seconds per target, a 10,000-instance fleet, one simulated day for value (smoke test)
  --only LIST      comma-separated: ${TARGETS.join(', ')} (groups: sqlite, pg, node, 100k)
  --seconds S      timed seconds per target (default 12; quick 3)
  --fleet N        size of the large fleet (default 100000; quick 10000)
  --list-fleet N   instances the list target sorts and searches (default 100000, quick too)
  --no-docs        do not rewrite docs/PERFORMANCE.md (only full runs of every target write it)
  --cpu-prof DIR   run Dumont servers under node --cpu-prof, profiles in DIR, summaries in the report
  --report FILE    print the markdown of a saved run again (with --docs: also rewrite docs/PERFORMANCE.md)`;

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    seconds: { type: 'string' },
    fleet: { type: 'string' },
    'list-fleet': { type: 'string' },
    'no-docs': { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
    report: { type: 'string' },
    docs: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
if (values.report) {
  // Rendering only: the tables of a saved run, after a change to how they are printed.
  const saved = JSON.parse(readFileSync(values.report, 'utf8'));
  const markdown = markdownReport(saved);
  process.stdout.write(`${markdown}\n`);
  if (values.docs) writePerformanceDoc(join(ROOT, 'docs/PERFORMANCE.md'), markdown);
  process.exit(0);
}

const quick = values.quick;
let selected = TARGETS;
if (values.only) {
  selected = [];
  for (const name of values.only.split(',').map((s) => s.trim()).filter(Boolean)) {
    const names = GROUPS[name] ?? (TARGETS.includes(name) ? [name] : null);
    if (!names) {
      process.stderr.write(`bench: unknown target ${name}\n${USAGE}\n`);
      process.exit(2);
    }
    for (const n of names) if (!selected.includes(n)) selected.push(n);
  }
  selected = TARGETS.filter((t) => selected.includes(t));
}
const options = {
  quick,
  only: values.only ?? null,
  seconds: Number(values.seconds ?? (quick ? 3 : 12)),
  warmup: quick ? 1 : 3,
  instances: 2000,
  connections: 64,
  rate: 3333,
  rateSeconds: quick ? 4 : 15,
  fleet: Number(values.fleet ?? (quick ? 10_000 : 100_000)),
  fleetInterval: quick ? 8 : 30,
  listRequests: quick ? 100 : 500,
  // The list target: sorts and searches of a large fleet; the size is the point, so quick keeps it.
  listFleet: Number(values['list-fleet'] ?? 100_000),
  listSortRequests: quick ? 8 : 20,
  // The provider target: hibernations per second through the outbox while the plain fleet beats.
  providerHibernationsPerSecond: 20,
  providerTimeoutSeconds: 5,
  providerSlowMs: 200,
  // Several short runs per scenario: runs of one scenario differ by several per cent on their own.
  providerRounds: quick ? 1 : 3,
  providerSeconds: Number(values.seconds ?? (quick ? 3 : 8)),
  // The value target: a simulated fleet's week (quick: a day) against the real server, per threshold.
  valueSeed: 1,
  valueInstances: 32,
  valueDays: quick ? 1 : 7,
  valueThresholds: [10, 30, 60],
};
if (!(options.seconds > 0 && options.seconds <= 120) || !(options.fleet >= 100 && options.fleet <= 200_000) || !(options.listFleet >= 100 && options.listFleet <= 200_000)) {
  process.stderr.write(`bench: --seconds must be in (0, 120], --fleet and --list-fleet in [100, 200000]\n`);
  process.exit(2);
}
const writeDocs = !values['no-docs'] && !quick && !values.only && !values.seconds && !values.fleet && !values['list-fleet'];
const cpuProfDir = values['cpu-prof'] ?? null;
if (cpuProfDir) mkdirSync(cpuProfDir, { recursive: true });

const say = (line) => process.stderr.write(`${line}\n`);
const adminKey = `dmk_bench_${randomBytes(12).toString('hex')}`;
const cleanups = [];
const work = tempDir('run');
cleanups.push(() => work.remove());

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    interrupted = true;
    say(`bench: ${signal}, stopping what it started…`);
    stopAllStarted();
    for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => {});
    process.exit(130);
  });
}

/** Which server the numbers belong to: the commit, and whether its source had uncommitted changes. */
async function sourceState() {
  const head = await runCommand('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']).catch(() => null);
  const dirty = await runCommand('git', ['-C', ROOT, 'status', '--porcelain', 'packages/server/src', 'packages/protocol/src']).catch(() => null);
  return {
    commit: head?.code === 0 ? head.stdout.trim() : 'unknown',
    uncommittedServerFiles: dirty?.code === 0 ? dirty.stdout.split('\n').filter(Boolean).length : null,
  };
}

const results = {
  source: await sourceState(),
  command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
  startedAt: new Date().toISOString(),
  finishedAt: null,
  options,
  machine: await describeMachine(),
  closedLoop: [],
  fixedRate: [],
  fleet: null,
  list: null,
  provider: null,
  agent: null,
  value: null,
  skipped: [],
  profiles: [],
};

const m = results.machine;
say(`bench: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB; targets: ${selected.join(', ')}${quick ? ' (quick)' : ''}`);
if (m.busyBeforeRunPercent > 20) {
  say(`bench: WARNING: the machine is already ${m.busyBeforeRunPercent} % busy (load average ${m.loadAverage.join(' ')}); numbers will be low and noisy`);
}

const wants = (t) => selected.includes(t);
const wrkTargets = selected.filter((t) => t !== 'fleet' && t !== 'list' && t !== 'agent' && t !== 'value');
const packages = [];
if (wrkTargets.length) packages.push('wrk');
if (wants('etcd')) packages.push('etcd-server');
if (wants('pushgateway')) packages.push('prometheus-pushgateway');
const tools = await ensureTools(packages, say);
const skip = (target, reason) => {
  results.skipped.push({ target, reason });
  say(`bench: skipping ${target}: ${reason}`);
};

const fleet = benchFleet(options.instances);
const sum = (values) => values.reduce((a, b) => a + (b ?? 0), 0);

/** Warm-up, then the timed wrk run(s), with the target's CPU and peak RSS. */
async function measure(target, { durability, pids, storePids, runs }) {
  say(`${target}: warm-up ${options.warmup} s…`);
  await runWrkSet(runs, options.warmup);
  const processPids = await pids();
  const backendPids = storePids ? await storePids() : [];
  const cpu = cpuMeter(processPids);
  const storeCpu = cpuMeter(backendPids);
  const machine = machineMeter();
  say(`${target}: ${options.seconds} s of wrk (${runs.length > 1 ? `${runs.length} wrk processes, one per replica, ` : ''}${options.connections} connections)…`);
  const r = await runWrkSet(runs, options.seconds);
  const row = {
    target,
    durability,
    ...r,
    cpuPercent: cpu(),
    storeCpuPercent: storePids ? storeCpu() : null,
    rssMb: sum(processPids.map(peakRssMb)),
    machineBusyPercent: machine(),
  };
  // Whatever else ran on the machine meanwhile, in % of one core: what the others took from this run.
  row.otherCpuPercent = Math.max(
    0,
    (row.machineBusyPercent / 100) * results.machine.cpus * 100 - row.cpuPercent - (row.storeCpuPercent ?? 0) - row.wrkCpuPercent,
  );
  results.closedLoop.push(row);
  say(`${target}: ${Math.round(row.rps)} req/s, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms, CPU ${Math.round(row.cpuPercent)} %, errors ${row.errors + row.non2xx}`);
  return row;
}

async function fixedRate(target, { durability, url, requestFile, pids }) {
  say(`${target}: open loop at ${options.rate}/s for ${options.rateSeconds} s…`);
  const cpu = cpuMeter(pids);
  const machine = machineMeter();
  let generator = null;
  let generatorPercent = 0;
  const r = await runCommand(
    process.execPath,
    [join(ROOT, 'bench/open-loop.mjs'), url, requestFile, String(options.rate), String(options.rateSeconds), String(options.connections), '2'],
    {
      timeoutMs: (options.rateSeconds + 60) * 1000,
      onSpawn: (child) => {
        const meter = cpuMeter([child.pid]);
        // Sampled while it runs: its /proc entry goes when it exits.
        generator = setInterval(() => {
          const percent = meter();
          if (percent > 0) generatorPercent = percent;
        }, 200);
      },
    },
  );
  clearInterval(generator);
  if (r.code !== 0) throw new Error(`open-loop generator failed: ${r.stderr}`);
  const row = { target, durability, ...JSON.parse(r.stdout.trim().split('\n').pop()), cpuPercent: cpu(), machineBusyPercent: machine() };
  row.generatorCpuPercent = generatorPercent;
  row.otherCpuPercent = Math.max(0, (row.machineBusyPercent / 100) * results.machine.cpus * 100 - row.cpuPercent - generatorPercent);
  results.fixedRate.push(row);
  say(`${target}: ${Math.round(row.answeredPerSecond)}/s answered, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms, CPU ${Math.round(row.cpuPercent)} %`);
}

async function registerAll(url) {
  const client = new ApiClient(url, { maxSockets: 32 });
  try {
    const specs = fleet.map((h, index) => ({ index, instanceId: h.instanceId, hostname: h.hostname }));
    const r = await registerFleet(client, adminKey, specs, { concurrency: 32 });
    if (r.failed > 0) throw new Error(`registration failed: ${r.errors.join('; ')}`);
    return new Map(fleet.map((h, i) => [h.instanceId, r.tokens[i]]));
  } finally {
    client.close();
  }
}

/**
 * Nineteen policies whose selectors no bench instance matches, so every beat tries them all, and a
 * catch-all with a schedule (its wall clock is read on every beat), a threshold and limits.
 */
async function putPolicies(url) {
  const put = async (name, body) => {
    const res = await fetch(`${url}/api/v1/policies/${name}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.status !== 201) throw new Error(`PUT policy ${name}: ${res.status} ${await res.text()}`);
  };
  for (let i = 1; i <= 19; i++) await put(`team-${i}`, { selector: [`team=t${i}`, 'kind!=batch'], priority: 100 + i, threshold_minutes: 10 + i });
  await put('everyone', {
    selector: [],
    priority: 1,
    threshold_minutes: 45,
    schedule: { timezone: 'Europe/Berlin', active: ['Mon-Fri 08:00-20:00'], outside: 'idle_only', outside_threshold_minutes: 20 },
    limits: { max_threshold_minutes: 120, keep_alive_budget_minutes: 240 },
  });
}

function requestFile(name, requests) {
  const file = join(work.dir, `${name}.requests`);
  writeRequestFile(file, requests);
  return file;
}

const DURABILITY = {
  node: 'none (no storage)',
  etcd: 'fdatasync per commit (WAL; raft batches concurrent puts)',
  pushgateway: 'none per push (in memory; file snapshot every 5 min)',
  sqlite: 'WAL, fsync only on transitions (`transitions`, default)',
  sqliteFsync: 'WAL fdatasync before every answer (`always`)',
};
// The server picks synchronous_commit per connection and transaction (plain beats off, transitions on);
// only the database's own settings can be read from outside.
const pgDurability = (s) => `as the server sets it per commit (plain beats: synchronous_commit off; transitions: on); database fsync=${s.fsync}`;

async function runTarget(target, body) {
  if (interrupted) return;
  try {
    await body();
  } catch (error) {
    skip(target, error.message.split('\n')[0]);
  }
}

if (wrkTargets.length && tools.wrk.missing) {
  for (const t of wrkTargets) skip(t, tools.wrk.missing);
} else {
  if (wants('node-http')) {
    await runTarget('node:http', async () => {
      const server = await startBareHttp();
      try {
        const file = requestFile('node-http', heartbeatRequests(fleet, (h) => `dmt_bench_${h.instanceId}`));
        await measure('node:http', { durability: DURABILITY.node, pids: () => server.pids(), runs: [{ url: server.url, requestFile: file, connections: options.connections }] });
      } finally {
        await server.stop();
      }
    });
  }
  if (wants('etcd')) {
    if (tools['etcd-server'].missing) skip('etcd', tools['etcd-server'].missing);
    else
      await runTarget('etcd', async () => {
        const server = await startEtcd(tools['etcd-server'].path);
        try {
          const file = requestFile('etcd', etcdRequests(fleet));
          await measure('etcd', { durability: DURABILITY.etcd, pids: () => server.pids(), runs: [{ url: server.url, requestFile: file, connections: options.connections }] });
        } finally {
          await server.stop();
        }
      });
  }
  if (wants('pushgateway')) {
    if (tools['prometheus-pushgateway'].missing) skip('pushgateway', tools['prometheus-pushgateway'].missing);
    else
      await runTarget('pushgateway', async () => {
        const server = await startPushgateway(tools['prometheus-pushgateway'].path);
        try {
          const file = requestFile('pushgateway', pushgatewayRequests(fleet));
          await measure('pushgateway', { durability: DURABILITY.pushgateway, pids: () => server.pids(), runs: [{ url: server.url, requestFile: file, connections: options.connections }] });
        } finally {
          await server.stop();
        }
      });
  }
  // `sqlite-no-history` is the same run without the metrics history: the cost of keeping it;
  // `sqlite-policies` the same with named policies every beat must match (the worst case: see putPolicies).
  for (const [key, target, fsync, durability, history] of [
    ['sqlite', 'dumont sqlite', 'transitions', DURABILITY.sqlite, 'on'],
    ['sqlite-no-history', 'dumont sqlite, history off', 'transitions', DURABILITY.sqlite, 'off'],
    ['sqlite-policies', 'dumont sqlite, 20 policies', 'transitions', DURABILITY.sqlite, 'on'],
    ['sqlite-fsync', 'dumont sqlite fsync=always', 'always', DURABILITY.sqliteFsync, 'on'],
  ]) {
    if (!wants(key)) continue;
    await runTarget(target, async () => {
      const data = tempDir(key);
      const server = await startDumont({ databaseUrl: `sqlite:${join(data.dir, 'dumont.db')}`, adminKey, env: { DUMONT_FSYNC: fsync, DUMONT_HISTORY: history }, cpuProfDir });
      try {
        say(`${target}: registering ${options.instances} instances…`);
        const tokens = await registerAll(server.url);
        if (key === 'sqlite-policies') await putPolicies(server.url);
        const file = requestFile(key, heartbeatRequests(fleet, (h) => tokens.get(h.instanceId)));
        await measure(target, { durability, pids: () => [server.pid], runs: [{ url: server.url, requestFile: file, connections: options.connections }] });
        await fixedRate(target, { durability, url: server.url, requestFile: file, pids: [server.pid] });
      } finally {
        await server.stop();
        data.remove();
      }
    });
  }
  for (const [key, target, replicas] of [
    ['pg-1', 'dumont postgres ×1', 1],
    ['pg-3', 'dumont postgres ×3', 3],
  ]) {
    if (!wants(key)) continue;
    const pg = await postgresAvailable();
    if (pg.missing) {
      skip(target, pg.missing);
      continue;
    }
    await runTarget(target, async () => {
      const db = await createBenchDatabase();
      cleanups.push(() => db.drop());
      const servers = [];
      try {
        // The first replica migrates the schema; the others start on it.
        servers.push(await startDumont({ databaseUrl: db.url, adminKey, cpuProfDir }));
        for (let i = 1; i < replicas; i++) servers.push(await startDumont({ databaseUrl: db.url, adminKey, cpuProfDir }));
        say(`${target}: registering ${options.instances} instances…`);
        const tokens = await registerAll(servers[0].url);
        // One wrk per replica, each over its own third of the fleet: wrk cannot spread over several
        // hosts, and a proxy in front would cost CPU of its own on the same two cores.
        const runs = servers.map((server, i) => {
          const share = fleet.filter((_h, j) => j % replicas === i);
          const file = requestFile(`${key}-${i}`, heartbeatRequests(share, (h) => tokens.get(h.instanceId)));
          const connections = Math.floor(options.connections / replicas) + (i < options.connections % replicas ? 1 : 0);
          return { url: server.url, requestFile: file, connections };
        });
        await measure(target, {
          durability: pgDurability(db.settings),
          pids: () => servers.map((s) => s.pid),
          storePids: db.backendPids,
          runs,
        });
      } finally {
        await Promise.all(servers.map((s) => s.stop()));
        await db.drop().catch((e) => say(`${target}: could not drop ${db.name}: ${e.message}`));
      }
    });
  }
  if (wants('provider')) {
    await runTarget('provider', async () => {
      results.provider = await providerScenario({
        adminKey,
        say,
        workDir: work.dir,
        seconds: options.providerSeconds,
        warmup: options.warmup,
        connections: options.connections,
        instances: options.instances,
        hibernationsPerSecond: options.providerHibernationsPerSecond,
        providerTimeoutSeconds: options.providerTimeoutSeconds,
        slowMs: options.providerSlowMs,
        rounds: options.providerRounds,
        cpus: results.machine.cpus,
        cpuProfDir,
      });
    });
  }
}

if (wants('fleet') && !interrupted) {
  await runTarget(`fleet of ${options.fleet}`, async () => {
    results.fleet = await fleetScenario({
      size: options.fleet,
      adminKey,
      say,
      listRequests: options.listRequests,
      intervalSeconds: options.fleetInterval,
      workDir: work.dir,
      cpuProfDir,
    });
  });
}

if (wants('list') && !interrupted) {
  await runTarget(`list of ${options.listFleet}`, async () => {
    results.list = await listScenario({ size: options.listFleet, requests: options.listSortRequests, adminKey, say, cpuProfDir });
  });
}

if (wants('agent') && !interrupted) {
  results.agent = await agentFootprint(say);
}

if (wants('value') && !interrupted) {
  await runTarget('value', async () => {
    results.value = await valueScenario({
      say,
      seed: options.valueSeed,
      instances: options.valueInstances,
      days: options.valueDays,
      thresholds: options.valueThresholds,
      parallel: Math.max(1, Math.min(2, results.machine.cpus)),
    });
  });
}

if (cpuProfDir) {
  for (const file of readdirSync(cpuProfDir).filter((f) => f.endsWith('.cpuprofile'))) {
    const summary = summarizeProfile(join(cpuProfDir, file));
    results.profiles.push({ ...summary, text: formatProfile(summary) });
  }
}

results.finishedAt = new Date().toISOString();
const markdown = markdownReport(results);
process.stdout.write(`\n${markdown}\n`);
const resultsDir = join(ROOT, 'bench/results');
mkdirSync(resultsDir, { recursive: true });
const jsonFile = join(resultsDir, `${results.startedAt.replace(/[:.]/g, '-')}.json`);
writeFileSync(jsonFile, `${JSON.stringify(results, null, 2)}\n`);
say(`\nbench: wrote ${jsonFile}`);
if (writeDocs) {
  writePerformanceDoc(join(ROOT, 'docs/PERFORMANCE.md'), markdown);
  say('bench: refreshed docs/PERFORMANCE.md');
} else {
  say('bench: docs/PERFORMANCE.md left as it is (only a full run of every target rewrites it)');
}
for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch(() => {});
