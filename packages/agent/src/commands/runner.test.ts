import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DeliveredCommand } from '@dumont/protocol';
import { isAlive, killIfMatches, waitFor } from '../test-support/processes.js';
import { runHook } from './hooks.js';
import { RESTART_EXIT_CODE, executeCommand, type RunnerConfig } from './runner.js';
import { gpuLine } from '../test-support/fake-nvidia-smi.js';
import { machineCollector, testRunnerConfig } from '../test-support/runner-config.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-runner-'));
const strays: number[] = [];
afterAll(() => {
  for (const pid of strays) killIfMatches(pid, (cmdline) => cmdline === 'sleep\x0060\x00');
  rmSync(tmp, { recursive: true, force: true });
});

const cmd = (type: string, args: Record<string, unknown> = {}, id = `cmd-${type}`): DeliveredCommand => ({
  id, type: type as DeliveredCommand['type'], args, issued_at: '2024-12-20T15:30:00Z',
});
const config = (over: Partial<RunnerConfig> = {}): RunnerConfig => testRunnerConfig(tmp, over);
const never = new AbortController().signal;

/** A stand-in program (npm, systemctl) that records its arguments and exits as told. */
function fakeProgram(name: string, exit = 0, output = ''): { path: string; args: () => string[] } {
  const path = join(tmp, name);
  writeFileSync(path, `#!/bin/sh\necho "$@" > "${path}.args"\nprintf '%s' '${output}'\nexit ${exit}\n`);
  chmodSync(path, 0o755);
  return { path, args: () => (existsSync(`${path}.args`) ? readFileSync(`${path}.args`, 'utf8').trim().split(' ') : []) };
}

describe('hooks', () => {
  it('hibernate runs its hook with the command in the environment; exit 0 is success', async () => {
    const proof = join(tmp, 'hibernated');
    const hook = `echo "$DUMONT_COMMAND_ID $DUMONT_COMMAND_TYPE $DUMONT_INSTANCE_ID $DUMONT_COMMAND_ARGS" > ${proof}; echo checkpoint saved`;
    const outcome = await executeCommand(cmd('hibernate', { reason: 'idle' }), config({ hooks: { hibernate: hook, snapshot: null, restart: null } }), never);
    expect(outcome).toEqual({ status: 'succeeded', detail: 'hibernate hook exited with code 0\n--- output ---\ncheckpoint saved' });
    expect(readFileSync(proof, 'utf8')).toBe('cmd-hibernate hibernate 456789 {"reason":"idle"}\n');
  });

  it('hibernate first reads the machine again, by the rule the command carries', async () => {
    const proof = join(tmp, 'hibernated-at-7');
    const hooks = { hibernate: `echo ran > ${proof}`, snapshot: null, restart: null };
    const at7 = machineCollector(tmp, gpuLine(0, 7));
    // An operator's command with no rule: the protocol's default of 5 % makes 7 % busy.
    expect(await executeCommand(cmd('hibernate', {}), config({ hooks, sample: at7.sample }), never)).toEqual({
      status: 'failed',
      detail: 'refused: GPU 0 at 7% utilization (server rule: below 5%); the hook was not run',
    });
    expect(existsSync(proof)).toBe(false);
    // The policy's command carries the server's rule: below 10 %, so 7 % is idle.
    const outcome = await executeCommand(cmd('hibernate', { idle_utilization_percent: 10, ignore_gpu_processes: false }), config({ hooks, sample: at7.sample }), never);
    expect(outcome).toEqual({ status: 'succeeded', detail: 'hibernate hook exited with code 0 (no output)' });
    expect(existsSync(proof)).toBe(true);
  });

  it('a failing hook is failed, with its exit code and output tail (stderr included)', async () => {
    const outcome = await executeCommand(cmd('snapshot'), config({ hooks: { hibernate: null, snapshot: 'echo disk full >&2; exit 3', restart: null } }), never);
    expect(outcome).toEqual({ status: 'failed', detail: 'snapshot hook exited with code 3\n--- output ---\ndisk full' });
  });

  it('keeps only the last 4 KiB of a chatty hook', async () => {
    const run = await runHook('snapshot', 'seq 1 100000; echo the-end', { timeoutMs: 10_000, env: {} });
    expect(run.status).toBe('succeeded');
    expect(run.detail).toMatch(/--- output \(last 4 KiB\) ---\n/);
    expect(run.detail.endsWith('99999\n100000\nthe-end')).toBe(true);
    expect(run.detail.length).toBeLessThan(4096 + 100);
  });

  it('a hook that hangs is killed with its children at the timeout, and failed', async () => {
    const pidFile = join(tmp, 'hang.pid');
    const outcome = await executeCommand(
      cmd('hibernate'),
      config({ hookTimeoutMs: 300, hooks: { hibernate: `sleep 60 & echo $! > ${pidFile}; echo syncing; wait`, snapshot: null, restart: null } }),
      never,
    );
    expect(outcome).toEqual({ status: 'failed', detail: 'hibernate hook timed out after 0.3 s and was killed\n--- output ---\nsyncing' });
    const child = Number(readFileSync(pidFile, 'utf8'));
    strays.push(child);
    await waitFor('the hook’s child to die', () => !isAlive(child), 3000);
  });

  it('an abandoned hook (agent stopping) is killed and failed', async () => {
    const stop = new AbortController();
    const running = executeCommand(cmd('snapshot'), config({ hooks: { hibernate: null, snapshot: 'sleep 60', restart: null } }), stop.signal);
    setTimeout(() => stop.abort(), 100);
    expect(await running).toEqual({ status: 'failed', detail: 'snapshot hook abandoned: the agent is stopping; the hook was killed (no output)' });
  });

  it('an unconfigured hook is failed with a clear detail, not ignored', async () => {
    expect(await executeCommand(cmd('hibernate'), config(), never)).toEqual({
      status: 'failed',
      detail: 'no hibernate hook is configured (--hibernate-hook); nothing was done',
    });
    expect((await executeCommand(cmd('snapshot'), config(), never)).detail).toMatch(/no snapshot hook/);
  });

  it('an unknown command type is failed with a clear detail', async () => {
    expect(await executeCommand(cmd('teleport'), config(), never)).toEqual({
      status: 'failed',
      detail: 'unknown command type "teleport"; this agent (0.1.0) runs hibernate, snapshot, restart and update',
    });
  });
});

