import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INSTALL_WRAPPER_PATH } from '../agent-install-script.js';
import { agentDownloadRoutes, DEFAULT_AGENT_DIST } from './agent-download-routes.js';

/**
 * The one-line installer on a host without Node (most GPU images): it takes the single executable,
 * verified against the server's SHA-256, installs it as /usr/local/bin/dumont-agent and lets it write
 * its own unit; without systemd it says how to run it. The host is a `--root` folder and a PATH that
 * holds the usual tools (sh, curl, sha256sum, coreutils) and no `node`.
 */

const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const ARCH = process.arch === 'arm64' ? 'arm64' : 'x64';
const BINARY = join(DEFAULT_AGENT_DIST, `dumont-agent-linux-${ARCH}`);

const tmp = mkdtempSync(join(tmpdir(), 'dumont-install-binary-'));
let n = 0;
const freshDir = (name: string) => {
  const dir = join(tmp, `${name}-${n++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
};

/** A PATH with the tools the installer uses, each linked from where this machine has it, and no node. */
function hostPath(): string {
  const tools = join(tmp, 'tools');
  mkdirSync(tools);
  for (const tool of ['sh', 'curl', 'sha256sum', 'cut', 'tr', 'mktemp', 'rm', 'mkdir', 'cp', 'chmod', 'mv', 'dirname', 'uname', 'getconf', 'cat', 'sed']) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    if (found) symlinkSync(found, join(tools, tool));
  }
  // Enabling a unit under --root is recorded, not performed (the real systemctl may be absent).
  writeFileSync(join(tools, 'systemctl'), `#!/bin/sh\necho "$*" >> "${join(tmp, 'systemctl.log')}"\n`);
  chmodSync(join(tools, 'systemctl'), 0o755);
  return tools;
}

function runOneLiner(path: string, scriptUrl: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn('sh', ['-c', 'curl -fsSL "$0" | sh -s -- "$@"', scriptUrl, ...args], { env: { PATH: path, HOME: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) =>
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    }),
  );
}

/** The download routes serving `distDir` (the real build, or a tampered copy of it). */
async function downloadServer(distDir: string): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify();
  agentDownloadRoutes(app, { publicUrl: 'http://unused.invalid', publicUrlSet: false, distDir });
  return { app, url: await app.listen({ host: '127.0.0.1', port: 0 }) };
}

let PATH: string;
let real: { app: FastifyInstance; url: string };
let tampered: { app: FastifyInstance; url: string };
let binarySha: string;
let tokenFile: string;

beforeAll(async () => {
  // `npm run build` makes it; a bare vitest run on a fresh build folder makes it here.
  if (!existsSync(BINARY)) execFileSync(process.execPath, [join(REPO_ROOT, 'packages', 'agent', 'scripts', 'build-binary.mjs')], { stdio: 'inherit' });
  binarySha = readFileSync(`${BINARY}.sha256`, 'utf8').split(' ')[0]!;
  PATH = hostPath();
  expect(spawnSync('sh', ['-c', 'command -v node'], { env: { PATH } }).status).not.toBe(0);
  real = await downloadServer(DEFAULT_AGENT_DIST);
  // The same binary with a .sha256 that does not match it: what a corrupted download looks like.
  const bad = freshDir('tampered-dist');
  symlinkSync(BINARY, join(bad, `dumont-agent-linux-${ARCH}`));
  writeFileSync(join(bad, `dumont-agent-linux-${ARCH}.sha256`), `${'0'.repeat(64)}  dumont-agent-linux-${ARCH}\n`);
  writeFileSync(join(bad, 'dumont-agent.mjs'), '');
  writeFileSync(join(bad, 'dumont-agent.mjs.sha256'), `${'0'.repeat(64)}  dumont-agent.mjs\n`);
  tampered = await downloadServer(bad);
  tokenFile = join(tmp, 'dumont-agent.token');
  writeFileSync(tokenFile, 'dmt_binary_install_token\n');
}, 300_000);

