import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { loadConfig } from '../config.js';
import { HistoryStore, type HistorySample } from '../store/history.js';
import { testBackends } from '../test-support/backends.js';
import { ReplayService } from './replay-service.js';

const T0 = Date.parse('2026-11-02T08:00:00Z');
const S = 1000, MIN = 60 * S, H = 60 * MIN;
const N = Number(process.env.PROBE_N ?? 1000);
const backend = (await testBackends()).find((b) => b.name === (process.env.PROBE_BACKEND ?? 'sqlite'))!;
describe('perf', () => {
  it(`replay ${N} instances x 24h raw`, async () => {
    const db = await backend.open();
    const store = db.store;
    const history = new HistoryStore(store.kysely, store.dialect);
    let t = performance.now();
    for (let id = 1; id <= N; id++) {
      await store.insertInstance({ instanceId: id, owner: 'alice', agentTokenHash: `h${id}`, hostname: `g${id}`, registeredAt: T0, settings: { pricePerHour: 1 } });
      const rows: HistorySample[] = [];
      for (let at = T0 + id; at < T0 + 24 * H; at += 30 * S) rows.push({ instance_id: id, at, gpu_index: 0, utilization_percent: Math.floor((at - T0) / H) % 3 === 0 ? 50 : 0, memory_used_mb: 1, temperature_celsius: 1, power_watts: 1, process_count: 0, active_users: 0, last_activity_at: null, collector_error: 0 });
      await history.insertSamples(rows);
    }
    console.log('insert ms', Math.round(performance.now() - t));
    const clock = new ManualClock(T0 + 24 * H + MIN);
    const service = new ReplayService(store, history, clock, loadConfig({ DUMONT_HISTORY_RAW_HOURS: '25' }));
    let peak = 0;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().heapUsed)), 50);
    let lag = 0; let last = performance.now();
    const lagTimer = setInterval(() => { const now = performance.now(); lag = Math.max(lag, now - last - 10); last = now; }, 10);
    const heap0 = process.memoryUsage().heapUsed;
    for (const thresholds of [[30], [10, 20, 30, 60]]) {
      t = performance.now(); lag = 0; last = performance.now();
      const r = await service.replay({ kind: 'operator', owner: 'alice', admin: false }, { thresholdMinutes: thresholds, from: T0, to: T0 + 24 * H });
      console.log('thresholds', thresholds.join(','), 'replay ms', Math.round(performance.now() - t), 'hibernations', r.policies.map((p) => p.hibernations).join(','), 'max event-loop lag ms', Math.round(lag));
    }
    clearInterval(timer); clearInterval(lagTimer);
    console.log('heap before MB', Math.round(heap0 / 1e6), 'peak MB', Math.round(peak / 1e6));
    await store.close(); await db.dispose();
  }, 600_000);
});