describe('restart', () => {
  it('runs the restart hook when there is one', async () => {
    const outcome = await executeCommand(cmd('restart'), config({ hooks: { hibernate: null, snapshot: null, restart: 'echo restarted' }, restartServices: ['x'] }), never);
    expect(outcome).toMatchObject({ status: 'succeeded', detail: expect.stringMatching(/^restart hook exited with code 0/) });
    expect(outcome.exitCode).toBeUndefined();
  });

  it('restarts the configured services with systemctl', async () => {
    const systemctl = fakeProgram('systemctl-ok');
    const outcome = await executeCommand(cmd('restart'), config({ restartServices: ['jupyter.service', 'sshd.service'], systemctl: systemctl.path }), never);
    expect(outcome).toEqual({ status: 'succeeded', detail: 'restarted jupyter.service, sshd.service' });
    expect(systemctl.args()).toEqual(['restart', 'jupyter.service', 'sshd.service']);
  });

  it('reports a failed systemctl', async () => {
    const systemctl = fakeProgram('systemctl-bad', 5, 'Unit jupyter.service not found.');
    const outcome = await executeCommand(cmd('restart'), config({ restartServices: ['jupyter.service'], systemctl: systemctl.path }), never);
    expect(outcome).toEqual({ status: 'failed', detail: 'systemctl restart jupyter.service exited with code 5\nUnit jupyter.service not found.' });
  });

  it('with nothing configured, restarts the agent itself (succeeded, then exit non-zero)', async () => {
    expect(await executeCommand(cmd('restart'), config(), never)).toEqual({
      status: 'succeeded',
      detail: 'no restart hook or service configured: restarting the agent itself',
      exitCode: RESTART_EXIT_CODE,
    });
  });
});

