import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite-store.js';
import { TestServer } from '../test-support/test-server.js';

const PROMETHEUS = '/usr/bin/prometheus';

function skipReason(): string | null {
  if (existsSync(PROMETHEUS)) return null;
  const reason = `${PROMETHEUS} is not installed`;
  if (process.env.CI === 'true') throw new Error(`${reason}; under CI=true the Prometheus scrape suite must run`);
  console.warn(`skipping the Prometheus scrape suite: ${reason}`);
  return reason;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** Polls `probe` every 250 ms until it returns a value or `timeoutMs` passes. */
async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

describe.skipIf(skipReason() !== null)('a real Prometheus scrapes /metrics', () => {
  let dir: string;
  let t: TestServer;
  let prometheus: ChildProcess | undefined;
  let prometheusUrl: string;
  let log = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dumont-prometheus-'));
    t = await new TestServer(() => SqliteStore.open(join(dir, 'dumont.db'))).start();
    const target = new URL(t.url).host;
    const port = await freePort();
    prometheusUrl = `http://127.0.0.1:${port}`;
    const config = [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      'scrape_configs:',
      '  - job_name: dumont',
      '    metrics_path: /metrics',
      '    authorization:',
      '      type: Bearer',
      `      credentials: ${JSON.stringify(t.adminKey)}`,
      '    static_configs:',
      `      - targets: [${JSON.stringify(target)}]`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'prometheus.yml'), config, { mode: 0o600 });
    prometheus = spawn(
      PROMETHEUS,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stdout!.on('data', (d) => (log += d));
    prometheus.stderr!.on('data', (d) => (log += d));
    await eventually('Prometheus to be ready', 20_000, async () => ((await fetch(`${prometheusUrl}/-/ready`)).ok ? true : undefined));
  }, 40_000);

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
      prometheus.kill('SIGTERM');
      await exited;
    }
    await t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('stores the GPU utilization a heartbeat reported, as a 0..1 ratio', async () => {
    const token = await t.register(37, 'scraped');
    const beat = await t.beat(token, {
      instance_id: 37,
      hostname: 'scraped',
      process_count: 1,
      gpus: [{ index: 0, uuid: 'GPU-3737', utilization_percent: 37, memory_used_mb: 512, memory_total_mb: 24576 }],
    });
    expect(beat.status).toBe(200);

    const query = encodeURIComponent('dumont_gpu_utilization_ratio{instance_id="37"}');
    const result = await eventually('Prometheus to hold the sample', 30_000, async () => {
      const answer = (await (await fetch(`${prometheusUrl}/api/v1/query?query=${query}`)).json()) as {
        data: { result: { metric: Record<string, string>; value: [number, string] }[] };
      };
      return answer.data.result.length > 0 ? answer.data.result : undefined;
    }).catch((error: Error) => {
      throw new Error(`${error.message}\nPrometheus log:\n${log}`);
    });
    expect(result).toHaveLength(1);
    expect(result[0]!.metric).toMatchObject({ job: 'dumont', instance_id: '37', hostname: 'scraped', gpu: '0', uuid: 'GPU-3737' });
    expect(Number(result[0]!.value[1])).toBe(0.37);

    // The scrape authenticated and succeeded: Prometheus' own health series for the target.
    const up = (await (await fetch(`${prometheusUrl}/api/v1/query?query=up{job="dumont"}`)).json()) as { data: { result: { value: [number, string] }[] } };
    expect(up.data.result[0]!.value[1]).toBe('1');
  }, 40_000);

  it('joins GPU series to instance labels with on(instance_id) group_left', async () => {
    const registered = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 38, hostname: 'labelled', labels: { team: 'vision' } } });
    expect(registered.status, registered.text).toBe(201);
    const beat = await t.beat(registered.json.agent_token, {
      instance_id: 38,
      hostname: 'labelled',
      gpus: [{ index: 0, uuid: 'GPU-3838', utilization_percent: 50, memory_used_mb: 1, memory_total_mb: 2 }],
    });
    expect(beat.status).toBe(200);
    const query = encodeURIComponent('dumont_gpu_utilization_ratio * on(instance_id) group_left(label_team) dumont_instance_labels{label_team="vision"}');
    const result = await eventually('Prometheus to join the labels', 30_000, async () => {
      const answer = (await (await fetch(`${prometheusUrl}/api/v1/query?query=${query}`)).json()) as {
        data: { result: { metric: Record<string, string>; value: [number, string] }[] };
      };
      return answer.data.result.length > 0 ? answer.data.result : undefined;
    }).catch((error: Error) => {
      throw new Error(`${error.message}\nPrometheus log:\n${log}`);
    });
    expect(result).toHaveLength(1);
    expect(result[0]!.metric).toMatchObject({ instance_id: '38', hostname: 'labelled', gpu: '0', label_team: 'vision' });
    expect(Number(result[0]!.value[1])).toBe(0.5);
  }, 40_000);
});
