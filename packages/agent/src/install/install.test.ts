import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCommandLine, resolveConfig } from '../config.js';
import { ensureAgentBuilt } from '../test-support/ensure-built.js';
import { install, uninstall } from './install.js';
import { renderUnit, systemdQuote } from './systemd.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-install-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const root = () => {
  const r = join(tmp, `root-${n++}`);
  mkdirSync(r);
  return r;
};
const hasSystemd = spawnSync('systemctl', ['--version']).status === 0 && spawnSync('systemd-analyze', ['--version']).status === 0;
const TOKEN = 'agent-token-abcdef123456';

let cli: string;
beforeAll(async () => {
  cli = await ensureAgentBuilt();
}, 120_000);
const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, DUMONT_AGENT_TOKEN: '', ...env } });

describe('unit file', () => {
  const unit = renderUnit({ nodePath: '/usr/bin/node', cliPath: '/usr/lib/node_modules/@dumont/agent/dist/cli.js' });

  it('restarts on failure after 5 s, after the network is up', () => {
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^RestartSec=5$/m);
    expect(unit).toMatch(/^After=network-online\.target$/m);
    expect(unit).toMatch(/^Wants=network-online\.target$/m);
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/node --max-semi-space-size=1 --lite-mode \/usr\/lib\/node_modules\/@dumont\/agent\/dist\/cli\.js run --config \/etc\/dumont-agent\/config\.json$/m);
    expect(unit).toMatch(/^WantedBy=multi-user\.target$/m);
  });

  it('quotes paths the way systemd reads them', () => {
    expect(systemdQuote('/opt/my node/bin/node')).toBe('"/opt/my node/bin/node"');
    expect(systemdQuote('/a/$HOME/100%')).toBe('"/a/$$HOME/100%%"');
  });

  it.skipIf(!hasSystemd)('passes systemd-analyze verify', () => {
    const dir = root();
    const path = join(dir, 'dumont-agent.service');
    writeFileSync(path, renderUnit({ nodePath: process.execPath, cliPath: cli }));
    const r = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('dumont-agent install / uninstall (real process)', () => {
  it('--dry-run prints the unit and config, writes nothing, and never prints the token', () => {
    const r = root();
    const result = run(['install', '--dry-run', '--root', r, '--instance-id', '456789', '--api-url', 'http://host:8080', '--hibernate-hook', 'sync-home'], { DUMONT_AGENT_TOKEN: TOKEN });
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('# /etc/systemd/system/dumont-agent.service\n');
    expect(result.stdout).toContain('Restart=on-failure');
    expect(result.stdout).toContain('"hibernate-hook": "sync-home"');
    expect(result.stdout).toContain('"token-file": "/etc/dumont-agent/token"');
    expect(result.stdout).toContain(`would: systemctl --root=${r} enable dumont-agent.service`);
    expect(result.stdout + result.stderr).not.toContain(TOKEN);
    expect(existsSync(join(r, 'etc'))).toBe(false);
  });

  it.skipIf(!hasSystemd)('writes unit, config and token (0600) under --root and enables it with the real systemctl', () => {
    const r = root();
    const result = run(['install', '--root', r, '--instance-id', '456789', '--api-url', 'http://host:8080/', '--warning-hook', 'wall "hibernating soon"'], { DUMONT_AGENT_TOKEN: TOKEN });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const unit = readFileSync(join(r, 'etc/systemd/system/dumont-agent.service'), 'utf8');
    expect(unit).toContain(`ExecStart=${process.execPath} --max-semi-space-size=1 --lite-mode ${cli} run --config /etc/dumont-agent/config.json`);
    expect(JSON.parse(readFileSync(join(r, 'etc/dumont-agent/config.json'), 'utf8'))).toEqual({
      'api-url': 'http://host:8080',
      'instance-id': 456789,
      'token-file': '/etc/dumont-agent/token',
      'warning-hook': 'wall "hibernating soon"',
    });
    expect(statSync(join(r, 'etc/dumont-agent/config.json')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(r, 'etc/dumont-agent/token'), 'utf8')).toBe(`${TOKEN}\n`);
    expect(statSync(join(r, 'etc/dumont-agent/token')).mode & 0o777).toBe(0o600);
    expect(lstatSync(join(r, 'etc/systemd/system/multi-user.target.wants/dumont-agent.service')).isSymbolicLink()).toBe(true);
    expect(spawnSync('systemctl', [`--root=${r}`, 'is-enabled', 'dumont-agent.service'], { encoding: 'utf8' }).stdout.trim()).toBe('enabled');

    // The config it wrote is one the agent itself accepts (the token path is read only by `run`).
    const cfg = resolveConfig(parseCommandLine(['--config', join(r, 'etc/dumont-agent/config.json')]).values, {}, { readToken: false });
    expect(cfg).toMatchObject({ instanceId: 456789, apiUrl: 'http://host:8080', hooks: { warning: 'wall "hibernating soon"' } });

    const gone = run(['uninstall', '--root', r]);
    expect(gone.status).toBe(0);
    expect(existsSync(join(r, 'etc/systemd/system/dumont-agent.service'))).toBe(false);
    expect(existsSync(join(r, 'etc/systemd/system/multi-user.target.wants/dumont-agent.service'))).toBe(false);
    expect(existsSync(join(r, 'etc/dumont-agent/config.json'))).toBe(true);
    expect(run(['uninstall', '--root', r, '--purge']).status).toBe(0);
    expect(existsSync(join(r, 'etc/dumont-agent'))).toBe(false);
  });

  it('keeps a given --token-file where it is instead of copying the token', () => {
    const r = root();
    const tokenFile = join(tmp, 'my-token');
    writeFileSync(tokenFile, TOKEN);
    chmodSync(tokenFile, 0o600);
    const result = run(['install', '--dry-run', '--root', r, '--instance-id', '1', '--api-url', 'http://h:1', '--token-file', tokenFile]);
    expect(result.stdout).toContain(`"token-file": "${tokenFile}"`);
    expect(result.stdout).not.toContain('/etc/dumont-agent/token');
  });

  it('does not carry the ignored --idle-utilization-percent into a new config', () => {
    const result = run(['install', '--dry-run', '--root', root(), '--instance-id', '1', '--api-url', 'http://h:1', '--token', TOKEN, '--idle-utilization-percent', '10']);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('"instance-id": 1');
    expect(result.stdout).not.toContain('idle-utilization-percent');
    expect(result.stderr).toMatch(/--idle-utilization-percent is ignored: the server decides/);
  });

  it('refuses to install without instance id, API URL or token (exit 2)', () => {
    expect(run(['install', '--dry-run', '--api-url', 'http://h:1'], { DUMONT_AGENT_TOKEN: TOKEN })).toMatchObject({ status: 2, stderr: expect.stringMatching(/install needs --instance-id/) });
    expect(run(['install', '--dry-run', '--instance-id', '1'], { DUMONT_AGENT_TOKEN: TOKEN })).toMatchObject({ status: 2, stderr: expect.stringMatching(/--api-url/) });
    expect(run(['install', '--dry-run', '--instance-id', '1', '--api-url', 'http://h:1'])).toMatchObject({ status: 2, stderr: expect.stringMatching(/needs the agent token/) });
  });
});

describe('on the running system', () => {
  /** A stand-in systemctl that logs its arguments: the live sequence must not touch this machine. */
  function fakeSystemctl(dir: string): { path: string; calls: () => string[] } {
    const path = join(dir, 'systemctl');
    writeFileSync(path, `#!/bin/sh\necho "$*" >> "${path}.log"\n`);
    chmodSync(path, 0o755);
    return { path, calls: () => readFileSync(`${path}.log`, 'utf8').trim().split('\n') };
  }

  it('install reloads systemd and enables --now; uninstall disables --now, removes, reloads', () => {
    const r = root();
    const sc = fakeSystemctl(r);
    const config = resolveConfig(parseCommandLine(['--instance-id', '7', '--api-url', 'http://h:1', '--token', TOKEN]).values, {});
    const out: string[] = [];
    install(config, { root: r, dryRun: false, live: true, systemctl: sc.path, print: (t) => out.push(t), nodePath: '/usr/bin/node', cliPath: '/x/cli.js' });
    expect(sc.calls()).toEqual(['daemon-reload', 'enable --now dumont-agent.service']);
    expect(out.join('')).toContain('systemctl status dumont-agent');
    expect(out.join('')).toContain('journalctl -u dumont-agent');
    uninstall({ root: r, dryRun: false, live: true, systemctl: sc.path, print: () => {} });
    expect(sc.calls()).toEqual(['daemon-reload', 'enable --now dumont-agent.service', 'disable --now dumont-agent.service', 'daemon-reload']);
    expect(existsSync(join(r, 'etc/systemd/system/dumont-agent.service'))).toBe(false);
  });
});

describe('failures', () => {
  it('says in one sentence why install failed (here: the root is a file) and exits 1', () => {
    const notADir = join(tmp, 'file-root');
    writeFileSync(notADir, '');
    const r = run(['install', '--root', notADir, '--instance-id', '1', '--api-url', 'http://h:1'], { DUMONT_AGENT_TOKEN: TOKEN });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^dumont-agent install: ENOTDIR/);
    expect(r.stderr).not.toContain(TOKEN);
  });
});

describe('unit file for the single executable', () => {
  it('runs the binary itself: no node, no node flags; the one V8 flag it can take comes through its environment', () => {
    const unit = renderUnit({ nodePath: null, cliPath: '/usr/local/bin/dumont-agent' });
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/dumont-agent run --config \/etc\/dumont-agent\/config\.json$/m);
    expect(unit).toMatch(/^Environment=NODE_OPTIONS=--max-semi-space-size=1$/m);
    expect(unit).not.toContain('--lite-mode');
    expect(renderUnit({ nodePath: '/usr/bin/node', cliPath: '/x/cli.js' })).not.toContain('NODE_OPTIONS');
  });

  it('install with nodePath null writes that unit; under node it is never the default', () => {
    const r = root();
    const config = resolveConfig(parseCommandLine(['--instance-id', '7', '--api-url', 'http://h:1', '--token', TOKEN]).values, {});
    const out: string[] = [];
    install(config, { root: r, dryRun: true, print: (t) => out.push(t), nodePath: null, cliPath: '/opt/dumont agent' });
    expect(out.join('')).toMatch(/^ExecStart="\/opt\/dumont agent" run --config \/etc\/dumont-agent\/config\.json$/m);
    const underNode: string[] = [];
    install(config, { root: r, dryRun: true, print: (t) => underNode.push(t) });
    expect(underNode.join('')).toContain(`ExecStart=${process.execPath} --max-semi-space-size=1 --lite-mode `);
  });

  it.skipIf(!hasSystemd)('passes systemd-analyze verify', () => {
    const path = join(root(), 'dumont-agent.service');
    writeFileSync(path, renderUnit({ nodePath: null, cliPath: process.execPath }));
    const r = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