describe('update', () => {
  it('installs the requested version globally with npm, then asks to exit non-zero', async () => {
    const npm = fakeProgram('npm-ok');
    const outcome = await executeCommand(cmd('update', { version: '1.2.0' }), config({ npm: npm.path }), never);
    expect(outcome).toEqual({ status: 'succeeded', detail: 'installed @dumont/agent@1.2.0; restarting on it', exitCode: RESTART_EXIT_CODE });
    expect(npm.args()).toEqual(['install', '--global', '--no-audit', '--no-fund', '@dumont/agent@1.2.0']);
  });

  it('a failed install keeps the agent running, failed with npm’s output', async () => {
    const npm = fakeProgram('npm-bad', 1, 'npm ERR! 404 Not Found');
    const outcome = await executeCommand(cmd('update', { version: '9.9.9' }), config({ npm: npm.path }), never);
    expect(outcome).toEqual({ status: 'failed', detail: 'npm install --global @dumont/agent@9.9.9 exited with code 1; still running 0.1.0\nnpm ERR! 404 Not Found' });
  });

  it.each([[undefined], ['latest'], ['1.2'], ['1.2.0; rm -rf /'], [120]])('refuses version %j without running npm', async (version) => {
    const npm = fakeProgram(`npm-never-${String(version).length}`);
    const outcome = await executeCommand(cmd('update', version === undefined ? {} : { version }), config({ npm: npm.path }), never);
    expect(outcome.status).toBe('failed');
    expect(outcome.detail).toMatch(/update needs args.version/);
    expect(npm.args()).toEqual([]);
  });

  it('is a no-op for the running version', async () => {
    expect(await executeCommand(cmd('update', { version: '0.1.0' }), config(), never)).toEqual({ status: 'succeeded', detail: 'already running 0.1.0; nothing to do' });
  });
});

describe('hibernate forced by an admin schedule', () => {
  const SCHEDULE = 'schedule: outside active hours (Europe/Berlin Mon-Fri 08:00-20:00)';
  /** The args the server's schedule sends: its idle rule, plus why it overrides it. */
  const forcedArgs = { idle_utilization_percent: 5, ignore_gpu_processes: false, forced: true, reason: SCHEDULE };
  let n = 0;
  function busy(hook: (proof: string) => string) {
    const proof = join(tmp, `forced-${n++}`);
    const training = machineCollector(tmp, gpuLine(0, 0) + gpuLine(1, 95));
    return { proof, config: config({ hooks: { hibernate: hook(proof), snapshot: null, restart: null }, sample: training.sample }) };
  }

  it('a busy machine refuses a normal hibernate, and one whose `forced` is not literally true', async () => {
    for (const args of [{ idle_utilization_percent: 5, ignore_gpu_processes: false }, { ...forcedArgs, forced: 'true' }]) {
      const m = busy((proof) => `echo ran > ${proof}`);
      expect(await executeCommand(cmd('hibernate', args), m.config, never)).toEqual({
        status: 'failed',
        detail: 'refused: GPU 1 at 95% utilization (server rule: below 5%); the hook was not run',
      });
      expect(existsSync(m.proof)).toBe(false);
    }
  });

  it('forced: the hook runs on the busy machine (it sees the reason in its args), succeeded, detail says forced', async () => {
    const m = busy((proof) => `echo "$DUMONT_COMMAND_ARGS" > ${proof}; echo checkpoint saved`);
    const outcome = await executeCommand(cmd('hibernate', forcedArgs), m.config, never);
    expect(outcome).toEqual({ status: 'succeeded', detail: `forced: ${SCHEDULE}\nhibernate hook exited with code 0\n--- output ---\ncheckpoint saved` });
    expect(JSON.parse(readFileSync(m.proof, 'utf8'))).toEqual(forcedArgs);
  });

  it('forced with no reason: a default one', async () => {
    const m = busy((proof) => `echo ran > ${proof}`);
    const outcome = await executeCommand(cmd('hibernate', { forced: true }), m.config, never);
    expect(outcome).toEqual({ status: 'succeeded', detail: 'forced: forced by the server policy\nhibernate hook exited with code 0 (no output)' });
  });

  it('forced: a failing hook fails the command', async () => {
    const m = busy(() => 'echo cannot save checkpoint >&2; exit 4');
    expect(await executeCommand(cmd('hibernate', forcedArgs), m.config, never)).toEqual({
      status: 'failed',
      detail: `forced: ${SCHEDULE}\nhibernate hook exited with code 4\n--- output ---\ncannot save checkpoint`,
    });
  });

  it('forced, but no hook configured: not configured, as for any hibernate (nothing is stopped unsaved by the agent)', async () => {
    expect(await executeCommand(cmd('hibernate', forcedArgs), config(), never)).toEqual({
      status: 'failed',
      detail: 'no hibernate hook is configured (--hibernate-hook); nothing was done',
    });
  });
});
