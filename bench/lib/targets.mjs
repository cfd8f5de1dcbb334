import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, httpReady, runCommand, startProcess } from './processes.mjs';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const SERVER_ENTRY = join(ROOT, 'packages/server/dist/main.js');
const BARE_ENTRY = join(ROOT, 'bench/targets/bare-http-server.mjs');

export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), `dumont-bench-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function startBareHttp() {
  const port = await freePort();
  const proc = await startProcess({ name: 'node:http', command: process.execPath, args: [BARE_ENTRY, String(port)], ready: /listening on/ });
  return { url: `http://127.0.0.1:${port}`, pids: () => [proc.pid], stop: () => proc.stop() };
}

/** Single-node etcd with its defaults (WAL fdatasync per raft batch), data in a temp dir. */
export async function startEtcd(binary) {
  const [port, peer] = [await freePort(), await freePort()];
  const data = tempDir('etcd');
  const client = `http://127.0.0.1:${port}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const proc = await startProcess({
    name: 'etcd',
    command: binary,
    args: [
      '--name', 'bench', '--data-dir', join(data.dir, 'data'),
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `bench=${peerUrl}`, '--log-level', 'warn',
    ],
    ready: () => httpReady(`${client}/health`),
  });
  return {
    url: client,
    pids: () => [proc.pid],
    async stop() {
      await proc.stop();
      data.remove();
    },
  };
}

/** Pushgateway as Debian runs it: in memory, snapshot to its persistence file every 5 minutes. */
export async function startPushgateway(binary) {
  const port = await freePort();
  const data = tempDir('pushgateway');
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    name: 'pushgateway',
    command: binary,
    args: [`--web.listen-address=127.0.0.1:${port}`, `--persistence.file=${join(data.dir, 'pushgateway.data')}`, '--log.level=warn'],
    ready: () => httpReady(`${url}/-/ready`),
  });
  return {
    url,
    pids: () => [proc.pid],
    async stop() {
      await proc.stop();
      data.remove();
    },
  };
}

/**
 * One Dumont server process (`node packages/server/dist/main.js`) on a free loopback port. The rate
 * limiter stays on, as by default, with a limit no run reaches: wrk sends each token ~25 beats/s.
 */
export async function startDumont({ databaseUrl, adminKey, env = {}, cpuProfDir }) {
  const port = await freePort();
  const args = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`, SERVER_ENTRY] : [SERVER_ENTRY];
  const proc = await startProcess({
    name: 'dumont-server',
    command: process.execPath,
    args,
    env: {
      DUMONT_HOST: '127.0.0.1',
      DUMONT_PORT: String(port),
      DUMONT_DATABASE_URL: databaseUrl,
      DUMONT_ADMIN_KEY: adminKey,
      DUMONT_RATE_LIMIT_PER_MINUTE: '100000000',
      ...env,
    },
    ready: /Server listening at http:\/\/127\.0\.0\.1:\d+/,
  });
  return { url: `http://127.0.0.1:${port}`, pid: proc.pid, proc, stop: () => proc.stop(), output: proc.output };
}

/** PostgreSQL on 127.0.0.1:5432 as the machine runs it (trust auth for postgres), or why not. */
export async function postgresAvailable() {
  const ready = await runCommand('pg_isready', ['-h', '127.0.0.1', '-p', '5432'], { timeoutMs: 10_000 }).catch((e) => ({ code: -1, stdout: e.message }));
  if (ready.code !== 0) return { missing: `PostgreSQL is not accepting connections on 127.0.0.1:5432 (${(ready.stdout || '').trim()})` };
  return { ok: true };
}

export async function psql(database, sqlText) {
  const r = await runCommand('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', database, '-Atqc', sqlText], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`psql: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** A database of its own for one run, dropped afterwards. */
export async function createBenchDatabase() {
  const name = `dumont_bench_${process.pid}_${Date.now()}`;
  await psql('postgres', `create database ${name}`);
  const settings = {
    fsync: await psql(name, 'show fsync'),
    synchronous_commit: await psql(name, 'show synchronous_commit'),
    wal_sync_method: await psql(name, 'show wal_sync_method'),
    version: (await psql(name, 'show server_version')).split(' ')[0],
  };
  return {
    name,
    url: `postgres://postgres@127.0.0.1:5432/${name}`,
    settings,
    /** Backends serving this database (their CPU is part of the target's cost). */
    backendPids: async () =>
      (await psql('postgres', `select pid from pg_stat_activity where datname = '${name}'`))
        .split('\n')
        .filter(Boolean)
        .map(Number),
    drop: () => psql('postgres', `drop database if exists ${name} with (force)`),
  };
}
