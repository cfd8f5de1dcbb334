import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { runSimulation } from './simulation.js';

describe('rate limits', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    // 5 requests a minute per credential: each agent gets 5 beats in, then a 429 with Retry-After ≈ 60 s.
    server = await startServerProcess({
      env: { DUMONT_RATE_LIMIT_PER_MINUTE: '5', DUMONT_HEARTBEAT_INTERVAL_SECONDS: '0.1' },
    });
  });
  afterAll(() => server?.stop());

  it('waits out Retry-After instead of beating on at the interval', async () => {
    const { summary } = await runSimulation({
      apiUrl: server.url,
      adminKey: server.adminKey,
      agents: 3,
      durationSeconds: 3,
      rampSeconds: 0,
      seed: 5,
      firstInstanceId: 4_000_000,
      mix: { busy: 1, idle: 0, bursty: 0, diurnal: 0, 'goes-offline': 0, flaky: 0 },
    });
    expect(summary.registration?.registered).toBe(3);
    expect(summary.beats.ok).toBe(15);
    // One 429 per agent; at the 0.1 s interval an agent ignoring Retry-After would send ~30 beats.
    expect(summary.beats.rateLimited).toBe(3);
    expect(summary.beats.sent).toBe(18);
  });
});
