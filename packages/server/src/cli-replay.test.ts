import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testBackends } from './test-support/backends.js';
import { SERVER_ENTRY } from './test-support/server-process.js';
import { TestServer } from './test-support/test-server.js';

const run = promisify(execFile);
const S = 1000;
const MIN = 60 * S;
const H = 60 * MIN;
const iso = (ms: number) => new Date(ms).toISOString();
const round4 = (n: number) => Math.round(n * 10_000) / 10_000;

const sqlite = (await testBackends()).find((b) => b.name === 'sqlite')!;
const gpus = (utilization: number) => [0, 1].map((index) => ({ index, uuid: `GPU-${index}`, utilization_percent: utilization, memory_used_mb: 10, memory_total_mb: 81_559 }));

/**
 * `dumont-server replay` as an operator runs it: the built CLI in a child process, on the system clock,
 * over a SQLite file a real server recorded. The history sits in the last hours of real time, so that
 * it is within raw retention when the CLI reads it.
 */
describe('dumont-server replay', () => {
  let db: Awaited<ReturnType<typeof sqlite.open>>;
  let env: NodeJS.ProcessEnv;
  const start = Math.floor((Date.now() - 2 * H) / MIN) * MIN;
  const busyAt = start + 40 * MIN;
  const range = ['--from', iso(start - MIN), '--to', iso(busyAt + 30 * S)];

  beforeAll(async () => {
    db = await sqlite.open();
    const t = await new TestServer(async () => db.store, { DUMONT_IDLE_THRESHOLD_MINUTES: '120' }).start();
    try {
      t.clock.set(start);
      const res = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 7, hostname: 'gpu-7', price_per_hour: 2 } });
      const token = res.json.agent_token as string;
      for (let at = start; at < busyAt; at += 30 * S) {
        t.clock.set(at);
        expect((await t.beat(token, { instance_id: 7, gpus: gpus(0), process_count: 0 })).status).toBe(200);
      }
      t.clock.set(busyAt);
      expect((await t.beat(token, { instance_id: 7, gpus: gpus(95), process_count: 3 })).status).toBe(200);
      await t.server.history.flush();
    } finally {
      await t.close();
    }
    env = { ...process.env, DUMONT_DATABASE_URL: db.databaseUrl, DUMONT_IDLE_THRESHOLD_MINUTES: '30', DUMONT_LOG_LEVEL: 'warn' };
  });
  afterAll(() => db?.dispose());

  const cli = (...args: string[]) => run(process.execPath, [SERVER_ENTRY, 'replay', ...args], { env });

  it('--json prints the replay response: one policy per threshold, beside what actually ran', async () => {
    const { stdout } = await cli('--threshold-minutes', '10,30', '--warning-seconds', '0', ...range, '--json');
    const response = JSON.parse(stdout);
    const policy = (threshold: number) => {
      const hours = (busyAt - (start + threshold * MIN)) / H;
      return {
        threshold_minutes: threshold,
        utilization_percent: 5,
        warning_seconds: 0,
        hibernations: 1,
        gpu_hours_saved: round4(hours * 2),
        usd_saved: round4(hours * 2),
        regrets: [{ instance_id: 7, hibernated_at: iso(start + threshold * MIN), busy_again_at: iso(busyAt) }],
        instances: [{ instance_id: 7, hibernations: 1, gpu_hours_saved: round4(hours * 2), usd_saved: round4(hours * 2), regret_count: 1 }],
      };
    };
    expect(response).toEqual({
      from: iso(start - MIN),
      to: iso(busyAt + 30 * S),
      raw_from: iso(start - MIN),
      actual: { hibernations: 0, gpu_hours_saved: 0, usd_saved: 0, regrets: [], instances: [] },
      policies: [policy(10), policy(30)],
    });
  });

  it('prints a table with a row per threshold and the actual policy; without the flag, the server threshold', async () => {
    const { stdout } = await cli('--threshold-minutes', '10,30', '--warning-seconds', '0', ...range);
    const rows = stdout.trim().split('\n').slice(2).map((line) => line.trim().split(/\s+/));
    expect(rows).toEqual([
      ['10', '1', String(round4((30 / 60) * 2)), '1.00', '1'],
      ['30', '1', String(round4((10 / 60) * 2)), '0.33', '1'],
      ['actual', '0', '0', '0.00', '0'],
    ]);
    const byDefault = JSON.parse((await cli('--warning-seconds', '0', ...range, '--json')).stdout);
    expect(byDefault.policies.map((p: { threshold_minutes: number }) => p.threshold_minutes)).toEqual([30]);
    // An owner other than the instance's sees nothing of it.
    const alice = JSON.parse((await cli('--warning-seconds', '0', ...range, '--owner', 'alice', '--json')).stdout);
    expect(alice.policies[0].hibernations).toBe(0);
  });

  it('bad input exits 2 naming the flag; an error of the replay itself exits 1 with its message', async () => {
    for (const [flag, value] of [
      ['--threshold-minutes', 'x'],
      ['--threshold-minutes', '0'],
      ['--utilization-percent', '101'],
      ['--from', 'yesterday'],
      ['--instance', '7,x'],
    ] as const) {
      const failure = await cli(flag, value).then(() => null, (error: { code: number; stderr: string }) => error);
      expect(failure, `${flag} ${value}`).toMatchObject({ code: 2 });
      expect(failure!.stderr).toContain(flag);
    }
    const missing = await cli('--instance', '99', ...range).then(() => null, (error: { code: number; stderr: string }) => error);
    expect(missing).toMatchObject({ code: 1 });
    expect(missing!.stderr).toContain('instance 99 not found');
    const old = await cli('--from', iso(Date.now() - 31 * 24 * H)).then(() => null, (error: { code: number; stderr: string }) => error);
    expect(old).toMatchObject({ code: 1 });
    expect(old!.stderr).toContain('DUMONT_HISTORY_DAYS');
  });
});
