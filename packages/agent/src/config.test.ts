import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, parseCommandLine, resolveConfig, statusEndpoint } from './config.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const file = (name: string, text: string, mode = 0o600) => {
  const path = join(tmp, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
};
const resolve = (argv: string[], env: NodeJS.ProcessEnv = {}) => resolveConfig(parseCommandLine(argv).values, env);

describe('command line', () => {
  it('accepts the seed’s form as written, defaulting to run', () => {
    const line = parseCommandLine(['--instance-id', '456789', '--api-url', 'http://host:8080']);
    expect(line.command).toBe('run');
    const config = resolveConfig(line.values, {});
    expect(config.instanceId).toBe(456789);
    expect(config.apiUrl).toBe('http://host:8080');
    expect(statusEndpoint(config.apiUrl!)).toBe('http://host:8080/api/v1/agent/status');
  });

  it('has the subcommands and install flags', () => {
    expect(parseCommandLine(['collect', '--instance-id', '1']).command).toBe('collect');
    expect(parseCommandLine(['install', '--dry-run', '--root', '/tmp/r'])).toMatchObject({ command: 'install', dryRun: true, root: '/tmp/r' });
    expect(parseCommandLine(['uninstall', '--purge'])).toMatchObject({ command: 'uninstall', purge: true, root: '/' });
  });

  it('refuses unknown flags, commands and stray arguments', () => {
    expect(() => parseCommandLine(['--instance-idd', '1'])).toThrow(ConfigError);
    expect(() => parseCommandLine(['launch'])).toThrow(/unknown command "launch"/);
    expect(() => parseCommandLine(['run', 'extra'])).toThrow(/unexpected argument/);
  });

  it('has the fixed flags, each settable', () => {
    const c = resolve([
      '--nvidia-smi', '/opt/nv/nvidia-smi', '--state-dir', '/srv/state',
      '--hibernate-hook', 'sync-workspace', '--snapshot-hook', 'snap', '--restart-hook', 'restart-it', '--warning-hook', 'wall "bye"',
      '--restart-service', 'a.service', '--restart-service', 'b.service', '--jupyter-runtime-dir', '/r1',
      '--max-backoff-seconds', '0.5', '--request-timeout-seconds', '2', '--hook-timeout-seconds', '30',
    ]);
    expect(c).toMatchObject({
      nvidiaSmi: '/opt/nv/nvidia-smi',
      stateDir: '/srv/state',
      hooks: { hibernate: 'sync-workspace', snapshot: 'snap', restart: 'restart-it', warning: 'wall "bye"' },
      restartServices: ['a.service', 'b.service'],
      jupyterRuntimeDirs: ['/r1'],
      maxBackoffMs: 500,
      requestTimeoutMs: 2000,
      hookTimeoutMs: 30_000,
    });
  });

  it('has sane defaults', () => {
    expect(resolve([])).toMatchObject({
      instanceId: null, apiUrl: null, token: null, nvidiaSmi: 'nvidia-smi', stateDir: '/var/lib/dumont-agent',
      maxBackoffMs: 300_000, requestTimeoutMs: 10_000, intervalMs: 30_000, utmpFile: '/var/run/utmp',
      jupyterRuntimeDirs: null, hooks: { hibernate: null, snapshot: null, restart: null, warning: null },
    });
  });

  it('accepts --idle-utilization-percent from old configs, ignores it, and warns that the server decides', () => {
    const fromFlag = resolve(['--idle-utilization-percent', '12.5']);
    expect(fromFlag.warnings).toEqual([expect.stringMatching(/^--idle-utilization-percent is ignored: the server decides .*DUMONT_IDLE_UTILIZATION_PERCENT/)]);
    expect(fromFlag).not.toHaveProperty('idleUtilizationPercent');
    const fromFile = resolve(['--config', file('old.json', JSON.stringify({ 'instance-id': 3, 'idle-utilization-percent': 5 }))]);
    expect(fromFile.instanceId).toBe(3);
    expect(fromFile.warnings).toEqual(fromFlag.warnings);
    expect(resolve([]).warnings).toEqual([]);
  });

  it('defaults the state dir to systemd’s STATE_DIRECTORY when it is set', () => {
    expect(resolve([], { STATE_DIRECTORY: '/var/lib/dumont-agent-x:/other' }).stateDir).toBe('/var/lib/dumont-agent-x');
    expect(resolve(['--state-dir', '/s'], { STATE_DIRECTORY: '/var/lib/x' }).stateDir).toBe('/s');
  });

  it('rejects bad values with the flag’s name', () => {
    expect(() => resolve(['--instance-id', '12.5'])).toThrow(/--instance-id must be an integer/);
    expect(() => resolve(['--instance-id', '0'])).toThrow(/--instance-id/);
    expect(() => resolve(['--max-backoff-seconds', 'soon'])).toThrow(/--max-backoff-seconds must be a number/);
    expect(() => resolve(['--api-url', 'host:8080'])).toThrow(/--api-url must be http or https/);
    expect(() => resolve(['--log-level', 'loud'])).toThrow(/--log-level/);
  });

  it('accepts an --api-url that already names the API root', () => {
    expect(statusEndpoint(resolve(['--api-url', 'https://api.example.test/api/v1/']).apiUrl!)).toBe('https://api.example.test/api/v1/agent/status');
  });
});

