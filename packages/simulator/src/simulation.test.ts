import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { planFleet } from './fleet-plan.js';
import { runSimulation } from './simulation.js';

/**
 * 200 simulated agents against the real server process, in real time with fractional durations:
 * beats every 0.25 s, idle after 0.6 s, offline after 2 s of silence.
 */
describe('simulation against the real server', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServerProcess({
      env: {
        DUMONT_HEARTBEAT_INTERVAL_SECONDS: '0.25',
        DUMONT_IDLE_THRESHOLD_MINUTES: '0.01',
        DUMONT_HIBERNATION_WARNING_SECONDS: '0.5',
        DUMONT_OFFLINE_AFTER_SECONDS: '2',
        DUMONT_SWEEP_INTERVAL_MS: '50',
        // Every simulation ends with its whole fleet falling silent at once, which is what the
        // mass-silence guard exists for; the next simulation on this server must not be held by it.
        DUMONT_MASS_OFFLINE_MIN_INSTANCES: '1000000',
      },
    });
  });
  afterAll(() => server?.stop());

  const get = async (path: string) => {
    const res = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${server.adminKey}` } });
    expect(res.status).toBe(200);
    return (await res.json()) as any;
  };
  const eventTypes = async (id: number): Promise<string[]> =>
    (await get(`/api/v1/agent/instances/${id}/events?limit=1000`)).events.map((e: { type: string }) => e.type);

  it('registers every agent with its own token, beats at the server interval, and idle hosts get hibernated', async () => {
    const seed = 2024;
    const first = 3_000_000;
    const { summary, tokens } = await runSimulation({
      apiUrl: server.url,
      adminKey: server.adminKey,
      agents: 200,
      durationSeconds: 6,
      rampSeconds: 0.5,
      seed,
      firstInstanceId: first,
    });
    // One snapshot straight away, before the offline window can pass for anyone.
    const list = await get('/api/v1/agent/instances?limit=1000');

    expect(summary.registration).toMatchObject({ registered: 200, failed: 0 });
    expect(new Set(tokens.map((t) => t.agent_token)).size).toBe(200);
    expect(summary.beats.sent).toBeGreaterThan(200 * 5);
    expect(summary.beats.ok).toBe(summary.beats.sent);
    // At 0.25 s per beat over ~6 s, an agent that never stops sends ~20 beats, not 6 s / 30 s.
    expect(summary.beats.sent / 200).toBeGreaterThan(8);

    expect(list.count).toBe(200);
    expect(list.active_count + list.idle_count + list.hibernating_count + list.hibernated_count + list.offline_count).toBe(200);
    expect(list.active_count).toBeGreaterThan(0);

    // Same seed, same fleet: what the server stored is what the plan says.
    const plan = planFleet({ seed, agents: 200, firstInstanceId: first });
    const byId = new Map<number, any>(list.instances.map((i: any) => [i.instance_id, i]));
    for (const spec of plan) {
      expect(byId.get(spec.instanceId)?.hostname).toBe(spec.hostname);
      expect(byId.get(spec.instanceId)?.gpu_count).toBe(spec.gpus.length);
    }

    const idle = plan.filter((a) => a.profile === 'idle');
    const busy = plan.filter((a) => a.profile === 'busy');
    const flaky = plan.filter((a) => a.profile === 'flaky');
    const offline = plan.filter((a) => a.profile === 'goes-offline');
    expect(idle.length).toBeGreaterThan(10);

    // Every idle host was hibernated exactly once: hibernate command received, acknowledged, then silence.
    for (const spec of idle) {
      expect(byId.get(spec.instanceId)?.status).toBe('hibernated');
      const types = await eventTypes(spec.instanceId);
      expect(types.filter((t) => t === 'hibernated')).toHaveLength(1);
      expect(types).toContain('command_succeeded');
    }
    expect(summary.commands.received.hibernate).toBeGreaterThanOrEqual(idle.length);
    // What the simulator acknowledged is exactly what the server holds as hibernated.
    expect(summary.hibernated).toBe(list.hibernated_count);
    // Busy hosts never looked idle; flaky hosts' unknown values never count as idle either.
    for (const spec of [...busy, ...flaky]) {
      expect(byId.get(spec.instanceId)?.status).toBe('active');
      const types = await eventTypes(spec.instanceId);
      expect(types).not.toContain('idle_detected');
    }
    for (const spec of flaky) expect(byId.get(spec.instanceId)?.gpu_utilization).toBeNull();
    // Hosts that go silent for 8–15 intervals (2–3.75 s) mostly outlast the 2 s offline window.
    let wentOffline = 0;
    for (const spec of offline) {
      const types = await eventTypes(spec.instanceId);
      if (types.includes('offline')) wentOffline += 1;
    }
    expect(wentOffline).toBeGreaterThan(0);
    expect(summary.silences).toBeGreaterThanOrEqual(wentOffline);
  });

  it('wakes hibernated hosts when asked, and the server sees them come back', async () => {
    const first = 3_100_000;
    const { summary } = await runSimulation({
      apiUrl: server.url,
      adminKey: server.adminKey,
      agents: 5,
      durationSeconds: 8,
      rampSeconds: 0.2,
      seed: 1,
      firstInstanceId: first,
      mix: { busy: 0, idle: 1, bursty: 0, diurnal: 0, 'goes-offline': 0, flaky: 0 },
      wakeAfterSeconds: 0.5,
    });
    expect(summary.hibernated).toBeGreaterThanOrEqual(5);
    // Every wake-up beat the simulator counted, the server logged as `woke`: no more, no fewer.
    expect(summary.woke).toBeGreaterThan(0);
    let woke = 0;
    for (let id = first; id < first + 5; id++) woke += (await eventTypes(id)).filter((t) => t === 'woke').length;
    expect(woke).toBe(summary.woke);
  });

  it('stops each agent after --beats-per-agent beats', async () => {
    const { summary } = await runSimulation({
      apiUrl: server.url,
      adminKey: server.adminKey,
      agents: 50,
      durationSeconds: 30,
      rampSeconds: 0.2,
      seed: 3,
      firstInstanceId: 3_200_000,
      beatsPerAgent: 2,
      mix: { busy: 1, idle: 0, bursty: 0, diurnal: 0, 'goes-offline': 0, flaky: 0 },
    });
    expect(summary.beats.sent).toBe(100);
    expect(summary.beats.ok).toBe(100);
    // All agents finished long before the 30 s duration.
    expect(summary.beats.seconds).toBeLessThan(10);
  });
});
