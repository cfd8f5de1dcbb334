import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandJournal, JOURNAL_FILE } from './commands/journal.js';
import { ensureAgentBuilt } from './test-support/ensure-built.js';
import { createFakeNvidiaSmi, gpuLine } from './test-support/fake-nvidia-smi.js';
import { heartbeatSchemaErrors } from './test-support/schema.js';
import { makeUtmp } from './test-support/utmp-file.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let cli: string;
beforeAll(async () => {
  cli = await ensureAgentBuilt();
}, 120_000);
const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, DUMONT_AGENT_TOKEN: '', ...env }, timeout: 20_000 });

describe('dumont-agent collect', () => {
  it('prints the heartbeat body it would send, with no server, and exits 0', () => {
    const smi = createFakeNvidiaSmi(join(tmp, 'smi'));
    smi.set('gpus', { out: gpuLine(0, 2) + gpuLine(1, 40) });
    smi.set('apps', { out: '11, 100, GPU-10000000-0000-0000-0000-000000000000\n11, 100, GPU-00000000-0000-0000-0000-000000000000\n12, 5, GPU-00000000-0000-0000-0000-000000000000\n' });
    const utmp = join(tmp, 'utmp');
    // A tty no host has, so that no real keystroke decides last_activity here.
    writeFileSync(utmp, makeUtmp([{ type: 7, pid: process.pid, user: 'alice', line: 'pts/9999', host: '10.1.2.3' }]));
    mkdirSync(join(tmp, 'jupyter'));
    const r = run([
      'collect', '--instance-id', '456789', '--nvidia-smi', smi.path, '--utmp-file', utmp,
      '--jupyter-runtime-dir', join(tmp, 'jupyter'), '--state-dir', join(tmp, 'empty-state'), '--idle-utilization-percent', '5',
    ]);
    expect(r.status).toBe(0);
    const body = JSON.parse(r.stdout);
    expect(heartbeatSchemaErrors(body)).toEqual([]);
    expect(body).toMatchObject({
      instance_id: 456789,
      gpu_metrics: { utilization_percent: 40 },
      process_count: 2,
      active_users: 1,
      command_results: [],
      collector_errors: [],
      running_commands: [],
    });
    // A GPU at 40 % is a figure for the server to judge, not activity (the old flag changes nothing).
    expect(body.last_activity).toBeNull();
    expect(r.stderr).toMatch(/"level":"warn","msg":"--idle-utilization-percent is ignored: the server decides/);
  });

  it('shows results not yet sent, without changing the state dir', () => {
    const state = join(tmp, 'state');
    const journal = CommandJournal.open(state);
    journal.begin('c9', 'snapshot');
    journal.finish('c9', 'succeeded', 'ok');
    const before = readFileSync(join(state, JOURNAL_FILE), 'utf8');
    const r = run(['collect', '--instance-id', '1', '--nvidia-smi', join(tmp, 'none'), '--state-dir', state, '--utmp-file', join(tmp, 'none')]);
    const body = JSON.parse(r.stdout);
    expect(body.command_results).toEqual([{ id: 'c9', status: 'succeeded', detail: 'ok' }]);
    expect(body.collector_errors[0]).toEqual({ collector: 'nvidia-smi', message: `nvidia-smi (${join(tmp, 'none')}) not found` });
    expect(readFileSync(join(state, JOURNAL_FILE), 'utf8')).toBe(before);
  });
});

describe('command line errors and information', () => {
  it('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(run(['--version']).stdout).toBe(`${pkg.version}\n`);
  });

  it('--help lists every fixed flag', () => {
    const help = run(['--help']).stdout;
    for (const flag of ['--instance-id', '--api-url', '--token-file', '--token', '--config', '--nvidia-smi', '--state-dir', '--hibernate-hook', '--snapshot-hook', '--restart-hook', '--warning-hook']) {
      expect(help).toContain(`  ${flag} `);
    }
    expect(help).not.toContain('--idle-utilization-percent');
  });

  it.each([
    [['--api-url', 'http://h:1'], /--instance-id is required/],
    [['--instance-id', '1'], /--api-url is required/],
    [['--instance-id', '1', '--api-url', 'http://h:1'], /no agent token/],
    [['--instance-id', '1', '--api-url', 'http://h:1', '--bogus'], /Unknown option '--bogus'/],
    [['--instance-id', 'abc', '--api-url', 'http://h:1'], /--instance-id must be an integer/],
  ])('run %j exits 2: %s', (args, message) => {
    const r = run(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });
});
