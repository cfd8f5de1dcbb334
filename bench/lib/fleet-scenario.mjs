import { join } from 'node:path';
import { encodeCursor } from '../../packages/server/dist/fleet/cursor.js';
import { ApiClient, LatencyHistogram, readTokensFile } from '../../packages/simulator/dist/index.js';
import { benchFleet, heartbeatRequests, writeRequestFile } from './payloads.mjs';
import { cpuMeter, peakRssMb, rssMb } from './proc-stats.mjs';
import { runCommand } from './processes.mjs';
import { ROOT, startDumont, tempDir } from './targets.mjs';

const SIMULATOR = join(ROOT, 'packages/simulator/dist/cli.js');
const SWEEP_TIMING = join(ROOT, 'bench/sweep-timing.mjs');
const OPEN_LOOP = join(ROOT, 'bench/open-loop.mjs');
const FIRST_ID = 10_000_000;
const SEED = 100;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sequential GETs on one keep-alive connection, as an operator's dashboard pages through: `requests`
 * of them, or fewer if `maxSeconds` runs out first (a slow list must not outlast the load around it).
 */
async function listLatency(url, adminKey, path, requests, maxSeconds) {
  const client = new ApiClient(url, { maxSockets: 1 });
  const latency = new LatencyHistogram();
  let errors = 0;
  const deadline = performance.now() + maxSeconds * 1000;
  try {
    for (let i = 0; i < 5; i++) await client.request('GET', path, adminKey);
    for (let i = 0; i < requests && performance.now() < deadline; i++) {
      const res = await client.request('GET', path, adminKey);
      if (res.status !== 200) errors += 1;
      latency.record(res.latencyMs);
    }
  } finally {
    client.close();
  }
  return { requests: latency.count, errors, p50: latency.percentile(50), p99: latency.percentile(99), max: latency.max };
}

async function listSet(url, adminKey, size, requests, maxSeconds) {
  const middle = encodeCursor(FIRST_ID + Math.floor(size / 2));
  const each = maxSeconds / 3;
  return {
    page: await listLatency(url, adminKey, '/api/v1/agent/instances?limit=100', requests, each),
    idleFilter: await listLatency(url, adminKey, '/api/v1/agent/instances?limit=100&status=idle', requests, each),
    cursorMiddle: await listLatency(url, adminKey, `/api/v1/agent/instances?limit=100&cursor=${middle}`, requests, each),
  };
}

/** One fixed-rate run of bench/open-loop.mjs; `during` runs alongside and its result is returned too. */
async function openLoop(url, requestFile, rate, seconds, during) {
  const run = runCommand(process.execPath, [OPEN_LOOP, url, requestFile, String(rate), String(seconds), '64', '0'], {
    timeoutMs: (seconds + 120) * 1000,
  });
  const measured = during ? await during() : null;
  const result = await run;
  if (result.code !== 0) throw new Error(`open-loop generator failed: ${result.stderr.slice(-2000)}`);
  return { ...JSON.parse(result.stdout.trim().split('\n').pop()), measured };
}

/**
 * The large fleet: `size` instances registered through the API by dumont-simulate, then the whole
 * fleet beating once per interval (size/interval beats/s, open loop, each instance in turn with its
 * own token and a body from the simulator's plan) for two rounds: the "join" round, where each beat is
 * the instance's first (a transition offline → active/idle, stored durably), and the "steady" round
 * (plain metric updates), during which an operator pages through the list. Then the same list
 * requests on the quiet fleet, the server's RSS, and the sweeper timed in-process on the same database.
 */
export async function fleetScenario({ size, adminKey, say, listRequests = 500, intervalSeconds = 30, workDir, cpuProfDir }) {
  const data = tempDir('fleet');
  const db = join(data.dir, 'dumont.db');
  const tokensFile = join(data.dir, 'tokens.jsonl');
  const server = await startDumont({
    databaseUrl: `sqlite:${db}`,
    adminKey,
    env: { DUMONT_HEARTBEAT_INTERVAL_SECONDS: String(intervalSeconds) },
    cpuProfDir,
  });
  let stopped = false;
  try {
    say(`fleet: registering ${size} instances through the API (dumont-simulate --register-only)…`);
    const registration = await runCommand(
      process.execPath,
      [SIMULATOR, '--api-url', server.url, '--agents', String(size), '--seed', String(SEED), '--first-instance-id', String(FIRST_ID),
        '--register-only', '--tokens-out', tokensFile, '--json', '--quiet'],
      { env: { DUMONT_ADMIN_KEY: adminKey }, timeoutMs: 30 * 60_000 },
    );
    if (registration.code !== 0) throw new Error(`registration failed: ${registration.stderr || registration.stdout}`);
    const registered = JSON.parse(registration.stdout).registration;
    say(`fleet: ${registered.registered} registered in ${registered.seconds} s (${registered.perSecond}/s)`);

    const tokens = readTokensFile(tokensFile);
    const requestFile = join(workDir ?? data.dir, 'fleet.requests');
    writeRequestFile(
      requestFile,
      heartbeatRequests(benchFleet(size, { seed: SEED, firstInstanceId: FIRST_ID }), (h) => tokens.get(h.instanceId)),
    );
    // Unrounded, so each round is exactly one beat per instance.
    const rate = size / intervalSeconds;
    say(`fleet: join round, ${size} first beats at ${Math.round(rate)}/s (each a stored transition)…`);
    const joinRound = await openLoop(server.url, requestFile, rate, intervalSeconds);
    say(`fleet: steady round at ${Math.round(rate)}/s, listing meanwhile…`);
    const steadyRound = await openLoop(server.url, requestFile, rate, intervalSeconds, async () => {
      await sleep(2000);
      const cpu = cpuMeter([server.pid]);
      const lists = await listSet(server.url, adminKey, size, listRequests, intervalSeconds - 4);
      return { lists, cpuPercent: cpu() };
    });

    say('fleet: listing on the quiet fleet…');
    const quiet = await listSet(server.url, adminKey, size, listRequests, 90);
    const serverPeakRss = peakRssMb(server.pid);
    const serverRss = rssMb(server.pid);
    await server.stop();
    stopped = true;

    say('fleet: timing the sweeper in-process on the same database…');
    const sweepRun = await runCommand(process.execPath, [SWEEP_TIMING, db], { timeoutMs: 10 * 60_000 });
    // A failure here loses only the sweeper's numbers, not the fleet's.
    const sweep =
      sweepRun.code === 0
        ? JSON.parse(sweepRun.stdout.trim().split('\n').pop())
        : { missing: `bench/sweep-timing.mjs exited with ${sweepRun.code ?? sweepRun.signal}: ${(sweepRun.stderr || sweepRun.stdout).trim().slice(-1000)}` };
    const { measured, ...steady } = steadyRound;
    const { measured: _none, ...joined } = joinRound;
    return {
      size,
      intervalSeconds,
      beatsPerSecondAsked: rate,
      registration: registered,
      joinRound: joined,
      steadyRound: steady,
      steadyCpuPercent: measured.cpuPercent,
      listUnderLoad: measured.lists,
      listQuiet: quiet,
      serverPeakRssMb: serverPeakRss,
      serverRssMb: serverRss,
      sweep,
    };
  } finally {
    if (!stopped) await server.stop();
    data.remove();
  }
}
