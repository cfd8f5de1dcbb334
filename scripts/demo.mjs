#!/usr/bin/env node
// `npm run demo`: a Dumont server with short thresholds and a simulated fleet of a few hundred GPU
// hosts with mixed profiles, so that within minutes idle hosts count down, get hibernated (the simulated
// agents confirm; provider `none`, nothing real is stopped) and the savings grow. The server is a child
// process; the simulated fleet runs in a worker thread of this process, so Ctrl-C (or --duration) ends
// everything and leaves no process behind.
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SERVER_MAIN = join(ROOT, 'packages/server/dist/main.js');
const SIMULATOR = join(ROOT, 'packages/simulator/dist/index.js');
const FIRST_INSTANCE_ID = 1_000_000;

const USAGE = `usage: npm run demo -- [options]     (or: node scripts/demo.mjs [options] after npm run build)

  --port N               server port on 127.0.0.1; 0 picks a free one          [8080]
  --instances N          simulated GPU hosts (mixed profiles)                  [300]
  --duration S           stop by itself after S seconds                        [until Ctrl-C]
  --data-dir DIR         keep the server's database here                       [a temporary folder, removed at exit]
  --idle-minutes M       idle time before a hibernation is scheduled           [1]
  --warning-seconds S    countdown between scheduling and hibernating          [30]
  --heartbeat-seconds S  heartbeat interval the server asks for                [5]
  --status-every S       print the fleet's state every S seconds               [10]
  --seed N               repeat the same fleet                                 [random, printed]
  -h, --help`;

// Typical hourly rental prices per GPU, so that the savings have dollars and not only hours.
const PRICE_PER_GPU_HOUR = {
  'NVIDIA H100 80GB HBM3': 2.49,
  'NVIDIA A100-SXM4-80GB': 1.59,
  'NVIDIA A100-PCIE-40GB': 1.1,
  'NVIDIA L40S': 0.99,
  'NVIDIA GeForce RTX 4090': 0.45,
  'NVIDIA GeForce RTX 3090': 0.25,
  'NVIDIA A10G': 0.75,
};
const DEFAULT_PRICE_PER_GPU_HOUR = 1;

if (isMainThread) {
  await main();
} else {
  await simulateFleet(workerData);
}

/** The worker thread: beats for the fleet until the duration ends, then posts the simulator's summary. */
async function simulateFleet(options) {
  const { runSimulation, formatSummary } = await import(pathToFileURL(SIMULATOR).href);
  const result = await runSimulation(options);
  parentPort.postMessage({ summary: formatSummary(result.summary) });
}

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      port: { type: 'string' },
      instances: { type: 'string' },
      duration: { type: 'string' },
      'data-dir': { type: 'string' },
      'idle-minutes': { type: 'string' },
      'warning-seconds': { type: 'string' },
      'heartbeat-seconds': { type: 'string' },
      'status-every': { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const number = (name, fallback, check, rule) => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || !check(n)) throw new Error(`--${name} ${raw}: must be ${rule}`);
    return n;
  };
  const whole = (min, max) => (n) => Number.isInteger(n) && n >= min && n <= max;
  return {
    help: values.help,
    port: number('port', 8080, whole(0, 65535), 'a port number (0: any free port)'),
    instances: number('instances', 300, whole(1, 100_000), 'a whole number in [1, 100000]'),
    durationSeconds: number('duration', null, (n) => n > 0 && n <= 86_400, 'in (0, 86400] seconds'),
    dataDir: values['data-dir'] === undefined ? null : resolve(values['data-dir']),
    idleMinutes: number('idle-minutes', 1, (n) => n > 0 && n <= 10_080, 'in (0, 10080] minutes'),
    warningSeconds: number('warning-seconds', 30, (n) => n >= 0 && n <= 86_400, 'in [0, 86400] seconds'),
    heartbeatSeconds: number('heartbeat-seconds', 5, (n) => n >= 0.2 && n <= 3600, 'in [0.2, 3600] seconds'),
    statusEverySeconds: number('status-every', 10, (n) => n >= 0.2, 'at least 0.2 seconds'),
    seed: number('seed', randomInt(0, 2 ** 31), whole(0, 2 ** 32 - 1), 'a whole number in [0, 2^32)'),
  };
}

