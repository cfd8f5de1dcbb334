// Times the server's sweeper in-process on a fleet database, with 0, 100 and 1,000 instances due, to
// show that a tick costs what is due, not the size of the fleet.
// Usage: node bench/sweep-timing.mjs SQLITE_FILE [ROUNDS_AT_100] [ROUNDS_AT_1000]
import { ManualClock } from '../packages/server/dist/clock.js';
import { loadConfig } from '../packages/server/dist/config.js';
import { startServer } from '../packages/server/dist/server.js';
import { openStore } from '../packages/server/dist/store/open-store.js';

const [file, rounds100 = '5', rounds1000 = '3'] = process.argv.slice(2);
if (!file) throw new Error('usage: node bench/sweep-timing.mjs SQLITE_FILE');

const config = loadConfig({
  DUMONT_PORT: '0',
  DUMONT_ADMIN_KEY: 'sweep-timing',
  DUMONT_DATABASE_URL: `sqlite:${file}`,
  DUMONT_LOG_LEVEL: 'warn',
  DUMONT_RATE_LIMIT_PER_MINUTE: '0',
});
const store = await openStore(config.databaseUrl);
// A clock that stands still: nothing becomes due between ticks except what we make due. It starts one
// offline window in the past and is then set to now, so the sweeper's restart grace (nothing marked
// offline during the first window) is over without anything else becoming due.
const startedAt = Date.now();
const clock = new ManualClock(startedAt - (config.offlineAfterSeconds + 1) * 1000);
const server = await startServer(config, { store, clock, logger: false, sweep: false });
clock.set(startedAt);

async function timedSweep() {
  const t0 = performance.now();
  const changed = await server.sweeper.sweep();
  return { ms: performance.now() - t0, changed };
}

/** Makes `n` live instances look silent past the offline window, due at the clock's now. */
async function makeDue(n) {
  const now = clock.now();
  let ids = [];
  for (const status of ['active', 'idle']) {
    if (ids.length >= n) break;
    const rows = await store.listInstances({ owner: null, status, limit: n - ids.length });
    ids = ids.concat(rows.map((r) => r.instanceId));
  }
  await store.transaction(async (repo) => {
    for (const id of ids) {
      const instance = await repo.getLifecycle(id, { forUpdate: true });
      await repo.updateInstance(id, instance.version, {
        facts: { lastHeartbeatAt: now - (config.offlineAfterSeconds + 1) * 1000 },
        deadline: now - 1000,
      });
    }
  });
  return ids.length;
}

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
};

const counts = Object.fromEntries(await store.countInstancesByStatus(null));
const fleet = Object.values(counts).reduce((a, b) => a + b, 0);
// Whatever was already due when the server stopped (its own sweeper had been running) goes first.
const catchUp = await timedSweep();

const idle = [];
for (let i = 0; i < 1000; i++) idle.push((await timedSweep()).ms);

const due = [];
for (const [n, rounds] of [[100, Number(rounds100)], [1000, Number(rounds1000)]]) {
  const ticks = [];
  for (let r = 0; r < rounds; r++) {
    const made = await makeDue(n);
    const tick = await timedSweep();
    // A tick that changed fewer instances than were made due timed something else: say so, loudly.
    if (tick.changed !== made) throw new Error(`made ${made} instances due, the sweeper changed ${tick.changed}`);
    ticks.push({ due: made, changed: tick.changed, ms: tick.ms });
  }
  const mean = ticks.reduce((a, t) => a + t.ms, 0) / Math.max(1, ticks.length);
  due.push({ due: n, rounds: ticks.length, meanMs: mean, maxMs: Math.max(...ticks.map((t) => t.ms)), perInstanceMs: mean / n, ticks });
}

await server.close();
process.stdout.write(
  `${JSON.stringify({
    fleet,
    statuses: counts,
    catchUp,
    nothingDue: { ticks: idle.length, p50Ms: percentile(idle, 50), p99Ms: percentile(idle, 99), maxMs: Math.max(...idle) },
    due,
  })}\n`,
);
