import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';

const PROMTOOL = '/usr/bin/promtool';
const METRICS_TOKEN = 'metrics-scrape-token-for-tests';
const MIB = 1_048_576;

const twoGpus = (instance_id: number) => ({
  instance_id,
  process_count: 2,
  gpus: [
    { index: 0, uuid: 'GPU-aaaa', utilization_percent: 42, memory_used_mb: 1000, memory_total_mb: 81920, temperature_celsius: 61, power_watts: 250.5 },
    { index: 1, uuid: 'GPU-bbbb', utilization_percent: null, memory_used_mb: 10, memory_total_mb: 81920, temperature_celsius: null },
  ],
});
const idle = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 1, memory_used_mb: 10, memory_total_mb: 100 }, process_count: 0 });

/** `name{labels} value` lines of one metric, comments left out. */
function samples(body: string, name: string): string[] {
  return body.split('\n').filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

function runPromtool(body: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(body);
  });
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`GET /metrics (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      t = await new TestServer(async () => db.store, { DUMONT_METRICS_TOKEN: METRICS_TOKEN, DUMONT_IDLE_THRESHOLD_MINUTES: '1' }).start();
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    it('exports per-GPU gauges in base units, leaves unknown values out, and counts instances and heartbeats', async () => {
      const busy = await t.register(1, 'trainer');
      await t.register(2, 'spare');
      expect((await t.beat(busy, { ...twoGpus(1), hostname: 'trainer' })).status).toBe(200);
      t.clock.advance(30_000);
      expect((await t.beat(busy, { ...twoGpus(1), hostname: 'trainer' })).status).toBe(200);
      // A refused beat (bad token) is not counted.
      expect((await t.beat('dmt_not-a-token', twoGpus(1))).status).toBe(401);

      await t.request('GET', '/healthz');
      await t.request('GET', '/no/such/path/4711');
      const res = await t.request('GET', '/metrics');
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      const body = res.text;

      const gpu0 = 'instance_id="1",hostname="trainer",gpu="0",uuid="GPU-aaaa"';
      const gpu1 = 'instance_id="1",hostname="trainer",gpu="1",uuid="GPU-bbbb"';
      expect(samples(body, 'dumont_gpu_utilization_ratio')).toEqual([`dumont_gpu_utilization_ratio{${gpu0}} 0.42`]);
      expect(samples(body, 'dumont_gpu_memory_used_bytes')).toEqual([
        `dumont_gpu_memory_used_bytes{${gpu0}} ${1000 * MIB}`,
        `dumont_gpu_memory_used_bytes{${gpu1}} ${10 * MIB}`,
      ]);
      expect(samples(body, 'dumont_gpu_memory_total_bytes')).toHaveLength(2);
      expect(samples(body, 'dumont_gpu_temperature_celsius')).toEqual([`dumont_gpu_temperature_celsius{${gpu0}} 61`]);
      // Absent from the beat, not 0.
      expect(samples(body, 'dumont_gpu_power_watts')).toEqual([`dumont_gpu_power_watts{${gpu0}} 250.5`]);

      expect(samples(body, 'dumont_instances')).toEqual([
        'dumont_instances{status="active"} 1',
        'dumont_instances{status="idle"} 0',
        'dumont_instances{status="hibernating"} 0',
        'dumont_instances{status="hibernated"} 0',
        'dumont_instances{status="offline"} 1',
        'dumont_instances{status="waking"} 0',
      ]);
      expect(samples(body, 'dumont_heartbeats_total')).toEqual(['dumont_heartbeats_total 2']);
      expect(samples(body, 'dumont_hibernations_total')).toEqual(['dumont_hibernations_total 0']);
      expect(samples(body, 'dumont_usd_saved_total')).toEqual(['dumont_usd_saved_total 0']);
      expect(samples(body, 'dumont_hibernation_countdown_seconds')).toEqual([]);
      // Durations are labelled by route pattern, never by the raw URL.
      expect(body).toMatch(/dumont_http_request_duration_seconds_count\{method="POST",route="\/api\/v1\/agent\/status",status_code="200"\} 2/);
      expect(body).toMatch(/dumont_http_request_duration_seconds_count\{method="POST",route="\/api\/v1\/agent\/instances",status_code="201"\} 2/);
      expect(body).toMatch(/dumont_http_request_duration_seconds_count\{method="GET",route="\/healthz",status_code="200"\} 1/);
      expect(body).toMatch(/dumont_http_request_duration_seconds_count\{method="GET",route="unmatched",status_code="404"\} 1/);
      expect(body).not.toContain('4711');

      // The Prometheus project's own linter accepts the whole exposition.
      const lint = await runPromtool(body);
      expect(lint.output).toBe('');
      expect(lint.code).toBe(0);
    });

    it('exports instance labels as an info metric that promtool accepts', async () => {
      const labelled = { instance_id: 11, hostname: 'vision-1', labels: { team: 'vision', 'app.kind': 'notebook', 'app-kind': 'shadowed', spot: '' } };
      expect((await t.request('POST', '/api/v1/agent/instances', { body: labelled })).status).toBe(201);
      await t.register(12, 'plain');
      const body = (await t.request('GET', '/metrics')).text;
      // `app-kind` sorts before `app.kind`: it keeps label_app_kind; an instance without labels has no series.
      expect(samples(body, 'dumont_instance_labels')).toEqual(['dumont_instance_labels{instance_id="11",label_app_kind="shadowed",label_spot="",label_team="vision"} 1']);
      expect((await t.request('PATCH', '/api/v1/agent/instances/11', { body: { labels: { 'app-kind': null, team: null } } })).status).toBe(200);
      const after = (await t.request('GET', '/metrics')).text;
      expect(samples(after, 'dumont_instance_labels')).toEqual(['dumont_instance_labels{instance_id="11",label_app_kind="notebook",label_spot=""} 1']);
      const lint = await runPromtool(after);
      expect(lint.output).toBe('');
      expect(lint.code).toBe(0);
    });

    it('reports the seconds left of a scheduled hibernation', async () => {
      const token = await t.register(7, 'sleepy');
      for (let i = 0; i < 3; i++) {
        await t.beat(token, { ...idle(7), hostname: 'sleepy' });
        t.clock.advance(30_000);
      }
      const detail = (await t.request('GET', '/api/v1/agent/instances/7')).json;
      expect(detail.hibernation.hibernate_in_seconds).toBe(270);
      const body = (await t.request('GET', '/metrics')).text;
      expect(samples(body, 'dumont_hibernation_countdown_seconds')).toEqual(['dumont_hibernation_countdown_seconds{instance_id="7",hostname="sleepy"} 270']);
      expect(samples(body, 'dumont_instances')).toContain('dumont_instances{status="idle"} 1');
      // A seed agent's single aggregate is its GPU 0.
      expect(samples(body, 'dumont_gpu_utilization_ratio')).toEqual(['dumont_gpu_utilization_ratio{instance_id="7",hostname="sleepy",gpu="0",uuid=""} 0.01']);
      t.clock.advance(100_000);
      const later = (await t.request('GET', '/metrics')).text;
      expect(samples(later, 'dumont_hibernation_countdown_seconds')).toEqual(['dumont_hibernation_countdown_seconds{instance_id="7",hostname="sleepy"} 170']);
    });

    it('answers 401 without a valid credential, 403 to an owner key, 200 to the metrics token', async () => {
      const none = await t.request('GET', '/metrics', { token: null });
      expect(none.status).toBe(401);
      expect(none.json).toMatchObject({ error: 'unauthorized', field: 'authorization' });
      expect((await t.request('GET', '/metrics', { token: 'dmk_unknown' })).status).toBe(401);
      expect((await t.request('GET', '/metrics', { token: `${METRICS_TOKEN}x` })).status).toBe(401);
      // An agent token is a credential, but not one that may read the fleet.
      const agentToken = await t.register(3);
      expect((await t.request('GET', '/metrics', { token: agentToken })).status).toBe(403);

      const ownerKey = await createApiKey(t.server.store, 'alice', false, t.clock.now());
      const owner = await t.request('GET', '/metrics', { token: ownerKey });
      expect(owner.status).toBe(403);
      expect(owner.json).toMatchObject({ error: 'forbidden' });
      expect(owner.text).not.toContain('dumont_');

      const adminKey = await createApiKey(t.server.store, 'ops', true, t.clock.now());
      expect((await t.request('GET', '/metrics', { token: adminKey })).status).toBe(200);
      const scraped = await t.request('GET', '/metrics', { token: METRICS_TOKEN });
      expect(scraped.status).toBe(200);
      expect(scraped.text).toContain('dumont_instances{status="offline"} 1');
    });

    it('reports savings and hibernations after an instance hibernates', async () => {
      const registered = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 9, hostname: 'napper', price_per_hour: 2 } });
      expect(registered.status, registered.text).toBe(201);
      const token = registered.json.agent_token as string;
      const hibernated = await hibernate(t, token, 9);
      expect(hibernated).toBe('hibernated');
      t.clock.advance(3_600_000);
      const body = (await t.request('GET', '/metrics')).text;
      expect(samples(body, 'dumont_hibernations_total')).toEqual(['dumont_hibernations_total 1']);
      // Prometheus' base unit is the second: one hour hibernated on one GPU.
      expect(samples(body, 'dumont_hibernated_seconds_total')).toEqual(['dumont_hibernated_seconds_total 3600']);
      expect(samples(body, 'dumont_gpu_seconds_saved_total')).toEqual(['dumont_gpu_seconds_saved_total 3600']);
      expect(samples(body, 'dumont_usd_saved_total')).toEqual(['dumont_usd_saved_total 2']);
      expect(samples(body, 'dumont_instances')).toContain('dumont_instances{status="hibernated"} 1');
      // A hibernated machine sends nothing: its last numbers are stale and not exported.
      expect(samples(body, 'dumont_gpu_utilization_ratio')).toEqual([]);
    });
  });
}

/** Idle beats 30 s apart until one answer carries the hibernate command; the agent confirms it; returns the status. */
async function hibernate(t: TestServer, token: string, instanceId: number): Promise<string> {
  let command: { id: string; type: string } | undefined;
  for (let i = 0; i < 20 && !command; i++) {
    t.clock.advance(30_000);
    const beat = (await t.beat(token, { ...idle(instanceId), hostname: 'napper' })).json;
    command = (beat.commands as { id: string; type: string }[]).find((c) => c.type === 'hibernate');
  }
  if (!command) throw new Error('no hibernate command within 10 minutes of idle beats');
  await t.beat(token, { ...idle(instanceId), hostname: 'napper', command_results: [{ id: command.id, status: 'succeeded' }] });
  return (await t.request('GET', `/api/v1/agent/instances/${instanceId}`)).json.status;
}

describe.skipIf(existsSync(PROMTOOL))('promtool', () => {
  it('is installed (the lint check above needs it)', () => {
    if (process.env.CI === 'true') throw new Error(`${PROMTOOL} is missing; under CI=true the metrics lint must run`);
  });
});
