import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { ApiClient } from './api-client.js';
import { planFleet } from './fleet-plan.js';
import { registerFleet } from './register-fleet.js';
import { runSimulation } from './simulation.js';

describe('a 5,000-agent fleet', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServerProcess();
  });
  afterAll(() => server?.stop());

  const list = async () => {
    const res = await fetch(`${server.url}/api/v1/agent/instances?limit=1`, { headers: { authorization: `Bearer ${server.adminKey}` } });
    return (await res.json()) as any;
  };

  it('registers 5,000 instances, then beats once with each reused token and no admin key', { timeout: 120_000 }, async () => {
    const plan = planFleet({ seed: 12, agents: 5000, firstInstanceId: 5_000_000 });
    const client = new ApiClient(server.url, { maxSockets: 64 });
    const registered = await registerFleet(client, server.adminKey, plan, { concurrency: 64 }).finally(() => client.close());
    expect(registered).toMatchObject({ registered: 5000, failed: 0 });
    expect(new Set(registered.tokens).size).toBe(5000);
    expect(await list()).toMatchObject({ count: 5000, offline_count: 5000 });

    const tokens = new Map(plan.map((spec, i) => [spec.instanceId, registered.tokens[i]!]));
    const { summary } = await runSimulation({
      apiUrl: server.url,
      agents: 5000,
      durationSeconds: 120,
      rampSeconds: 1,
      seed: 12,
      firstInstanceId: 5_000_000,
      tokens,
      beatsPerAgent: 1,
    });
    expect(summary.registration).toBeNull();
    expect(summary.beats).toMatchObject({ sent: 5000, ok: 5000 });
    const after = await list();
    expect(after.offline_count).toBe(0);
    expect(after.active_count + after.idle_count).toBe(5000);
  });
});
