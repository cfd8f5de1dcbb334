import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';

// The seed's examples, verbatim.
const SEED_FULL_HEARTBEAT = {
  instance_id: 456789,
  hostname: 'gpu-001',
  timestamp: '2024-12-20T15:30:00Z',
  gpu_metrics: { utilization_percent: 85, memory_used_mb: 18432, memory_total_mb: 24576, temperature_celsius: 72, power_watts: 320 },
  process_count: 3,
  active_users: 1,
  last_activity: '2024-12-20T15:29:45Z',
  agent_version: '1.2.0',
};
const SEED_CURL_HEARTBEAT = `{
    "instance_id": 456789,
    "hostname": "gpu-001",
    "timestamp": "2024-12-20T15:30:00Z",
    "gpu_metrics": {
      "utilization_percent": 85,
      "memory_used_mb": 18432,
      "memory_total_mb": 24576
    }
  }`;

const idleBeat = { instance_id: 456789, gpu_metrics: { utilization_percent: 0, memory_used_mb: 100, memory_total_mb: 24576 }, process_count: 0 };

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`POST /api/v1/agent/status (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    let token: string;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      t = await new TestServer(async () => db.store).start();
      token = await t.register(456789);
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    it("accepts the seed's full example and answers exactly the seed's response shape", async () => {
      const res = await t.request('POST', '/api/v1/agent/status', { token, body: SEED_FULL_HEARTBEAT });
      expect(res.status).toBe(200);
      expect(res.json).toEqual({ success: true, commands: [], hibernate_in_seconds: null, next_heartbeat_in: 30 });
      const detail = (await t.request('GET', '/api/v1/agent/instances/456789')).json;
      expect(detail).toMatchObject({
        instance_id: 456789,
        hostname: 'gpu-001',
        status: 'active',
        heartbeat_count: 1,
        gpu_metrics: SEED_FULL_HEARTBEAT.gpu_metrics,
        activity: { last_activity: '2024-12-20T15:29:45Z', idle_seconds: 0, process_count: 3, active_users: 1 },
        hibernation: { enabled: true, threshold_minutes: 30, scheduled: false, scheduled_at: null },
        agent_version: '1.2.0',
        agent_timestamp: '2024-12-20T15:30:00Z',
      });
    });

    it("accepts the seed's minimal curl body; absent metrics are unknown (null), never 0", async () => {
      const res = await t.request('POST', '/api/v1/agent/status', { token, body: SEED_CURL_HEARTBEAT });
      expect(res.status).toBe(200);
      const detail = (await t.request('GET', '/api/v1/agent/instances/456789')).json;
      expect(detail.gpu_metrics).toEqual({ utilization_percent: 85, memory_used_mb: 18432, memory_total_mb: 24576, temperature_celsius: null, power_watts: null });
      expect(detail.activity).toMatchObject({ process_count: null, active_users: null, last_activity: null });
    });

    it('a beat with utilization null or missing never makes the instance idle', async () => {
      for (let i = 0; i < 5; i++) {
        await t.beat(token, { instance_id: 456789, gpu_metrics: { utilization_percent: null }, process_count: 0 });
        t.clock.advance(30_000);
      }
      await t.beat(token, { instance_id: 456789, gpu_metrics: {}, process_count: 0 });
      const detail = (await t.request('GET', '/api/v1/agent/instances/456789')).json;
      expect(detail.status).toBe('active');
      expect(detail.gpu_metrics.utilization_percent).toBeNull();
    });

    it('multi-GPU: gpu_metrics is the aggregate, and one busy GPU keeps the host active', async () => {
      const gpus = Array.from({ length: 8 }, (_, index) => ({
        index,
        uuid: `GPU-${index}`,
        name: 'NVIDIA H100 80GB HBM3',
        utilization_percent: index === 5 ? 92 : 0,
        memory_used_mb: 1000,
        memory_total_mb: 81559,
        temperature_celsius: 30 + index,
        power_watts: 70,
      }));
      const res = await t.beat(token, { instance_id: 456789, gpu_metrics: { utilization_percent: 11.5 }, gpus, process_count: 0 });
      expect(res.status).toBe(200);
      const detail = (await t.request('GET', '/api/v1/agent/instances/456789')).json;
      expect(detail.status).toBe('active');
      expect(detail.gpu_metrics).toEqual({ utilization_percent: 92, memory_used_mb: 8000, memory_total_mb: 652472, temperature_celsius: 37, power_watts: 560 });
      expect(detail.gpus).toHaveLength(8);
      const list = (await t.request('GET', '/api/v1/agent/instances')).json;
      expect(list.instances[0]).toMatchObject({ gpu_utilization: 92, gpu_count: 8, memory_used_percent: 1 });
    });

    it('counts down in every beat once scheduled, then delivers the hibernate command until acknowledged', async () => {
      await t.request('PATCH', '/api/v1/agent/instances/456789/hibernation', { body: { threshold_minutes: 1 } });
      const beats = [];
      for (let i = 0; i <= 2 + 10; i++) {
        beats.push((await t.beat(token, idleBeat)).json);
        t.clock.advance(30_000);
      }
      // 0 s, 30 s: idle but below 1 min; 60 s: scheduled 300 s later; the countdown falls by 30 each beat.
      expect(beats.slice(0, 2).map((b) => b.hibernate_in_seconds)).toEqual([null, null]);
      expect(beats.slice(2, 12).map((b) => b.hibernate_in_seconds)).toEqual([300, 270, 240, 210, 180, 150, 120, 90, 60, 30]);
      const hibernate = beats[12];
      expect(hibernate.hibernate_in_seconds).toBe(0);
      expect(hibernate.commands).toHaveLength(1);
      expect(hibernate.commands[0]).toMatchObject({ type: 'hibernate', args: {} });
      expect(Object.keys(hibernate.commands[0]).sort()).toEqual(['args', 'id', 'issued_at', 'type']);
      const id = hibernate.commands[0].id;

      // Redelivered until a result arrives…
      const again = (await t.beat(token, idleBeat)).json;
      expect(again.commands.map((c: { id: string }) => c.id)).toEqual([id]);
      // …then never again; the same result twice is harmless.
      t.clock.advance(30_000);
      const acked = await t.beat(token, { ...idleBeat, command_results: [{ id, status: 'succeeded', detail: 'checkpoint saved' }] });
      expect(acked.json.commands).toEqual([]);
      const repeat = await t.beat(token, { ...idleBeat, command_results: [{ id, status: 'succeeded', detail: 'checkpoint saved' }] });
      expect(repeat.status).toBe(200);
      expect(repeat.json.commands).toEqual([]);
      // Hibernated once, after the agent confirmed; the copy of the result changed nothing.
      expect((await t.eventTypes(456789)).filter((e) => e === 'hibernated')).toHaveLength(1);
      const commands = (await t.request('GET', '/api/v1/agent/instances/456789/commands')).json.commands;
      expect(commands[0]).toMatchObject({ id, type: 'hibernate', state: 'succeeded', detail: 'checkpoint saved', issued_by: 'policy' });
    });

    it('beats racing operator writes lose neither side', async () => {
      for (let i = 1; i <= 15; i++) {
        t.clock.advance(1000);
        const [beat, keepAlive] = await Promise.all([
          t.beat(token, { ...idleBeat, gpu_metrics: { utilization_percent: 50 + i }, process_count: 1 }),
          t.request('POST', `/api/v1/agent/instances/456789/keep-alive?minutes=${i}`),
        ]);
        expect([beat.status, keepAlive.status]).toEqual([200, 200]);
        const detail = (await t.request('GET', '/api/v1/agent/instances/456789')).json;
        expect(detail.gpu_metrics.utilization_percent).toBe(50 + i);
        expect(detail.heartbeat_count).toBe(i);
        expect(detail.postponed_until).toBe(new Date(t.clock.now() + i * 60_000).toISOString());
      }
    });

    it('an out-of-order (older) beat never rolls state back', async () => {
      await t.beat(token, { ...idleBeat, gpu_metrics: { utilization_percent: 90 }, process_count: 2 });
      const newer = new Date(t.clock.now()).toISOString();
      t.clock.advance(5_000);
      const stale = await t.request('POST', '/api/v1/agent/status', {
        token,
        body: { ...idleBeat, hostname: 'gpu-001', timestamp: new Date(t.clock.now() - 60_000).toISOString() },
      });
      expect(stale.status).toBe(200);
      const detail = (await t.request('GET', '/api/v1/agent/instances/456789')).json;
      expect(detail).toMatchObject({ status: 'active', heartbeat_count: 1, agent_timestamp: newer });
      expect(detail.gpu_metrics.utilization_percent).toBe(90);
    });

    it('rejects a token for another instance (403), an unknown token (401) and a missing one (401)', async () => {
      const other = await t.register(1001);
      const forOther = await t.beat(other, idleBeat);
      expect(forOther.status).toBe(403);
      expect(forOther.json).toMatchObject({ error: 'forbidden', field: 'instance_id' });
      expect((await t.beat('dmt_not-a-token', idleBeat)).status).toBe(401);
      const none = await t.request('POST', '/api/v1/agent/status', { token: null, body: SEED_FULL_HEARTBEAT });
      expect(none.status).toBe(401);
      expect(none.json.error).toBe('unauthorized');
      // An operator key is not an agent token.
      expect((await t.beat(t.adminKey, idleBeat)).status).toBe(401);
      // Re-registering rotates: the old token stops working.
      const rotated = await t.register(456789);
      expect((await t.beat(token, idleBeat)).status).toBe(401);
      expect((await t.beat(rotated, idleBeat)).status).toBe(200);
    });
  });
}
