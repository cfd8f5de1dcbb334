import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { parseCli } from './cli.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

function runCliProcess(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('parseCli', () => {
  it('has the documented defaults', () => {
    const { options } = parseCli(['--admin-key', 'k', '--seed', '4'], {});
    expect(options).toMatchObject({
      apiUrl: 'http://127.0.0.1:8080',
      adminKey: 'k',
      agents: 1000,
      durationSeconds: 60,
      seed: 4,
      concurrency: 64,
      firstInstanceId: 1_000_000,
      registerOnly: false,
    });
  });

  it('rejects what would make the run unbounded or leave this machine', () => {
    expect(() => parseCli(['--admin-key', 'k', '--agents', '0'], {})).toThrow(/--agents/);
    expect(() => parseCli(['--admin-key', 'k', '--agents', '2000000'], {})).toThrow(/--agents/);
    expect(() => parseCli(['--admin-key', 'k', '--duration', '0'], {})).toThrow(/--duration/);
    expect(() => parseCli(['--admin-key', 'k', '--duration', '100000'], {})).toThrow(/--duration/);
    expect(() => parseCli(['--admin-key', 'k', '--api-url', 'http://10.1.2.3:8080'], {})).toThrow(/this machine/);
    expect(() => parseCli([], {})).toThrow(/--admin-key/);
    expect(() => parseCli(['--admin-key', 'k', '--register-only'], {})).toThrow(/--tokens-out/);
    expect(parseCli([], { DUMONT_ADMIN_KEY: 'from-env' }).options.adminKey).toBe('from-env');
  });
});

describe('dumont-simulate (built CLI) against the real server', () => {
  let server: ServerProcess;
  const dir = mkdtempSync(join(tmpdir(), 'dumont-sim-cli-'));
  beforeAll(async () => {
    server = await startServerProcess({ env: { DUMONT_HEARTBEAT_INTERVAL_SECONDS: '0.2' } });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('registers only and writes the tokens, then a second run beats with them and prints a summary', async () => {
    const file = join(dir, 'tokens.jsonl');
    const register = await runCliProcess(
      ['--api-url', server.url, '--agents', '20', '--seed', '9', '--register-only', '--tokens-out', file, '--quiet'],
      { DUMONT_ADMIN_KEY: server.adminKey },
    );
    expect(register.code).toBe(0);
    expect(register.stdout).toMatch(/registration: 20 registered, 0 failed/);
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(20);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    const beat = await runCliProcess([
      '--api-url', server.url, '--agents', '20', '--seed', '9', '--tokens-in', file,
      '--duration', '10', '--ramp', '0.2', '--beats-per-agent', '3', '--json',
    ]);
    expect(beat.code).toBe(0);
    const summary = JSON.parse(beat.stdout);
    expect(summary.registration).toBeNull();
    expect(summary.beats).toMatchObject({ sent: 60, ok: 60, clientErrors: 0, serverErrors: 0 });
    expect(summary.beats.latencyMs.p99).toBeGreaterThan(0);
    expect(beat.stderr).toMatch(/seed 9, 20 agents/);
  });

  it('exits 2 on bad flags and 1 when nothing reaches a server', async () => {
    const bad = await runCliProcess(['--agents', 'many', '--admin-key', 'k']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--agents many/);
    const closed = await runCliProcess(['--api-url', 'http://127.0.0.1:1', '--admin-key', 'k', '--agents', '1', '--quiet']);
    expect(closed.code).toBe(1);
    expect(closed.stdout).toMatch(/1 failed/);
  });
});