async function main() {
  let options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`demo: ${error.message}\n${USAGE}\n`);
    process.exit(2);
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  for (const built of [SERVER_MAIN, SIMULATOR]) {
    if (!existsSync(built)) {
      process.stderr.write(`demo: ${built} is missing: run npm run build first (npm run demo does)\n`);
      process.exit(1);
    }
  }
  const { ApiClient, planFleet } = await import(pathToFileURL(SIMULATOR).href);
  const startedAt = Date.now();
  const deadline = options.durationSeconds === null ? null : startedAt + options.durationSeconds * 1000;
  const out = (line = '') => process.stdout.write(`${line}\n`);

  const temporary = options.dataDir === null;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'dumont-demo-'));
  mkdirSync(dataDir, { recursive: true });
  const logFile = join(dataDir, 'server.log');
  const port = options.port === 0 ? await freePort() : options.port;
  const baseUrl = `http://127.0.0.1:${port}`;
  // A throwaway admin key, printed below: it exists for this demo's server only.
  const adminKey = `dmk_${randomBytes(32).toString('base64url')}`;

  let server = null;
  let worker = null;
  let statusTimer = null;
  let stopping = null;

  const stop = (code, reason) => {
    stopping ??= (async () => {
      clearInterval(statusTimer);
      if (reason) out(reason);
      // The fleet first: a server shutting down while hundreds of agents beat would wait on their sockets.
      await worker?.terminate();
      await stopServer(server);
      if (temporary) rmSync(dataDir, { recursive: true, force: true });
      process.exit(code);
    })();
    return stopping;
  };
  process.on('SIGINT', () => void stop(0, '\ndemo: stopping (Ctrl-C)…'));
  process.on('SIGTERM', () => void stop(0, 'demo: stopping…'));
  process.on('SIGHUP', () => void stop(0));
  // Whatever else ends this process, the server must not outlive it.
  process.on('exit', () => {
    if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  });
  const fail = (message) => {
    // The first failure tells what happened; what follows from it (a dead server refusing) does not.
    if (!stopping) process.stderr.write(`demo: ${message}\n`);
    return stop(1);
  };

  try {
    const logFd = openSync(logFile, 'a');
    server = spawn(process.execPath, [SERVER_MAIN], {
      cwd: ROOT,
      env: serverEnv(options, { port, dataDir, adminKey }),
      stdio: ['ignore', logFd, logFd],
      // Its own process group: a terminal's Ctrl-C reaches this script only, which stops the fleet first.
      detached: true,
    });
    closeSync(logFd);
    server.on('exit', (code, signal) => {
      if (stopping) return;
      void fail(`the server stopped (${signal ?? `exit ${code}`}); its last lines:\n${tail(logFile)}`);
    });

    const client = new ApiClient(baseUrl, { maxSockets: 16, timeoutMs: 10_000 });
    await waitUntilHealthy(client, server, 30_000);

    const minutes = options.idleMinutes === 1 ? '1 minute' : `${options.idleMinutes} minutes`;
    out(`Dumont demo: ${options.instances} simulated GPU hosts (seed ${options.seed}), provider none: nothing real is stopped.`);
    out(`An idle host is scheduled after ${minutes} idle, counts down ${options.warningSeconds} s, then hibernates;`);
    out(`heartbeats every ${options.heartbeatSeconds} s. ${deadline === null ? 'Ctrl-C stops everything.' : `Stops by itself after ${options.durationSeconds} s (or Ctrl-C).`}`);
    out();
    out(`  dashboard   ${baseUrl}/   (log in with the admin key)`);
    out(`  admin key   ${adminKey}`);
    out(`  server      ${baseUrl}   (pid ${server.pid})`);
    out(`  API docs    ${baseUrl}/docs   (Authorize with the key)`);
    out(`  instances   ${baseUrl}/api/v1/agent/instances?limit=1000`);
    out(`  savings     ${baseUrl}/api/v1/agent/savings`);
    out(`  metrics     ${baseUrl}/metrics`);
    out(`  data        ${dataDir}${temporary ? '   (removed at exit)' : ''}, server log server.log`);
    out();
    out(`  curl -s -H "Authorization: Bearer ${adminKey}" ${baseUrl}/api/v1/agent/savings`);
    out();

    const plan = planFleet({ seed: options.seed, agents: options.instances, firstInstanceId: FIRST_INSTANCE_ID });
    const registering = Date.now();
    const tokens = await registerWithPrices(client, adminKey, plan);
    out(`registered ${plan.length} instances in ${((Date.now() - registering) / 1000).toFixed(1)} s; the fleet starts beating`);

    const remainingSeconds = deadline === null ? 86_400 : Math.max(1, (deadline - Date.now()) / 1000);
    worker = new Worker(new URL(import.meta.url), {
      workerData: {
        apiUrl: baseUrl,
        agents: options.instances,
        durationSeconds: remainingSeconds,
        seed: options.seed,
        firstInstanceId: FIRST_INSTANCE_ID,
        tokens,
        // First beats spread over one interval, as the hosts of a real fleet start at different times.
        rampSeconds: Math.min(options.heartbeatSeconds, remainingSeconds / 4),
      },
    });
    worker.on('error', (error) => void fail(`the simulated fleet failed: ${error.stack ?? error.message}`));
    worker.on('message', async ({ summary }) => {
      out(await statusLine(client, adminKey, startedAt).catch((error) => `status: ${error.message}`));
      out(`\n${summary}`);
      void stop(0, 'demo: done');
    });

    statusTimer = setInterval(async () => {
      const line = await statusLine(client, adminKey, startedAt).catch((error) => `status: ${error.message}`);
      if (!stopping) out(line);
    }, options.statusEverySeconds * 1000);
    // The simulator ends on its own at the deadline; this is for a fleet stuck on an unanswered server.
    if (deadline !== null) setTimeout(() => void stop(0, 'demo: time is up'), deadline - Date.now() + 15_000).unref();
  } catch (error) {
    await fail(error.message);
  }
}

