import { join } from 'node:path';
import { encodeCursor, encodeInstanceCursor } from '../../packages/server/dist/fleet/cursor.js';
import { newInstanceRow } from '../../packages/server/dist/store/schema.js';
import { SqliteStore } from '../../packages/server/dist/store/sqlite-store.js';
import { ApiClient } from '../../packages/simulator/dist/index.js';
import { startDumont, tempDir } from './targets.mjs';

const FIRST_ID = 20_000_000;
const PAGE = 100;
const SORT_KEYS = ['instance_id', 'hostname', 'last_heartbeat', 'idle_seconds', 'hibernate_in_seconds', 'gpu_utilization'];
const MODELS = ['a100', 'h100', 'l40s', 'rtx4090'];
const REGIONS = ['us-east', 'us-west', 'eu-central', 'ap-south'];
const MINUTE = 60_000;
const TEAMS = Array.from({ length: 20 }, (_, i) => `t${i}`);
// Mostly notebooks: training and inference are the rarer kinds, as on a shared research fleet.
const KINDS = [
  ['notebook', 0.6],
  ['training', 0.3],
  ['inference', 0.1],
];
/** Share of the fleet labelled `tier=gold`: a few hundred at 100k, the sparse selector. */
const GOLD_SHARE = 0.003;

/** A deterministic generator: the same fleet on every run. */
function random(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A fleet as it looks after a while: most instances beating (active or idle, a share counting down to a
 * hibernation), some hibernated, offline or never seen (no hostname, no beat), 1–8 GPUs each with
 * temperatures, a few with one GPU that reported none. Only stored facts: no deadlines, so the
 * server's sweeper leaves the rows alone while they are listed.
 */
export function fleetRows(size, now) {
  const next = random(42);
  const pick = (values) => values[Math.floor(next() * values.length)];
  const rows = [];
  for (let i = 0; i < size; i++) {
    const instance_id = FIRST_ID + i;
    const r = next();
    const status = r < 0.5 ? 'active' : r < 0.75 ? 'idle' : r < 0.77 ? 'hibernating' : r < 0.85 ? 'hibernated' : 'offline';
    const neverSeen = status === 'offline' && next() < 0.3;
    const beating = status === 'active' || status === 'idle' || status === 'hibernating';
    const lastBeat = neverSeen ? null : beating ? now - Math.floor(next() * 30_000) : now - Math.floor(next() * 3 * 24 * 60 * MINUTE);
    const idleSince = status === 'idle' && lastBeat !== null ? lastBeat - Math.floor(next() * 120 * MINUTE) : null;
    const gpuCount = neverSeen ? 0 : pick([1, 1, 2, 4, 8, 8]);
    const busy = status === 'active';
    const gpus = Array.from({ length: gpuCount }, (_, index) => ({
      index,
      uuid: `GPU-${instance_id.toString(16)}-${index}`,
      name: 'NVIDIA A100-SXM4-80GB',
      utilization_percent: busy ? 30 + Math.floor(next() * 71) : Math.floor(next() * 3),
      memory_used_mb: busy ? 20_000 + Math.floor(next() * 60_000) : 500,
      memory_total_mb: 81_920,
      // A few hosts with one GPU whose temperature the driver did not report.
      temperature_celsius: index === 1 && next() < 0.05 ? null : 30 + Math.floor(next() * 50),
      power_watts: busy ? 250 + Math.floor(next() * 150) : 60,
    }));
    const beatKnown = beating && gpuCount > 0;
    const maxOf = (key) => (gpus.every((g) => typeof g[key] === 'number') && gpus.length ? Math.max(...gpus.map((g) => g[key])) : null);
    const sumOf = (key) => (gpus.length ? gpus.reduce((a, g) => a + g[key], 0) : null);
    rows.push(
      newInstanceRow({
        instance_id,
        owner: `team-${i % 7}`,
        agent_token_hash: `bench-${instance_id}`,
        hostname: neverSeen && next() < 0.5 ? null : `${pick(MODELS)}-${pick(REGIONS)}-${String(i).padStart(6, '0')}`,
        registered_at: now - 30 * 24 * 60 * MINUTE,
        status,
        last_heartbeat_at: lastBeat,
        online_since: beating ? lastBeat - 60 * MINUTE : null,
        idle_since: idleSince,
        scheduled_at: idleSince !== null && next() < 0.6 ? idleSince + 30 * MINUTE : null,
        offline_since: status === 'offline' && lastBeat !== null ? lastBeat + 2 * MINUTE : null,
        heartbeat_count: neverSeen ? 0 : 100,
        utilization_percent: beatKnown ? maxOf('utilization_percent') : null,
        memory_used_mb: beatKnown ? sumOf('memory_used_mb') : null,
        memory_total_mb: beatKnown ? sumOf('memory_total_mb') : null,
        temperature_celsius: beatKnown ? maxOf('temperature_celsius') : null,
        power_watts: beatKnown ? sumOf('power_watts') : null,
        gpus_json: JSON.stringify(gpus),
        gpu_count: gpuCount,
        agent_version: neverSeen ? null : '0.4.0',
      }),
    );
  }
  return rows;
}

/**
 * Labels per row, from their own generator so that the rows stay those of `fleetRows`: every instance a
 * `team` (one of 20, ~5 % each) and a `kind` (skewed), a few hundred `tier=gold` spread over the id range.
 */
export function fleetLabels(rows) {
  const next = random(7);
  return rows.map(() => {
    const team = TEAMS[Math.floor(next() * TEAMS.length)];
    let r = next();
    const kind = KINDS.find(([, share]) => (r -= share) < 0)?.[0] ?? KINDS[0][0];
    return next() < GOLD_SHARE ? { team, kind, tier: 'gold' } : { team, kind };
  });
}

/** What each sort orders by (kysely-repository.ts ORDER_KEY_SQL), to find the middle row of each. */
function orderValue(row, key) {
  switch (key) {
    case 'instance_id':
      return row.instance_id;
    case 'hostname':
      return row.hostname;
    case 'last_heartbeat':
      return row.last_heartbeat_at;
    case 'gpu_utilization':
      return row.utilization_percent;
    case 'idle_seconds':
      return row.idle_since === null || row.last_heartbeat_at === null ? 0 : Math.max(0, Math.floor((row.last_heartbeat_at - row.idle_since) / 1000));
    case 'hibernate_in_seconds':
      return row.status === 'hibernating' ? 0 : row.scheduled_at;
  }
}

/** The cursor that starts the page in the middle of `rows` in this sort (nulls last, ties by id). */
function middleCursor(rows, sort) {
  const key = sort.replace(/^-/, '');
  const sign = sort.startsWith('-') ? -1 : 1;
  const ordered = rows
    .map((row) => ({ value: orderValue(row, key), id: row.instance_id }))
    .sort((a, b) => {
      if (a.value === null || b.value === null) {
        if (a.value !== b.value) return a.value === null ? 1 : -1;
      } else if (a.value !== b.value) return sign * (a.value < b.value ? -1 : 1);
      return sign * (a.id - b.id);
    });
  const middle = ordered[Math.floor(ordered.length / 2)];
  return encodeInstanceCursor(sort, { value: middle.value, instanceId: middle.id });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

async function timeRequests(client, adminKey, path, requests) {
  const latencies = [];
  let rows = null;
  for (let i = 0; i < 2; i++) await client.request('GET', path, adminKey);
  for (let i = 0; i < requests; i++) {
    const res = await client.request('GET', path, adminKey);
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(res.json).slice(0, 300)}`);
    latencies.push(res.latencyMs);
    rows ??= res.json.instances.length;
  }
  latencies.sort((a, b) => a - b);
  return {
    requests,
    rows,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
    max: latencies[latencies.length - 1],
  };
}

/**
 * `GET /instances` on a large SQLite fleet, for every sort and for searches: the first page and a page
 * from the middle (keyset cursor), each timed over sequential requests on one keep-alive connection,
 * on a quiet server. The fleet is written through the store layer (registering 100k instances through
 * the API takes minutes and is what the `fleet` target measures).
 */
export async function listScenario({ size, requests, adminKey, say, cpuProfDir }) {
  const data = tempDir('list');
  const file = join(data.dir, 'dumont.db');
  try {
    const now = Date.now();
    const rows = fleetRows(size, now);
    const labels = fleetLabels(rows);
    say(`list: writing ${size} instances (with labels) through the store…`);
    const started = performance.now();
    const store = await SqliteStore.open(file);
    for (let i = 0; i < rows.length; i += 2000) {
      await store.transaction(async (repo) => {
        for (let j = i; j < Math.min(i + 2000, rows.length); j++) {
          await repo.insertInstanceRow(rows[j]);
          await repo.setLabels(rows[j].instance_id, labels[j]);
        }
      });
    }
    await store.close();
    const fillSeconds = (performance.now() - started) / 1000;
    const server = await startDumont({ databaseUrl: `sqlite:${file}`, adminKey, cpuProfDir });
    const client = new ApiClient(server.url, { maxSockets: 1 });
    const measurements = [];
    try {
      const measure = async (what, query) => {
        const path = `/api/v1/agent/instances?limit=${PAGE}${query}`;
        const result = await timeRequests(client, adminKey, path, requests);
        measurements.push({ what, query, ...result });
        say(`list: ${what}: p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms`);
      };
      for (const key of SORT_KEYS) {
        for (const sort of [key, `-${key}`]) {
          await measure(`sort=${sort}, first page`, `&sort=${sort}`);
          await measure(`sort=${sort}, middle page`, `&sort=${sort}&cursor=${middleCursor(rows, sort)}`);
        }
      }
      const text = 'h100-eu';
      const matching = rows.filter((r) => r.hostname !== null && r.hostname.includes(text));
      await measure(`q=${text} (${matching.length} match), first page`, `&q=${text}`);
      await measure(`q=${text}, middle page`, `&q=${text}&cursor=${encodeCursor(matching[Math.floor(matching.length / 2)].instance_id)}`);
      await measure(`q=${text}&sort=-idle_seconds, first page`, `&q=${text}&sort=-idle_seconds`);
      await measure(`q=${text}&status=idle, first page`, `&q=${text}&status=idle`);
      const digits = String(FIRST_ID + Math.floor(size / 3));
      await measure(`q=${digits} (an instance id), first page`, `&q=${digits}`);
      await measure('status=idle&sort=-idle_seconds, first page', '&status=idle&sort=-idle_seconds');
      // Label selectors: one correlated `exists` per term. The sparse one is the keyset page's worst case,
      // walking many rows to fill a page; every selector page that does not fit on one page also counts.
      const selectors = [
        ['team=t7', (l) => l.team === 't7'],
        ['team=t7&label=kind=training', (l) => l.team === 't7' && l.kind === 'training'],
        ['tier=gold', (l) => l.tier === 'gold'],
      ];
      for (const [selector, matches] of selectors) {
        const selected = rows.filter((_, i) => matches(labels[i]));
        for (const sort of ['instance_id', 'hostname']) {
          const sorted = sort === 'instance_id' ? '' : `&sort=${sort}`;
          const query = `&label=${selector}${sorted}`;
          await measure(`label=${selector}${sorted} (${selected.length} match), first page`, query);
          await measure(`label=${selector}${sorted}, middle page`, `${query}&cursor=${middleCursor(selected, sort)}`);
        }
      }
    } finally {
      client.close();
      await server.stop();
    }
    return { size, page: PAGE, requests, fillSeconds, measurements };
  } finally {
    data.remove();
  }
}
