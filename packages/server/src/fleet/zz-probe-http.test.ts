import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import { T0, TestServer } from '../test-support/test-server.js';
import { HistoryStore, type HistorySample } from '../store/history.js';

const S = 1000, MIN = 60 * S, H = 60 * MIN;
const iso = (ms: number) => new Date(ms).toISOString();
const backend = (await testBackends()).find((b) => b.name === 'sqlite')!;
describe('http junk', () => {
  let t: TestServer; let db: any;
  beforeAll(async () => {
    db = await backend.open();
    t = await new TestServer(async () => db.store, { DUMONT_IDLE_THRESHOLD_MINUTES: '120' }).start();
    const res = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 7, hostname: 'gpu-7', price_per_hour: 1.5 } });
    expect(res.status).toBe(201);
    // 24 h of raw beats, idle with a busy beat every 2 h.
    const rows: HistorySample[] = [];
    for (let at = T0; at < T0 + 24 * H; at += 30 * S) rows.push({ instance_id: 7, at, gpu_index: 0, utilization_percent: (at - T0) % (2 * H) === 0 ? 90 : 0, memory_used_mb: 1, temperature_celsius: 1, power_watts: 1, process_count: 0, active_users: 0, last_activity_at: null, collector_error: 0 });
    await new HistoryStore(t.server.store.kysely, t.server.store.dialect).insertSamples(rows);
    t.clock.set(T0 + 24 * H + MIN);
  });
  afterAll(async () => { await t.close(); await db.dispose(); });
  const q = async (query: string) => { const s = performance.now(); const r = await t.request('GET', `/api/v1/agent/replay?${query}`); return { status: r.status, ms: Math.round(performance.now() - s), body: r.text.slice(0, 300), json: r.json }; };

  it('junk', async () => {
    const cases = [
      'threshold_minutes=10',
      'threshold_minutes=0.0001',
      'threshold_minutes=0.0000000001',
      'threshold_minutes=99999999999999999999999',
      'threshold_minutes=10&utilization_percent=NaN',
      'threshold_minutes=10&utilization_percent=Infinity',
      'threshold_minutes=10&warning_seconds=Infinity',
      'threshold_minutes=10&warning_seconds=1e308',
      'threshold_minutes=10&warning_seconds=-0',
      'threshold_minutes=10&regret_minutes=-0',
      'threshold_minutes=10&regret_minutes=Infinity',
      'threshold_minutes=10&regret_minutes=1e400',
      'threshold_minutes=10&warning_seconds=0x10',
      'threshold_minutes=10&utilization_percent=',
      'threshold_minutes=10&utilization_percent=5&utilization_percent=6',
      'threshold_minutes=10&threshold_minutes=20',
      'threshold_minutes=10&instance=7&instance=7',
      'threshold_minutes=10&instance=7,7,7',
      'threshold_minutes=10&instance=0',
      'threshold_minutes=10&instance=99999999999999999999',
      `threshold_minutes=10&to=${encodeURIComponent('9999-12-31T23:59:59Z')}`,
      `threshold_minutes=10&from=${encodeURIComponent(iso(T0))}&to=${encodeURIComponent('9999-12-31T23:59:59Z')}`,
      `threshold_minutes=10&from=${encodeURIComponent(iso(T0))}&to=${encodeURIComponent('+275760-09-13T00:00:00Z')}`,
      `threshold_minutes=10&from=${encodeURIComponent('2026-11-02T08:00:00.123456789Z')}`,
      `threshold_minutes=10&from=${encodeURIComponent('2026-11-02T08:00:00+14:00')}`,
      `threshold_minutes=10&from=${encodeURIComponent('2026-13-45T99:00:00Z')}`,
      `threshold_minutes=10&from=${encodeURIComponent(iso(T0 + 5 * H))}&to=${encodeURIComponent(iso(T0 + 5 * H + 1))}`,
      `threshold_minutes=10&from=${encodeURIComponent('0000-01-01T00:00:00Z')}`,
      'threshold_minutes=' + Array(1024).fill('1').join(','),
      'threshold_minutes=' + Array(400).fill('0.01').join(','),
      'instance=' + Array(1024).fill('7').join(',') + '&threshold_minutes=1',
    ];
    for (const c of cases) {
      const r = await q(c);
      console.log(r.status, r.ms + 'ms', c.slice(0, 110), '=>', r.status === 200 ? JSON.stringify({ from: r.json.from, to: r.json.to, raw_from: r.json.raw_from, p: r.json.policies.slice(0, 1).map((p: any) => ({ t: p.threshold_minutes, w: p.warning_seconds, h: p.hibernations, g: p.gpu_hours_saved, u: p.usd_saved, r: p.regrets.length })), n: r.json.policies.length }) : r.body.slice(0, 200));
    }
  }, 120_000);
});