/** The server's environment: this demo's settings only, none of the caller's DUMONT_* (a notify URL, a database). */
function serverEnv(options, { port, dataDir, adminKey }) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('DUMONT_')));
  return {
    ...env,
    DUMONT_HOST: '127.0.0.1',
    DUMONT_PORT: String(port),
    DUMONT_DATABASE_URL: `sqlite:${join(dataDir, 'dumont.db')}`,
    DUMONT_DATA_DIR: dataDir,
    DUMONT_ADMIN_KEY: adminKey,
    DUMONT_PROVIDER: 'none',
    DUMONT_IDLE_THRESHOLD_MINUTES: String(options.idleMinutes),
    DUMONT_HIBERNATION_WARNING_SECONDS: String(options.warningSeconds),
    DUMONT_HEARTBEAT_INTERVAL_SECONDS: String(options.heartbeatSeconds),
    // Three missed beats make a host offline, as with the defaults (30 s beats, 90 s).
    DUMONT_OFFLINE_AFTER_SECONDS: String(options.heartbeatSeconds * 3),
    // One admin key registers the whole fleet and polls the status: no per-credential limit.
    DUMONT_RATE_LIMIT_PER_MINUTE: '0',
    DUMONT_LOG_LEVEL: 'warn',
  };
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

async function waitUntilHealthy(client, server, timeoutMs) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (server.exitCode !== null || server.signalCode !== null) throw new Error('the server did not start');
    try {
      const res = await client.request('GET', '/healthz', null);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the server did not answer /healthz within ${timeoutMs / 1000} s`);
}

/** Registers every planned host with a price (GPU count × its model's rate); returns instance id → agent token. */
async function registerWithPrices(client, adminKey, plan) {
  const tokens = new Map();
  let next = 0;
  const registerNext = async () => {
    while (next < plan.length) {
      const spec = plan[next++];
      const perGpu = PRICE_PER_GPU_HOUR[spec.gpus[0]?.name] ?? DEFAULT_PRICE_PER_GPU_HOUR;
      const res = await client.request('POST', '/api/v1/agent/instances', adminKey, {
        instance_id: spec.instanceId,
        hostname: spec.hostname,
        price_per_hour: Math.round(perGpu * spec.gpus.length * 100) / 100,
      });
      if ((res.status !== 200 && res.status !== 201) || typeof res.json?.agent_token !== 'string') {
        throw new Error(`registering ${spec.instanceId}: ${res.status} ${res.json?.message ?? ''}`.trim());
      }
      tokens.set(spec.instanceId, res.json.agent_token);
    }
  };
  await Promise.all(Array.from({ length: Math.min(16, plan.length) }, registerNext));
  return tokens;
}

/** One line: how many hosts are in each state, the countdowns under way, and what hibernation saved so far. */
async function statusLine(client, key, startedAt) {
  let idle = [];
  let page;
  let cursor = null;
  do {
    const query = `status=idle&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const res = await client.request('GET', `/api/v1/agent/instances?${query}`, key);
    if (res.status !== 200) throw new Error(`instances: ${res.status} ${res.json?.message ?? ''}`);
    page = res.json;
    idle = idle.concat(page.instances);
    cursor = page.next_cursor;
  } while (cursor);
  const savings = await client.request('GET', '/api/v1/agent/savings', key);
  if (savings.status !== 200) throw new Error(`savings: ${savings.status} ${savings.json?.message ?? ''}`);
  const countdowns = idle.map((i) => i.hibernate_in_seconds).filter((s) => typeof s === 'number');
  const elapsed = Math.round((Date.now() - startedAt) / 1000);
  const clock = `${Math.floor(elapsed / 60)}:${String(elapsed % 60).padStart(2, '0')}`;
  const s = savings.json;
  return (
    `${clock.padStart(6)}  active ${page.active_count} · idle ${page.idle_count}` +
    (countdowns.length > 0 ? ` (${countdowns.length} counting down, next in ${Math.min(...countdowns)} s)` : '') +
    ` · hibernating ${page.hibernating_count} · hibernated ${page.hibernated_count} · offline ${page.offline_count}` +
    (page.mass_silence ? ' · mass silence: hibernations held' : '') +
    ` · saved ${s.hibernated_hours.toFixed(2)} h, ${s.gpu_hours_saved.toFixed(2)} GPU-h, $${s.usd_saved.toFixed(2)}`
  );
}

async function stopServer(server) {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const exited = once(server, 'exit');
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

function tail(file, lines = 20) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
