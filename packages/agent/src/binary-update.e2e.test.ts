import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { startAgent, stopAllAgents } from './test-support/agent-process.js';
import { AGENT_ROOT, ensureAgentBuilt, ensureBuilt } from './test-support/ensure-built.js';
import { createFakeNvidiaSmi, gpuLine } from './test-support/fake-nvidia-smi.js';
import { waitFor } from './test-support/processes.js';
import { admin, registerInstance } from './test-support/server-admin.js';

/**
 * `update` on the single executable, end to end: an agent running an older build (the real binary
 * with other bytes at its end, which changes its SHA-256 and nothing else) gets the command from the
 * real server, downloads the server's binary, verifies it, swaps it in and exits 75 for systemd; the
 * file it runs from is then the server's build, and it beats again from there. No node on PATH.
 */
const ARCH = ({ x64: 'x64', arm64: 'arm64' } as Record<string, string>)[process.arch];
const BINARY = process.platform === 'linux' && ARCH ? join(AGENT_ROOT, 'dist', `dumont-agent-linux-${ARCH}`) : null;
const SERVER_ROOT = fileURLToPath(new URL('../../server/', import.meta.url));

const tmp = mkdtempSync(join(tmpdir(), 'dumont-binary-update-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const smi = createFakeNvidiaSmi(join(tmp, 'smi'));
const smiOnPath = join(tmp, 'path-bin');
mkdirSync(smiOnPath);
writeFileSync(join(smiOnPath, 'nvidia-smi'), `#!/bin/sh\nPATH=/usr/bin:/bin exec '${smi.path.replace(/'/g, `'\\''`)}' "$@"\n`);
chmodSync(join(smiOnPath, 'nvidia-smi'), 0o755);
const env = { PATH: smiOnPath };
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

let server: ServerProcess | null = null;
afterEach(async () => {
  await stopAllAgents();
  await server?.stop();
  server = null;
});

describe.skipIf(!BINARY)('update on the single executable, against the real server', () => {
  beforeAll(async () => {
    await ensureAgentBuilt();
    await ensureBuilt(SERVER_ROOT, join(SERVER_ROOT, 'dist', 'main.js'));
    const built = spawnSync(process.execPath, [join(AGENT_ROOT, 'scripts', 'build-binary.mjs')], { encoding: 'utf8', timeout: 170_000 });
    expect(built.status, built.stderr).toBe(0);
  }, 180_000);

  it('swaps in the server binary, verified, exits for a restart, and runs from it', async () => {
    const installed = join(tmp, 'usr-local-bin', 'dumont-agent');
    mkdirSync(join(tmp, 'usr-local-bin'));
    copyFileSync(BINARY!, installed);
    appendFileSync(installed, Buffer.alloc(4096, 7));
    chmodSync(installed, 0o755);
    const before = sha(installed);
    const serverSha = readFileSync(`${BINARY}.sha256`, 'utf8').split(' ')[0]!;
    expect(before).not.toBe(serverSha);

    server = await startServerProcess({ env: { DUMONT_HEARTBEAT_INTERVAL_SECONDS: '0.3', DUMONT_OFFLINE_AFTER_SECONDS: '10' } });
    const dir = join(tmp, 'agent');
    mkdirSync(join(dir, 'jupyter'), { recursive: true });
    const tokenFile = await registerInstance(server, 5151, dir);
    smi.set('gpus', { out: gpuLine(0, 90) });
    smi.set('apps', { out: '' });
    const args = ['--instance-id', '5151', '--api-url', server.url, '--token-file', tokenFile, '--state-dir', join(dir, 'state'), '--utmp-file', join(dir, 'no-utmp'), '--jupyter-runtime-dir', join(dir, 'jupyter')];
    const agent = await startAgent(args, env, (argv) => [installed, ...argv.slice(2)]);
    const detail = () => admin(server!, 'GET', '/api/v1/agent/instances/5151');
    await waitFor('status active', async () => ((await detail()).status === 'active' ? true : undefined), 15_000, 50);

    const { id } = await admin<{ id: string }>(server, 'POST', '/api/v1/agent/instances/5151/commands', { type: 'update' });
    const exit = await waitFor('agent exits for the restart', async () => agent.child.exitCode ?? undefined, 120_000, 100);
    expect(exit).toBe(75);
    expect(sha(installed)).toBe(serverSha);
    const command = (await admin<{ commands: { id: string; state: string; detail: string }[] }>(server, 'GET', '/api/v1/agent/instances/5151/commands')).commands.find((c) => c.id === id);
    expect(command).toMatchObject({ state: 'succeeded', detail: expect.stringContaining("installed the server's binary") });
    expect(readFileSync(join(tmp, 'usr-local-bin', 'dumont-agent')).length).toBe(readFileSync(BINARY!).length);

    // What systemd does next: start it again, from the same path, now the server's build.
    const again = await startAgent(args, env, (argv) => [installed, ...argv.slice(2)]);
    const beatsBefore = (await detail()).heartbeat_count as number;
    await waitFor('beats again', async () => (((await detail()).heartbeat_count as number) > beatsBefore + 2 ? true : undefined), 15_000, 50);
    expect(again.child.exitCode).toBeNull();
  }, 180_000);
});
