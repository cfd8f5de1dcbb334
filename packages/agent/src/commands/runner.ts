import { idleRuleOf, isForcedHibernate, type DeliveredCommand } from '@dumont/protocol';
import type { Reading } from '../collect.js';
import { describeOutcome, runBounded } from '../collectors/exec-bounded.js';
import type { Delivery } from '../heartbeat/loop.js';
import { updateBinary } from './binary-update.js';
import { guardedHibernate } from './hibernate-guard.js';
import { runHook } from './hooks.js';

/**
 * What each command does. Returns a typed result, never throws; `exitCode` asks the agent to exit
 * once the result is recorded (systemd's Restart=on-failure brings it back: after `update` on the
 * new version, after `restart` with no service configured).
 */
export interface CommandOutcome {
  status: 'succeeded' | 'failed';
  detail: string;
  exitCode?: number;
}

export interface RunnerConfig {
  instanceId: number;
  hooks: { hibernate: string | null; snapshot: string | null; restart: string | null };
  restartServices: readonly string[];
  hookTimeoutMs: number;
  stateDir: string;
  npm: string;
  packageName: string;
  currentVersion: string;
  /** A fresh reading of the machine, for the checks around the hibernate hook (hibernate-guard.ts). */
  sample: () => Promise<Reading>;
  /** Set when the agent is the single executable: `update` replaces that file from the server. */
  binary?: { apiUrl: string; executable: string; arch: string } | null;
  /** `systemctl`, replaceable for tests. */
  systemctl?: string;
  killGraceMs?: number;
}

/** Non-zero so that systemd's Restart=on-failure starts the agent again (EX_TEMPFAIL). */
export const RESTART_EXIT_CODE = 75;

/**
 * `update` on the single executable: the server's current binary for this platform (args.version,
 * when given, is what it must report), verified and swapped in whole; a failure keeps the old one.
 */
async function updateSingleExecutable(
  cmd: DeliveredCommand,
  config: RunnerConfig,
  binary: NonNullable<RunnerConfig['binary']>,
  signal: AbortSignal,
): Promise<CommandOutcome> {
  const version = cmd.args?.version;
  if (version !== undefined && (typeof version !== 'string' || !VERSION.test(version))) {
    return { status: 'failed', detail: `args.version, when given, must be an exact version such as "1.2.0"; got ${JSON.stringify(version)}` };
  }
  const outcome = await updateBinary({
    apiUrl: binary.apiUrl,
    executable: binary.executable,
    arch: binary.arch,
    timeoutMs: Math.max(config.hookTimeoutMs, 600_000),
    expectedVersion: version ?? null,
    signal,
  });
  if (outcome.kind === 'current') return { status: 'succeeded', detail: `already running the server's binary (sha256 ${outcome.sha256})` };
  if (outcome.kind === 'installed') {
    return { status: 'succeeded', detail: `installed the server's binary ${outcome.version} (sha256 ${outcome.sha256}); restarting on it`, exitCode: RESTART_EXIT_CODE };
  }
  return { status: 'failed', detail: `${outcome.reason}; still running ${config.currentVersion}` };
}
const VERSION = /^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;