describe('config file and precedence', () => {
  it('reads the same names from the file; flags win over the file', () => {
    const path = file('c.json', JSON.stringify({ 'instance-id': 11, 'api-url': 'http://a:1', 'hibernate-hook': 'from-file', 'restart-service': ['x'] }));
    expect(resolve(['--config', path])).toMatchObject({ instanceId: 11, apiUrl: 'http://a:1', hooks: { hibernate: 'from-file' }, restartServices: ['x'] });
    expect(resolve(['--config', path, '--instance-id', '12', '--hibernate-hook', 'from-flag'])).toMatchObject({ instanceId: 12, hooks: { hibernate: 'from-flag' } });
  });

  it('refuses unknown keys, wrong types and broken JSON', () => {
    expect(() => resolve(['--config', file('u.json', '{"instance_id": 1}')])).toThrow(/unknown key "instance_id"/);
    expect(() => resolve(['--config', file('t.json', '{"restart-service": "x"}')])).toThrow(/wrong type/);
    expect(() => resolve(['--config', file('b.json', '{')])).toThrow(/not valid JSON/);
    expect(() => resolve(['--config', join(tmp, 'none.json')])).toThrow(/cannot read config file/);
  });

  it('token precedence: --token, --token-file, DUMONT_AGENT_TOKEN, file token, file token-file', () => {
    const tf = file('tok', '  from-token-file-0001\n');
    const tf2 = file('tok2', 'from-config-token-file\n');
    const cfg = file('tc.json', JSON.stringify({ token: 'from-config-token', 'token-file': tf2 }));
    const cfgFileOnly = file('tc2.json', JSON.stringify({ 'token-file': tf2 }));
    const env = { DUMONT_AGENT_TOKEN: 'from-env' };
    expect(resolve(['--config', cfg, '--token-file', tf, '--token', 'from-flag'], env).token).toBe('from-flag');
    expect(resolve(['--config', cfg, '--token-file', tf], env).token).toBe('from-token-file-0001');
    expect(resolve(['--config', cfg], env).token).toBe('from-env');
    expect(resolve(['--config', cfg]).token).toBe('from-config-token');
    expect(resolve(['--config', cfgFileOnly]).token).toBe('from-config-token-file');
  });

  it('warns about a world-readable token file and about --token, never echoing the token', () => {
    const open = file('open-tok', 'world-readable-token\n', 0o644);
    const c = resolve(['--token-file', open]);
    expect(c.warnings).toEqual([`token file ${open} is readable by every user; chmod 600 it`]);
    expect(resolve(['--token', 'visible-token-1']).warnings[0]).toMatch(/prefer --token-file/);
    expect(JSON.stringify([c.warnings, c.tokenSource])).not.toContain('world-readable-token');
  });

  it('refuses an empty or missing token file', () => {
    expect(() => resolve(['--token-file', file('empty', ' \n')])).toThrow(/is empty/);
    expect(() => resolve(['--token-file', join(tmp, 'missing')])).toThrow(/cannot read token file/);
  });
});

describe('signal hooks', () => {
  it('--signal-hook key=command is repeatable; the timeout defaults to 5 s', () => {
    const c = resolve(['--signal-hook', 'slurm=squeue -h | grep -q .', '--signal-hook', 'jupyter-hub=curl -sf http://h/busy', '--signal-timeout-seconds', '2.5']);
    expect(c.signalHooks).toEqual([
      { key: 'slurm', command: 'squeue -h | grep -q .' },
      { key: 'jupyter-hub', command: 'curl -sf http://h/busy' },
    ]);
    expect(c.signalTimeoutMs).toBe(2500);
    expect(resolve([])).toMatchObject({ signalHooks: [], signalTimeoutMs: 5000 });
  });

  it('reads them from the config file as a list, flags replacing the file’s', () => {
    const path = file('sig.json', JSON.stringify({ 'signal-hook': ['slurm=from-file'], 'signal-timeout-seconds': 3 }));
    expect(resolve(['--config', path])).toMatchObject({ signalHooks: [{ key: 'slurm', command: 'from-file' }], signalTimeoutMs: 3000 });
    expect(resolve(['--config', path, '--signal-hook', 'hub=from-flag']).signalHooks).toEqual([{ key: 'hub', command: 'from-flag' }]);
    expect(() => resolve(['--config', file('sig-bad.json', '{"signal-hook": "slurm=x"}')])).toThrow(/wrong type/);
  });

  it('refuses bad keys, a missing command, a repeated key and a bad timeout at startup', () => {
    expect(() => resolve(['--signal-hook', 'Slurm=x'])).toThrow(ConfigError);
    expect(() => resolve(['--signal-hook', 'Slurm=x'])).toThrow(/--signal-hook key "Slurm" is not valid/);
    expect(() => resolve(['--signal-hook', 'slurm'])).toThrow(/--signal-hook must be KEY=COMMAND/);
    expect(() => resolve(['--signal-hook', 'slurm='])).toThrow(/--signal-hook slurm= has no command/);
    expect(() => resolve(['--signal-hook', 'a=x', '--signal-hook', 'a=y'])).toThrow(/--signal-hook a is given twice/);
    const seventeen = Array.from({ length: 17 }, (_, i) => ['--signal-hook', `k${i}=true`]).flat();
    expect(() => resolve(seventeen)).toThrow(/at most 16 --signal-hook/);
    expect(resolve(seventeen.slice(0, 32)).signalHooks).toHaveLength(16);
    expect(() => resolve(['--signal-timeout-seconds', 'soon'])).toThrow(/--signal-timeout-seconds must be a number/);
  });
});
