import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFakeNvidiaSmi, gpuLine } from '../../../agent/src/test-support/fake-nvidia-smi.js';
import { INSTALL_BUNDLE_PATH, INSTALL_WRAPPER_PATH, installCommand, renderInstallScript } from '../agent-install-script.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';
import { agentDownloadRoutes, DEFAULT_AGENT_BUNDLE } from './agent-download-routes.js';

const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const AGENT_ROOT = join(REPO_ROOT, 'packages', 'agent');
const AGENT_CLI = join(AGENT_ROOT, 'dist', 'cli.js');
const AGENT_VERSION = (JSON.parse(readFileSync(join(AGENT_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const mtime = (path: string) => (existsSync(path) ? statSync(path).mtimeMs : 0);
/** tsc -b rewrites only the files that changed: the newest of them decides. */
function newestJs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestJs(path));
    else if (entry.name.endsWith('.js')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** The bundle is a build output: (re)made here when missing or older than the agent's own build. */
function ensureBundle(): void {
  if (!existsSync(AGENT_CLI)) execFileSync(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', join(AGENT_ROOT, 'tsconfig.json')], { stdio: 'inherit' });
  if (mtime(DEFAULT_AGENT_BUNDLE) < newestJs(join(AGENT_ROOT, 'dist'))) execFileSync(process.execPath, [join(AGENT_ROOT, 'scripts', 'bundle.mjs')], { stdio: 'inherit' });
}

const tmp = mkdtempSync(join(tmpdir(), 'dumont-agent-install-'));
let n = 0;
const freshDir = (name: string) => {
  const dir = join(tmp, `${name}-${n++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
};

/** The real systemctl can enable a unit in a --root image; where it is absent a stand-in records the call. */
const hasSystemctl = spawnSync('systemctl', ['--version']).status === 0;
const binDir = join(tmp, 'bin');
mkdirSync(binDir);
if (!hasSystemctl) {
  writeFileSync(join(binDir, 'systemctl'), `#!/bin/sh\necho "$*" >> "${join(tmp, 'systemctl.log')}"\n`);
  chmodSync(join(binDir, 'systemctl'), 0o755);
}
const PATH = `${binDir}:${process.env.PATH}`;

/**
 * Runs the one-liner the way an operator does (minus sudo): curl piped into sh. Asynchronous: the
 * servers it downloads from run in this process.
 */
function runOneLiner(scriptUrl: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn('sh', ['-c', 'curl -fsSL "$0" | sh -s -- "$@"', scriptUrl, ...args], { env: { PATH, HOME: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    }),
  );
}

const backend = (await testBackends()).find((b) => b.name === 'sqlite')!;
let t: TestServer;
let dispose: () => Promise<void>;
/** The download routes on their own Fastify app (app.ts wires them into the real server). */
let downloads: FastifyInstance;
let downloadUrl: string;
let bundleBytes: Buffer;
let bundleSha: string;

beforeAll(async () => {
  ensureBundle();
  bundleBytes = readFileSync(DEFAULT_AGENT_BUNDLE);
  bundleSha = createHash('sha256').update(bundleBytes).digest('hex');
  const opened = await backend.open();
  dispose = opened.dispose;
  t = await new TestServer(async () => opened.store).start();
  // The agent stamps beats with the real clock; the server must not think them from the future.
  t.clock.set(Date.now());
  downloads = Fastify();
  agentDownloadRoutes(downloads, { publicUrl: 'http://unused.invalid', publicUrlSet: false });
  downloadUrl = await downloads.listen({ host: '127.0.0.1', port: 0 });
}, 180_000);

afterAll(async () => {
  await downloads?.close();
  await t?.close();
  await dispose?.();
  rmSync(tmp, { recursive: true, force: true });
});

describe('installCommand', () => {
  it('is one curl | sudo sh line naming the server and instance, reading the token from a file', () => {
    const line = installCommand('https://dumont.invalid:8443/', 4242);
    expect(line).toBe(
      "curl -fsSL https://dumont.invalid:8443/agent/install.sh | sudo sh -s -- --server https://dumont.invalid:8443 --instance-id 4242 --token-file ./dumont-agent.token",
    );
  });

  it('shell-quotes a URL that sh would otherwise interpret', () => {
    expect(installCommand('http://h/x;rm -rf $HOME', 1)).toContain("'http://h/x;rm -rf $HOME/agent/install.sh'");
  });
});

describe('download routes', () => {
  it('serve the bundle and its SHA-256 in sha256sum format, without authentication', async () => {
    const bundle = await fetch(`${downloadUrl}/agent/dumont-agent.mjs`);
    expect(bundle.status).toBe(200);
    const bytes = Buffer.from(await bundle.arrayBuffer());
    expect(bytes.equals(bundleBytes)).toBe(true);
    expect(bytes.toString('utf8', 0, 20)).toBe('#!/usr/bin/env node\n');
    const sha = await fetch(`${downloadUrl}/agent/dumont-agent.mjs.sha256`);
    expect(sha.status).toBe(200);
    expect(await sha.text()).toBe(`${createHash('sha256').update(bytes).digest('hex')}  dumont-agent.mjs\n`);
    // What `npm run build` wrote next to the bundle agrees with what is served.
    expect(readFileSync(`${DEFAULT_AGENT_BUNDLE}.sha256`, 'utf8')).toBe(`${bundleSha}  dumont-agent.mjs\n`);
  });

  it('template the script with the URL it was fetched from, or DUMONT_PUBLIC_URL when set', async () => {
    const fromHost = await (await fetch(`${downloadUrl}/agent/install.sh`)).text();
    expect(fromHost).toMatch(/^#!\/bin\/sh\n/);
    expect(fromHost).toContain(`\nserver=${downloadUrl}\n`);

    const app = Fastify();
    agentDownloadRoutes(app, { publicUrl: 'https://dumont.invalid', publicUrlSet: true });
    const res = await app.inject({ method: 'GET', url: '/agent/install.sh', headers: { host: 'evil.invalid' } });
    expect(res.body).toContain('\nserver=https://dumont.invalid\n');
    // A Host header that is not a host name never reaches the script.
    const app2 = Fastify();
    agentDownloadRoutes(app2, { publicUrl: 'http://fallback.invalid:8080', publicUrlSet: false });
    const odd = await app2.inject({ method: 'GET', url: '/agent/install.sh', headers: { host: "x';reboot;'" } });
    expect(odd.body).toContain('\nserver=http://fallback.invalid:8080\n');
    expect(odd.body).not.toContain('reboot');
  });

  it('answer 503 naming `npm run build` when the bundle was not built', async () => {
    const app = Fastify();
    agentDownloadRoutes(app, { publicUrl: 'http://h', publicUrlSet: false, bundlePath: join(tmp, 'missing.mjs') });
    for (const url of ['/agent/dumont-agent.mjs', '/agent/dumont-agent.mjs.sha256']) {
      const res = await app.inject({ method: 'GET', url });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ error: 'unavailable' });
      expect(res.json().message).toContain('npm run build');
    }
  });
});

describe('install.sh (real sh, curl and server)', () => {
  it('refuses a bundle whose SHA-256 does not match, installing nothing', async () => {
    const tampered = Buffer.concat([bundleBytes, Buffer.from('\nprocess.exit(0);\n')]);
    const evil: Server = createServer((req, res) => {
      if (req.url === '/agent/dumont-agent.mjs') res.end(tampered);
      else if (req.url === '/agent/dumont-agent.mjs.sha256') res.end(`${bundleSha}  dumont-agent.mjs\n`);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
    try {
      const evilUrl = `http://127.0.0.1:${(evil.address() as AddressInfo).port}`;
      const root = freshDir('root');
      const tokenFile = join(freshDir('secrets'), 'token');
      writeFileSync(tokenFile, 'dat_unused_token\n');
      const r = await runOneLiner(`${downloadUrl}/agent/install.sh`, ['--server', evilUrl, '--instance-id', '7', '--token-file', tokenFile, '--root', root]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('checksum mismatch');
      expect(readdirSync(root)).toEqual([]);
    } finally {
      await new Promise((resolve) => evil.close(resolve));
    }
  });

  it('rejects usage errors before downloading anything', async () => {
    const root = freshDir('root');
    const noToken = await runOneLiner(`${downloadUrl}/agent/install.sh`, ['--instance-id', '7', '--root', root]);
    expect(noToken.status).toBe(1);
    expect(noToken.stderr).toContain('--token-file');
    const badId = await runOneLiner(`${downloadUrl}/agent/install.sh`, ['--instance-id', '7x', '--root', root]);
    expect(badId.status).toBe(1);
    expect(badId.stderr).toContain('--instance-id');
    expect(readdirSync(root)).toEqual([]);
  });

  it('installs bundle, wrapper, token (0600), config and unit; the installed agent beats and the instance comes online', async () => {
    const instanceId = 918273;
    const token = await t.register(instanceId);
    const root = freshDir('root');
    const tokenFile = join(freshDir('secrets'), 'dumont-agent.token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });

    // No --server: the script downloads from where it was served. The agent reports to the API server.
    const r = await runOneLiner(`${downloadUrl}/agent/install.sh`, ['--api-url', t.url, '--instance-id', String(instanceId), '--token-file', tokenFile, '--root', root]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`dumont-agent installed under ${root}`);
    expect(r.stdout + r.stderr).not.toContain(token);

    const installed = join(root, INSTALL_BUNDLE_PATH);
    expect(readFileSync(installed).equals(bundleBytes)).toBe(true);
    expect(statSync(installed).mode & 0o777).toBe(0o755);
    const wrapper = readFileSync(join(root, INSTALL_WRAPPER_PATH), 'utf8');
    expect(wrapper).toMatch(new RegExp(`^#!/bin/sh\\nexec /\\S*node ${INSTALL_BUNDLE_PATH} "\\$@"\\n$`));
    expect(statSync(join(root, INSTALL_WRAPPER_PATH)).mode & 0o777).toBe(0o755);

    const tokenPath = join(root, 'etc/dumont-agent/token');
    expect(readFileSync(tokenPath, 'utf8')).toBe(`${token}\n`);
    expect(statSync(tokenPath).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(join(root, 'etc/dumont-agent/config.json'), 'utf8'))).toEqual({
      'api-url': t.url,
      'instance-id': instanceId,
      'token-file': '/etc/dumont-agent/token',
    });
    const unit = readFileSync(join(root, 'etc/systemd/system/dumont-agent.service'), 'utf8');
    // The unit runs the installed bundle itself, not a path next to it that does not exist.
    expect(unit).toMatch(new RegExp(`^ExecStart=\\S*node --max-semi-space-size=1 --lite-mode ${installed} run --config /etc/dumont-agent/config.json$`, 'm'));
    // The enablement link points at the unit's path on the installed system, so it dangles here.
    if (hasSystemctl) expect(lstatSync(join(root, 'etc/systemd/system/multi-user.target.wants/dumont-agent.service')).isSymbolicLink()).toBe(true);
    else expect(readFileSync(join(tmp, 'systemctl.log'), 'utf8')).toBe(`--root=${root} enable dumont-agent.service\n`);

    // The installed agent, run from anywhere: its version, one collection, then real heartbeats.
    const agentEnv = { PATH: `${binDir}:${process.env.PATH}`, HOME: tmp };
    const version = spawnSync(process.execPath, [installed, '--version'], { encoding: 'utf8', cwd: tmp, env: agentEnv });
    expect(version.stdout).toBe(`${AGENT_VERSION}\n`);

    const smi = createFakeNvidiaSmi(freshDir('smi'));
    smi.set('gpus', { out: gpuLine(0, 87) });
    const work = freshDir('agent');
    mkdirSync(join(work, 'jupyter'));
    const local = ['--nvidia-smi', smi.path, '--utmp-file', join(work, 'no-utmp'), '--jupyter-runtime-dir', join(work, 'jupyter'), '--state-dir', join(work, 'state')];
    const collect = spawnSync(process.execPath, [installed, 'collect', '--instance-id', String(instanceId), ...local], { encoding: 'utf8', cwd: tmp, env: agentEnv });
    expect(collect.status).toBe(0);
    const body = JSON.parse(collect.stdout);
    expect(body.gpus).toHaveLength(1);
    expect(body.gpus[0].utilization_percent).toBe(87);

    const agent = spawn(process.execPath, [installed, 'run', '--instance-id', String(instanceId), '--api-url', t.url, '--token-file', tokenPath, ...local], {
      cwd: tmp,
      env: agentEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    agent.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    agent.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      const deadline = Date.now() + 15_000;
      let status: string | undefined;
      while (Date.now() < deadline) {
        status = (await t.request('GET', `/api/v1/agent/instances/${instanceId}`)).json?.status;
        if (status === 'active') break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(status, output).toBe('active');
      expect(await t.eventTypes(instanceId)).toContain('online');
      expect(output).not.toContain(token);
    } finally {
      agent.kill('SIGTERM');
      await new Promise((resolve) => (agent.exitCode === null ? agent.once('exit', resolve) : resolve(null)));
    }
  }, 90_000);
});

describe('renderInstallScript', () => {
  it('passes `sh -n` (POSIX syntax) and quotes the server URL', () => {
    const script = renderInstallScript("http://h:1/it's");
    const file = join(freshDir('script'), 'install.sh');
    writeFileSync(file, script);
    expect(spawnSync('sh', ['-n', file]).status).toBe(0);
    expect(script).toContain(`\nserver='http://h:1/it'\\''s'\n`);
    // Every placeholder was filled in.
    expect(script).not.toContain('@@');
  });
});
