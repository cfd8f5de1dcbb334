import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SqliteStore } from '../store/sqlite-store.js';
import { TestServer } from '../test-support/test-server.js';

const valid = {
  instance_id: 42,
  hostname: 'gpu-001',
  timestamp: '2026-03-01T12:00:00Z',
  gpu_metrics: { utilization_percent: 50, memory_used_mb: 1, memory_total_mb: 2 },
  process_count: 1,
};

describe('bad input: a 4xx JSON error naming the field, never a 5xx, never a changed state', () => {
  let t: TestServer;
  let token: string;
  beforeAll(async () => {
    t = await new TestServer(() => SqliteStore.open(':memory:')).start();
    token = await t.register(42);
    expect((await t.request('POST', '/api/v1/agent/status', { token, body: valid })).status).toBe(200);
  });
  afterAll(() => t.close());

  const cases: [string, unknown, string][] = [
    ['missing instance_id', { ...valid, instance_id: undefined }, 'instance_id'],
    ['instance_id as text', { ...valid, instance_id: '42' }, 'instance_id'],
    ['fractional instance_id', { ...valid, instance_id: 42.5 }, 'instance_id'],
    ['missing hostname', { ...valid, hostname: undefined }, 'hostname'],
    ['empty hostname', { ...valid, hostname: '' }, 'hostname'],
    ['timestamp not a date', { ...valid, timestamp: 'yesterday' }, 'timestamp'],
    ['utilization above 100', { ...valid, gpu_metrics: { utilization_percent: 101 } }, 'gpu_metrics.utilization_percent'],
    ['utilization negative', { ...valid, gpu_metrics: { utilization_percent: -1 } }, 'gpu_metrics.utilization_percent'],
    ['utilization as text', { ...valid, gpu_metrics: { utilization_percent: '85' } }, 'gpu_metrics.utilization_percent'],
    ['negative memory', { ...valid, gpu_metrics: { memory_used_mb: -3 } }, 'gpu_metrics.memory_used_mb'],
    ['process_count fractional', { ...valid, process_count: 1.5 }, 'process_count'],
    ['gpus not a list', { ...valid, gpus: {} }, 'gpus'],
    ['gpu without index', { ...valid, gpus: [{ utilization_percent: 3 }] }, 'gpus.0.index'],
    ['command result with a bad status', { ...valid, command_results: [{ id: 'x', status: 'done' }] }, 'command_results.0.status'],
    ['body is a list', [valid], 'body'],
  ];
  for (const [name, body, field] of cases) {
    it(`${name} → 400 field ${field}`, async () => {
      const res = await t.request('POST', '/api/v1/agent/status', { token, body });
      expect(res.status).toBe(400);
      expect(res.json).toMatchObject({ error: 'invalid_request', field });
      expect(res.json.message).toContain(field);
    });
  }

  it('malformed JSON → 400 field body; empty body → 400', async () => {
    const res = await t.request('POST', '/api/v1/agent/status', { token, body: '{"instance_id": 42,' });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ error: 'invalid_request', field: 'body' });
    const empty = await t.request('POST', '/api/v1/agent/status', { token, body: '' , headers: { 'content-type': 'application/json' } });
    expect(empty.status).toBe(400);
  });

  it('a body over 64 KiB → 413', async () => {
    const res = await t.request('POST', '/api/v1/agent/status', { token, body: { ...valid, hostname: 'x'.repeat(70 * 1024) } });
    expect(res.status).toBe(413);
    expect(res.json.error).toBe('payload_too_large');
  });

  it('a body that is not JSON → 415', async () => {
    const res = await t.request('POST', '/api/v1/agent/status', { token, body: 'instance_id=42', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(res.status).toBe(415);
    expect(res.json.error).toBe('unsupported_media_type');
  });

  it('bad path and query parameters name the field', async () => {
    const path = await t.request('GET', '/api/v1/agent/instances/abc');
    expect(path.status).toBe(400);
    expect(path.json.field).toBe('instance_id');
    const limit = await t.request('GET', '/api/v1/agent/instances?limit=1001');
    expect(limit.json).toMatchObject({ error: 'invalid_request', field: 'limit' });
    const status = await t.request('GET', '/api/v1/agent/instances?status=sleeping');
    expect(status.json.field).toBe('status');
    const cursor = await t.request('GET', '/api/v1/agent/instances?cursor=garbage');
    expect(cursor.json).toMatchObject({ error: 'invalid_request', field: 'cursor' });
    const register = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 0 } });
    expect(register.json.field).toBe('instance_id');
  });

  it('unknown routes → 404 JSON', async () => {
    const res = await t.request('GET', '/api/v1/nothing');
    expect(res.status).toBe(404);
    expect(res.json.error).toBe('not_found');
  });

  it('an agent token on an operator endpoint → 403', async () => {
    const res = await t.request('GET', '/api/v1/agent/instances', { token });
    expect(res.status).toBe(403);
  });

  it('random bodies never produce a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.anything(),
          fc.record({ instance_id: fc.anything(), hostname: fc.anything(), timestamp: fc.anything(), gpu_metrics: fc.anything() }),
          fc.record({ ...Object.fromEntries(Object.keys(valid).map((k) => [k, fc.constant((valid as any)[k])])), gpu_metrics: fc.dictionary(fc.string(), fc.anything()) }),
        ),
        async (body) => {
          if (JSON.stringify(body) === undefined) return;
          const res = await t.request('POST', '/api/v1/agent/status', { token, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
          expect(res.status).toBeLessThan(500);
          if (res.status !== 200) expect(res.json.error).toBeTypeOf('string');
        },
      ),
      { numRuns: 150 },
    );
  });

  it('an invalid beat leaves the stored state exactly as it was', async () => {
    const before = (await t.request('GET', '/api/v1/agent/instances/42')).json;
    await t.request('POST', '/api/v1/agent/status', { token, body: { ...valid, gpu_metrics: { utilization_percent: 0 }, process_count: -1 } });
    expect((await t.request('GET', '/api/v1/agent/instances/42')).json).toEqual(before);
  });
});

describe('limits and health', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await new TestServer(() => SqliteStore.open(':memory:'), { DUMONT_RATE_LIMIT_PER_MINUTE: '5' }).start();
  });
  afterAll(() => t.close());

  it('rate-limits per credential with 429 and Retry-After; other credentials are unaffected', async () => {
    const statuses = [];
    for (let i = 0; i < 7; i++) statuses.push((await t.request('GET', '/api/v1/agent/instances')).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    const limited = await t.request('GET', '/api/v1/agent/instances');
    expect(limited.json.error).toBe('rate_limited');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    const other = await t.request('GET', '/api/v1/agent/instances', { token: 'dmk_someone_else' });
    expect(other.status).toBe(401);
  });

  it('GET /healthz answers 200 while the store is reachable, 503 when not', async () => {
    expect((await t.request('GET', '/healthz', { token: null })).json).toEqual({ status: 'ok' });
    await t.server.store.close();
    const down = await t.request('GET', '/healthz', { token: null });
    expect(down.status).toBe(503);
    expect(down.json.error).toBe('unavailable');
  });

  it('serves its OpenAPI description', async () => {
    const res = await t.request('GET', '/openapi.json', { token: null });
    expect(res.status).toBe(200);
    expect(Object.keys(res.json.paths)).toContain('/api/v1/agent/status');
  });
});