/** `delivery`: the beat whose answer carried the command (null when it came some other way). */
export async function executeCommand(cmd: DeliveredCommand, config: RunnerConfig, signal: AbortSignal, delivery: Delivery | null = null): Promise<CommandOutcome> {
  const env = {
    DUMONT_COMMAND_ID: cmd.id,
    DUMONT_COMMAND_TYPE: String(cmd.type),
    DUMONT_COMMAND_ARGS: JSON.stringify(cmd.args ?? {}),
    DUMONT_COMMAND_ISSUED_AT: cmd.issued_at,
    DUMONT_INSTANCE_ID: String(config.instanceId),
    // A hook that ends by shutting the machine down may stop the agent itself (see the README).
    DUMONT_AGENT_PID: String(process.pid),
  };
  const hook = async (name: 'hibernate' | 'snapshot' | 'restart'): Promise<CommandOutcome> => {
    const command = config.hooks[name];
    if (!command) return { status: 'failed', detail: `no ${name} hook is configured (--${name}-hook); nothing was done` };
    const run = await runHook(name, command, { timeoutMs: config.hookTimeoutMs, env, cwd: config.stateDir, signal, killGraceMs: config.killGraceMs });
    return { status: run.status, detail: run.detail };
  };

  switch (cmd.type as string) {
    case 'hibernate':
      // Nothing to guard when there is no hook: it is reported as not configured, as before.
      if (!config.hooks.hibernate) return hook('hibernate');
      return guardedHibernate({
        rule: idleRuleOf(cmd.args),
        delivery,
        sample: config.sample,
        runHook: () => hook('hibernate'),
        forced: isForcedHibernate(cmd.args),
      });
    case 'snapshot':
      return hook('snapshot');
    case 'restart': {
      if (config.hooks.restart) return hook('restart');
      if (config.restartServices.length > 0) return restartServices(config, signal);
      return { status: 'succeeded', detail: 'no restart hook or service configured: restarting the agent itself', exitCode: RESTART_EXIT_CODE };
    }
    case 'update':
      return update(cmd, config, signal);
    default:
      return { status: 'failed', detail: `unknown command type ${JSON.stringify(cmd.type)}; this agent (${config.currentVersion}) runs hibernate, snapshot, restart and update` };
  }
}

async function restartServices(config: RunnerConfig, signal: AbortSignal): Promise<CommandOutcome> {
  const systemctl = config.systemctl ?? 'systemctl';
  const outcome = await runBounded(systemctl, ['restart', ...config.restartServices], {
    timeoutMs: config.hookTimeoutMs,
    keep: 'tail',
    mergeOutput: true,
    maxOutputBytes: 4096,
    signal,
    killGraceMs: config.killGraceMs,
  });
  const ok = outcome.kind === 'exited' && outcome.code === 0;
  const output = outcome.kind === 'spawn-failed' ? '' : outcome.stdout.trim();
  const what = `systemctl restart ${config.restartServices.join(' ')}`;
  return {
    status: ok ? 'succeeded' : 'failed',
    detail: `${ok ? `restarted ${config.restartServices.join(', ')}` : describeOutcome(outcome, what)}${output ? `\n${output}` : ''}`,
  };
}

async function update(cmd: DeliveredCommand, config: RunnerConfig, signal: AbortSignal): Promise<CommandOutcome> {
  if (config.binary) return updateSingleExecutable(cmd, config, config.binary, signal);
  const version = cmd.args?.version;
  if (typeof version !== 'string' || !VERSION.test(version)) {
    return { status: 'failed', detail: `update needs args.version, an exact version such as "1.2.0"; got ${JSON.stringify(version ?? null)}` };
  }
  if (version === config.currentVersion) return { status: 'succeeded', detail: `already running ${version}; nothing to do` };
  const spec = `${config.packageName}@${version}`;
  const outcome = await runBounded(config.npm, ['install', '--global', '--no-audit', '--no-fund', spec], {
    timeoutMs: Math.max(config.hookTimeoutMs, 60_000),
    keep: 'tail',
    mergeOutput: true,
    maxOutputBytes: 4096,
    signal,
    killGraceMs: config.killGraceMs,
  });
  const output = outcome.kind === 'spawn-failed' ? '' : outcome.stdout.trim();
  if (outcome.kind === 'exited' && outcome.code === 0) {
    return { status: 'succeeded', detail: `installed ${spec}; restarting on it`, exitCode: RESTART_EXIT_CODE };
  }
  return { status: 'failed', detail: `${describeOutcome(outcome, `npm install --global ${spec}`)}; still running ${config.currentVersion}${output ? `\n${output}` : ''}` };
}