afterAll(async () => {
  await real?.app.close();
  await tampered?.app.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('the installer on a host without Node', () => {
  it('installs the verified single executable, and the executable writes its unit, config and token (0600)', async () => {
    const root = freshDir('root');
    const r = await runOneLiner(PATH, `${real.url}/agent/install.sh`, ['--server', real.url, '--api-url', 'http://127.0.0.1:9', '--instance-id', '77', '--token-file', tokenFile, '--root', root]);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    const installed = join(root, INSTALL_WRAPPER_PATH);
    expect(createHash('sha256').update(readFileSync(installed)).digest('hex')).toBe(binarySha);
    expect(statSync(installed).mode & 0o777).toBe(0o755);
    expect(existsSync(join(root, 'usr/local/lib/dumont'))).toBe(false);
    const unit = readFileSync(join(root, 'etc/systemd/system/dumont-agent.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/dumont-agent run --config \/etc\/dumont-agent\/config\.json$/m);
    expect(statSync(join(root, 'etc/dumont-agent/token')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(root, 'etc/dumont-agent/token'), 'utf8').trim()).toBe('dmt_binary_install_token');
    expect(JSON.parse(readFileSync(join(root, 'etc/dumont-agent/config.json'), 'utf8'))).toMatchObject({ 'instance-id': 77, 'api-url': 'http://127.0.0.1:9' });
    // The installed file is the agent, on a PATH with no node.
    const version = spawnSync(installed, ['--version'], { encoding: 'utf8', env: { PATH } });
    expect(version.status, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(REPO_ROOT, 'packages', 'agent', 'package.json'), 'utf8')).version);
  }, 180_000);

  it('refuses a download whose SHA-256 does not match, installing nothing', async () => {
    const root = freshDir('root');
    const r = await runOneLiner(PATH, `${tampered.url}/agent/install.sh`, ['--server', tampered.url, '--instance-id', '78', '--token-file', tokenFile, '--root', root]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`checksum mismatch for dumont-agent-linux-${ARCH}`);
    expect(existsSync(join(root, INSTALL_WRAPPER_PATH))).toBe(false);
    expect(existsSync(join(root, 'etc'))).toBe(false);
  }, 180_000);

  it('without systemd, installs it, writes the token (0600) and prints how to run it', async () => {
    const root = freshDir('root');
    const r = await runOneLiner(PATH, `${real.url}/agent/install.sh`, ['--server', real.url, '--instance-id', '79', '--token-file', tokenFile, '--root', root, '--no-systemd', '--', '--hibernate-hook', '/usr/local/bin/save']);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain('systemd is not running here');
    expect(r.stdout).toContain(`/usr/local/bin/dumont-agent run --instance-id 79 --api-url ${real.url} --token-file /etc/dumont-agent/token --hibernate-hook /usr/local/bin/save`);
    expect(createHash('sha256').update(readFileSync(join(root, INSTALL_WRAPPER_PATH))).digest('hex')).toBe(binarySha);
    expect(statSync(join(root, 'etc/dumont-agent/token')).mode & 0o777).toBe(0o600);
    expect(existsSync(join(root, 'etc/systemd'))).toBe(false);
  }, 180_000);

  it('takes the single executable over a Node older than the agent needs, and says so', async () => {
    const oldNode = freshDir('old-node');
    writeFileSync(join(oldNode, 'node'), '#!/bin/sh\necho v20.5.1\n');
    chmodSync(join(oldNode, 'node'), 0o755);
    const root = freshDir('root');
    const r = await runOneLiner(`${oldNode}:${PATH}`, `${real.url}/agent/install.sh`, ['--server', real.url, '--instance-id', '80', '--token-file', tokenFile, '--root', root]);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stderr).toContain('Node.js v20.5.1 is older than 20.19: installing the single executable');
    expect(createHash('sha256').update(readFileSync(join(root, INSTALL_WRAPPER_PATH))).digest('hex')).toBe(binarySha);
  }, 180_000);
});
