import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite-store.js';
import { HttpRecorder } from '../test-support/http-recorder.js';
import { TestServer } from '../test-support/test-server.js';

/**
 * A provider that never answers holds only its own sending slots: notifications (and other providers)
 * keep flowing while its stops time out, and the hanging calls per process stay bounded.
 */

const S = 1000;
const INSTANCES = 24;
const LEAVERS = 20;
const idle = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 0 }, process_count: 0 });

describe('the outbox under a provider that hangs', () => {
  let t: TestServer;
  let vast: HttpRecorder;
  let notify: HttpRecorder;

  beforeAll(async () => {
    vast = (await HttpRecorder.start()).reply({ hang: true });
    notify = await HttpRecorder.start();
    t = await new TestServer(() => SqliteStore.open(':memory:'), {
      DUMONT_PROVIDER: 'vast',
      DUMONT_VAST_API_URL: vast.url,
      DUMONT_VAST_API_KEY: 'fairness-key',
      DUMONT_PROVIDER_TIMEOUT_SECONDS: '3',
      DUMONT_NOTIFY_URL: notify.url,
      DUMONT_IDLE_THRESHOLD_MINUTES: '0.05',
      DUMONT_HIBERNATION_WARNING_SECONDS: '0',
    }).start();
  });
  afterAll(async () => {
    await t.close();
    await vast.close();
    await notify.close();
  });

  it('delivers notifications queued after stops that hang, and sends at most 16 stops at once', async () => {
    const tokens = new Map<number, string>();
    for (let id = 1; id <= INSTANCES; id++) tokens.set(id, await t.register(id));
    // Machines that beat once and go silent: their offline notices are queued after the stops.
    for (let id = 101; id <= 100 + LEAVERS; id++) await t.beat(await t.register(id), { ...idle(id), gpu_metrics: { utilization_percent: 50 } });
    const commands = new Map<number, string>();
    for (let step = 0; step < 8 && commands.size < INSTANCES; step++) {
      t.clock.advance(S);
      for (const [id, token] of tokens) {
        const hibernate = ((await t.beat(token, idle(id))).json.commands as { id: string; type: string }[]).find((c) => c.type === 'hibernate');
        if (hibernate) commands.set(id, hibernate.id);
      }
    }
    expect(commands.size).toBe(INSTANCES);
    await t.drainOutbox(); // the `hibernation.scheduled` notices
    const before = notify.requests.length;
    t.clock.advance(S);
    for (const [id, token] of tokens) {
      await t.beat(token, { ...idle(id), command_results: [{ id: commands.get(id)!, status: 'succeeded' }] });
    }
    t.clock.advance(120 * S);
    await t.sweep();

    const started = Date.now();
    // Oldest first, the stops alone would fill any shared budget; each target has its own.
    expect(await t.server.outbox.tick()).toBe(16 + 16);
    await vast.waitFor(16);
    await notify.waitFor(before + 16, 2000);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await t.server.outbox.tick()).toBe(LEAVERS - 16);
    await notify.waitFor(before + LEAVERS, 2000);
    // All of it while every stop still hangs (the timeout is 3 s).
    expect(Date.now() - started).toBeLessThan(3 * S);
    expect(vast.requests.length).toBe(16);
    const offline = notify.requests.slice(before).map((r) => JSON.parse(r.body).type as string);
    expect(offline).toEqual(Array(LEAVERS).fill('instance.offline'));
    await t.drainOutbox();
  }, 30_000);
});
