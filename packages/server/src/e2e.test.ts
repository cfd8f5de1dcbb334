import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from './test-support/server-process.js';

/**
 * The whole lifecycle against the real server process, in real time, with fractional durations:
 * a client posting idle beats ends with a hibernate command and, after its result, `hibernated`.
 */
describe('end to end: idle beats → hibernate command → hibernated', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServerProcess({
      env: {
        DUMONT_IDLE_THRESHOLD_MINUTES: '0.01', // 0.6 s
        DUMONT_HIBERNATION_WARNING_SECONDS: '1',
        DUMONT_HEARTBEAT_INTERVAL_SECONDS: '0.1',
        DUMONT_OFFLINE_AFTER_SECONDS: '5',
        DUMONT_SWEEP_INTERVAL_MS: '50',
      },
    });
  });
  afterAll(() => server?.stop());

  const api = async (method: string, path: string, token: string, body?: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, json: (await res.json()) as any };
  };

  it('runs the lifecycle in seconds with the full event trail', async () => {
    const registered = await api('POST', '/api/v1/agent/instances', server.adminKey, { instance_id: 777, hostname: 'e2e' });
    expect(registered.status).toBe(201);
    const token = registered.json.agent_token as string;
    const beat = (extra: Record<string, unknown> = {}) =>
      api('POST', '/api/v1/agent/status', token, {
        instance_id: 777,
        hostname: 'e2e',
        timestamp: new Date().toISOString(),
        gpu_metrics: { utilization_percent: 0, memory_used_mb: 10, memory_total_mb: 24576 },
        process_count: 0,
        ...extra,
      });

    const countdowns: number[] = [];
    let command: { id: string; type: string } | undefined;
    const deadline = Date.now() + 15_000;
    while (!command && Date.now() < deadline) {
      const res = await beat();
      expect(res.status).toBe(200);
      if (res.json.hibernate_in_seconds !== null) countdowns.push(res.json.hibernate_in_seconds);
      command = res.json.commands.find((c: { type: string }) => c.type === 'hibernate');
      await new Promise((r) => setTimeout(r, res.json.next_heartbeat_in * 1000));
    }
    expect(command, 'a hibernate command arrived').toBeDefined();
    expect(countdowns.length).toBeGreaterThan(1);
    expect(countdowns[0]).toBe(1);
    expect((await api('GET', '/api/v1/agent/instances/777', server.adminKey)).json.status).toBe('hibernating');

    const ack = await beat({ command_results: [{ id: command!.id, status: 'succeeded', detail: 'state saved' }] });
    expect(ack.json.commands).toEqual([]);
    const detail = (await api('GET', '/api/v1/agent/instances/777', server.adminKey)).json;
    expect(detail.status).toBe('hibernated');

    const events = (await api('GET', '/api/v1/agent/instances/777/events', server.adminKey)).json.events;
    expect(events.map((e: { type: string }) => e.type).reverse()).toEqual([
      'registered',
      'online',
      'idle_detected',
      'hibernation_scheduled',
      'command_issued',
      'command_delivered',
      'command_succeeded',
      'hibernated',
    ]);
    // The server logged no secret.
    expect(server.output()).not.toContain(token);
    expect(server.output()).not.toContain(server.adminKey);
  });
});
