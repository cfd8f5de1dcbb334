import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_DATABASE_URL, testBackends } from './test-support/backends.js';
import { startServerProcess, type ServerProcess } from './test-support/server-process.js';

const postgres = (await testBackends()).find((b) => b.name === 'postgres')!;
const INSTANCES = 1000;
const FIRST_ID = 5_000_000;

/**
 * Three real server processes share one PostgreSQL; agents spread their beats across them. Every idle
 * instance must be hibernated exactly once, no command may be delivered again after its result, and no
 * heartbeat may be lost.
 */
describe.skipIf(postgres.skipReason !== null)('three replicas on one PostgreSQL', () => {
  const schema = `dumont_replicas_${randomBytes(4).toString('hex')}`;
  const replicas: ServerProcess[] = [];
  let client: pg.Client;

  beforeAll(async () => {
    client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    await client.query(`create schema "${schema}"`);
    const url = new URL(TEST_DATABASE_URL);
    url.searchParams.set('options', `-c search_path=${schema}`);
    const adminKey = `dmk_test_${randomBytes(12).toString('hex')}`;
    const env = {
      DUMONT_DATABASE_URL: url.toString(),
      DUMONT_ADMIN_KEY: adminKey,
      DUMONT_IDLE_THRESHOLD_MINUTES: '0.02', // 1.2 s
      DUMONT_HIBERNATION_WARNING_SECONDS: '1',
      DUMONT_HEARTBEAT_INTERVAL_SECONDS: '1',
      DUMONT_OFFLINE_AFTER_SECONDS: '60',
      DUMONT_SWEEP_INTERVAL_MS: '100',
    };
    // Sequential starts: each runs the (idempotent) migrations against the same schema.
    for (let i = 0; i < 3; i++) replicas.push(await startServerProcess({ env }));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await client?.query(`drop schema if exists "${schema}" cascade`);
    await client?.end();
  });

  it('hibernates 1,000 idle instances exactly once, delivers no acknowledged command again, loses no beat', async () => {
    const adminKey = replicas[0]!.adminKey;
    const post = async (replica: ServerProcess, path: string, token: string, body: unknown) => {
      const res = await fetch(`${replica.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json()) as any };
    };
    const pool = async <T>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<void>) => {
      let next = 0;
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (next < items.length) {
          const i = next++;
          await fn(items[i]!, i);
        }
      }));
    };

    interface Agent { id: number; token: string; sent: number; result?: { id: string; status: 'succeeded' }; acked: Set<string>; done: boolean }
    const agents: Agent[] = Array.from({ length: INSTANCES }, (_, i) => ({ id: FIRST_ID + i, token: '', sent: 0, acked: new Set(), done: false }));
    await pool(agents, 32, async (agent, i) => {
      const res = await post(replicas[i % 3]!, '/api/v1/agent/instances', adminKey, { instance_id: agent.id, hostname: `sim-${i}` });
      expect(res.status).toBe(201);
      agent.token = res.json.agent_token;
    });

    const failures: string[] = [];
    const redelivered: string[] = [];
    let beatNo = 0;
    const started = Date.now();
    while (agents.some((a) => !a.done) && Date.now() - started < 90_000) {
      const roundStart = Date.now();
      await pool(agents.filter((a) => !a.done), 32, async (agent) => {
        const replica = replicas[beatNo++ % 3]!;
        const body: Record<string, unknown> = {
          instance_id: agent.id,
          hostname: `sim-${agent.id}`,
          timestamp: new Date(started + agent.sent * 1000 + 1).toISOString(),
          gpu_metrics: { utilization_percent: 0, memory_used_mb: 0, memory_total_mb: 81559 },
          process_count: 0,
        };
        if (agent.result) body.command_results = [agent.result];
        const res = await post(replica, '/api/v1/agent/status', agent.token, body);
        if (res.status !== 200) {
          failures.push(`${agent.id}: ${res.status} ${JSON.stringify(res.json)}`);
          return;
        }
        agent.sent += 1;
        for (const command of res.json.commands as { id: string; type: string }[]) {
          if (agent.acked.has(command.id)) redelivered.push(`${agent.id}: ${command.id}`);
          if (command.type === 'hibernate') agent.result = { id: command.id, status: 'succeeded' };
        }
        if (agent.result && !res.json.commands.some((c: { id: string }) => c.id === agent.result!.id)) {
          // The result was in this beat and the command is gone: hibernated; the machine stops.
          agent.acked.add(agent.result.id);
          agent.done = true;
        }
      });
      const elapsed = Date.now() - roundStart;
      if (elapsed < 1000) await new Promise((r) => setTimeout(r, 1000 - elapsed));
    }

    expect(failures).toEqual([]);
    expect(redelivered).toEqual([]);
    expect(agents.filter((a) => !a.done).length).toBe(0);

    const statuses = await client.query(`select status, count(*)::int as n from "${schema}".instances group by status`);
    expect(statuses.rows).toEqual([{ status: 'hibernated', n: INSTANCES }]);
    const commands = await client.query(
      `select instance_id, count(*)::int as n from "${schema}".commands where type = 'hibernate' group by instance_id having count(*) <> 1`,
    );
    expect(commands.rows).toEqual([]);
    const hibernatedEvents = await client.query(
      `select count(*)::int as n, count(distinct instance_id)::int as d from "${schema}".events where type = 'hibernated'`,
    );
    expect(hibernatedEvents.rows[0]).toEqual({ n: INSTANCES, d: INSTANCES });
    // Every 200-answered beat was applied: none lost between replicas.
    const counts = await client.query(`select instance_id, heartbeat_count from "${schema}".instances`);
    const sentById = new Map(agents.map((a) => [a.id, a.sent]));
    const lost = counts.rows.filter((r: { instance_id: number; heartbeat_count: string }) => Number(r.heartbeat_count) !== sentById.get(Number(r.instance_id)));
    expect(lost).toEqual([]);
  }, 150_000);
});
