import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../../server/src/test-support/server-process.js';
import { systemdQuote } from './install/systemd.js';
import { startAgent, stopAllAgents } from './test-support/agent-process.js';
import { AGENT_CLI, AGENT_ROOT, ensureAgentBuilt, ensureBuilt } from './test-support/ensure-built.js';
import { createFakeNvidiaSmi, gpuLine } from './test-support/fake-nvidia-smi.js';
import { waitFor } from './test-support/processes.js';
import { admin, FAST_LIFECYCLE_ENV, registerInstance } from './test-support/server-admin.js';

/**
 * The single executable (scripts/build-binary.mjs) on a host without Node: PATH holds an empty
 * directory and one with a stand-in nvidia-smi, nothing else.
 */
const ARCH = ({ x64: 'x64', arm64: 'arm64' } as Record<string, string>)[process.arch];
const BINARY = process.platform === 'linux' && ARCH ? join(AGENT_ROOT, 'dist', `dumont-agent-linux-${ARCH}`) : null;
const BUILD_SCRIPT = join(AGENT_ROOT, 'scripts', 'build-binary.mjs');
const SERVER_ROOT = fileURLToPath(new URL('../../server/', import.meta.url));

const tmp = mkdtempSync(join(tmpdir(), 'dumont-binary-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const smi = createFakeNvidiaSmi(join(tmp, 'smi'));
const emptyDir = join(tmp, 'empty');
const smiOnPath = join(tmp, 'path-bin');
mkdirSync(emptyDir);
mkdirSync(smiOnPath);
// The stand-in's own tools (dirname, cat) come from the system; the agent's PATH stays without them.
writeFileSync(join(smiOnPath, 'nvidia-smi'), `#!/bin/sh\nPATH=/usr/bin:/bin exec '${smi.path.replace(/'/g, `'\\''`)}' "$@"\n`);
chmodSync(join(smiOnPath, 'nvidia-smi'), 0o755);
const env = { PATH: `${emptyDir}:${smiOnPath}` };

const servers: ServerProcess[] = [];
afterEach(async () => {
  await stopAllAgents();
  for (const s of servers.splice(0)) await s.stop();
});

describe.skipIf(!BINARY)('the single executable, with no node on PATH', () => {
  const binary = BINARY!;
  beforeAll(async () => {
    await ensureAgentBuilt();
    await ensureBuilt(SERVER_ROOT, join(SERVER_ROOT, 'dist', 'main.js'));
    // `npm test` built it already (then this says "up to date"); a bare vitest after a source change rebuilds it.
    const built = spawnSync(process.execPath, [BUILD_SCRIPT], { encoding: 'utf8', timeout: 170_000 });
    expect(built.stderr).toBe('');
    expect(built.status).toBe(0);
  }, 180_000);

  const runBinary = (args: string[], extraEnv: Record<string, string> = {}) =>
    spawnSync(binary, args, { encoding: 'utf8', env: { ...env, ...extraEnv }, timeout: 20_000 });
  const runNpmAgent = (args: string[], extraEnv: Record<string, string> = {}) =>
    spawnSync(process.execPath, [AGENT_CLI, ...args], { encoding: 'utf8', env: { ...env, ...extraEnv }, timeout: 20_000 });

  it('the environment really has no node, only the stand-in nvidia-smi', () => {
    expect(spawnSync('/bin/sh', ['-c', 'command -v node'], { env }).status).not.toBe(0);
    expect(spawnSync('/bin/sh', ['-c', 'command -v nvidia-smi'], { env, encoding: 'utf8' }).stdout.trim()).toBe(join(smiOnPath, 'nvidia-smi'));
  });

  it('--version prints what the npm agent prints, and no SEA warning', () => {
    const pkg = JSON.parse(readFileSync(join(AGENT_ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = runBinary(['--version']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(runNpmAgent(['--version']).stdout);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });

  it('collect finds nvidia-smi on PATH and prints what the npm agent prints (but the time)', () => {
    smi.set('gpus', { out: gpuLine(0, 85) + gpuLine(1, 3) });
    smi.set('apps', { out: '31337, 20000, GPU-00000000-0000-0000-0000-000000000000\n' });
    mkdirSync(join(tmp, 'jupyter'), { recursive: true });
    const args = ['collect', '--instance-id', '456789', '--utmp-file', join(tmp, 'no-utmp'), '--jupyter-runtime-dir', join(tmp, 'jupyter'), '--state-dir', join(tmp, 'state')];
    const fromBinary = runBinary(args);
    expect(fromBinary.stderr).toBe('');
    expect(fromBinary.status).toBe(0);
    const fromNpm = runNpmAgent(args);
    expect(fromNpm.status).toBe(0);
    const [a, b] = [JSON.parse(fromBinary.stdout), JSON.parse(fromNpm.stdout)];
    expect(a).toMatchObject({ instance_id: 456789, gpu_metrics: { utilization_percent: 85 }, process_count: 1, collector_errors: [] });
    expect(Date.parse(a.timestamp)).not.toBeNaN();
    expect({ ...a, timestamp: 'T' }).toEqual({ ...b, timestamp: 'T' });
  });

  it('install writes a unit that runs the binary itself, with no node and no node flags', () => {
    const r = runBinary(['install', '--dry-run', '--root', join(tmp, 'root'), '--instance-id', '1', '--api-url', 'http://h:1'], { DUMONT_AGENT_TOKEN: 'agent-token-abcdef123456' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^ExecStart=${systemdQuote(binary).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} run --config /etc/dumont-agent/config\\.json$`, 'm'));
    expect(r.stdout).not.toContain('--lite-mode');
  });

  it('beats to the real server until idle, runs the hibernate hook and reaches hibernated', async () => {
    const server = await startServerProcess({
      env: {
        ...FAST_LIFECYCLE_ENV,
      },
    });
    servers.push(server);
    const dir = join(tmp, 'beats');
    mkdirSync(join(dir, 'jupyter'), { recursive: true });
    const tokenFile = await registerInstance(server, 4545, dir);
    smi.set('gpus', { out: gpuLine(0, 85) });
    smi.set('apps', { out: '' });
    const proof = join(dir, 'hibernate-proof');
    const agent = await startAgent(
      [
        '--instance-id', '4545', '--api-url', server.url, '--token-file', tokenFile, '--state-dir', join(dir, 'state'),
        '--utmp-file', join(dir, 'no-utmp'), '--jupyter-runtime-dir', join(dir, 'jupyter'),
        '--hibernate-hook', `echo "$DUMONT_COMMAND_ID" > ${proof}; echo checkpoint saved`,
      ],
      env,
      (argv) => [binary, ...argv.slice(2)], // not `node cli.js`: the binary alone
    );
    expect(readlinkSync(`/proc/${agent.pid}/exe`)).toBe(binary);

    const detail = () => admin(server, 'GET', '/api/v1/agent/instances/4545');
    const active = await waitFor('status active', async () => {
      const d = await detail();
      return d.status === 'active' ? d : undefined;
    }, 15_000, 50);
    expect(active.agent_version).toBe(JSON.parse(readFileSync(join(AGENT_ROOT, 'package.json'), 'utf8')).version);
    expect(active.gpu_metrics.utilization_percent).toBe(85);

    smi.set('gpus', { out: gpuLine(0, 0) });
    const seen: string[] = [];
    await waitFor('status hibernated', async () => {
      const status = (await detail()).status as string;
      if (seen.at(-1) !== status) seen.push(status);
      return status === 'hibernated';
    }, 30_000, 25);
    expect(seen).toEqual(['active', 'idle', 'hibernating', 'hibernated']);
    const commands = await admin<{ commands: Array<{ id: string; type: string; state: string; detail: string }> }>(server, 'GET', '/api/v1/agent/instances/4545/commands');
    expect(commands.commands).toMatchObject([{ type: 'hibernate', state: 'succeeded', detail: expect.stringContaining('checkpoint saved') }]);
    expect(existsSync(proof) && readFileSync(proof, 'utf8').trim()).toBe(commands.commands[0]!.id);
    await agent.waitForLog('quiet after hibernation', (l) => l.msg === 'hibernation confirmed by the server: no beats while the machine is stopped', 10_000);
    expect(agent.child.exitCode).toBeNull();
  }, 60_000);
});
