import type { DeliveredCommand } from '@dumont/protocol';
import { createBeatCollector } from './collect.js';
import type { SystemPaths } from './collectors/proc.js';
import { CommandJournal, JournalError } from './commands/journal.js';
import { runHook } from './commands/hooks.js';
import { CommandQueue } from './commands/queue.js';
import { executeCommand } from './commands/runner.js';
import { statusEndpoint, type AgentConfig } from './config.js';
import { HibernationNotice } from './heartbeat/hibernation-notice.js';
import { HeartbeatLoop, realClock, type Clock } from './heartbeat/loop.js';
import { createHttpSender } from './heartbeat/sender.js';
import type { Logger } from './log.js';
import { AGENT_PACKAGE, AGENT_VERSION } from './version.js';
import { isSingleExecutable, ownExecutable } from './runtime.js';

export interface AgentDeps {
  log: Logger;
  env: NodeJS.ProcessEnv;
  clock?: Clock;
  random?: () => number;
  /** Where SIGTERM/SIGINT come from; the process by default. */
  signals?: NodeJS.EventEmitter;
  /** Where /proc, /dev and /etc/passwd are read; the system's by default. */
  paths?: SystemPaths;
}

/** Runs until SIGTERM/SIGINT or a command that restarts the agent; resolves to the exit code. */
export async function runAgent(config: AgentConfig & { instanceId: number; apiUrl: string; token: string }, deps: AgentDeps): Promise<number> {
  const { log } = deps;
  const clock = deps.clock ?? realClock;
  const random = deps.random ?? Math.random;
  const signals = deps.signals ?? process;
  const endpoint = statusEndpoint(config.apiUrl);

  let journal: CommandJournal;
  try {
    journal = CommandJournal.open(config.stateDir, clock.now);
  } catch (err) {
    const reason = err instanceof JournalError ? err.message : String(err);
    log.error('state dir unusable: commands will be refused until this is fixed', { state_dir: config.stateDir, error: reason });
    journal = CommandJournal.unwritable(reason, clock.now);
  }

  log.info('dumont-agent starting', {
    version: AGENT_VERSION,
    instance_id: config.instanceId,
    endpoint,
    token_source: config.tokenSource,
    nvidia_smi: config.nvidiaSmi,
    state_dir: config.stateDir,
    hooks: Object.fromEntries(Object.entries(config.hooks).map(([k, v]) => [k, v !== null])),
    restart_services: config.restartServices,
    pending_results: journal.pending().length,
  });

  let exitCode = 0;
  let loop: HeartbeatLoop | null = null;
  const stop = new AbortController();
  const collector = createBeatCollector(config, { log, now: clock.now, env: deps.env, paths: deps.paths });
  const queue = new CommandQueue({
    journal,
    log,
    sleep: clock.sleep,
    execute: (cmd: DeliveredCommand, signal, delivery) =>
      executeCommand(
        cmd,
        {
          instanceId: config.instanceId,
          hooks: config.hooks,
          restartServices: config.restartServices,
          hookTimeoutMs: config.hookTimeoutMs,
          stateDir: config.stateDir,
          npm: config.npm,
          packageName: AGENT_PACKAGE,
          currentVersion: AGENT_VERSION,
          binary: isSingleExecutable() && config.apiUrl !== null ? { apiUrl: config.apiUrl, executable: ownExecutable(), arch: process.arch } : null,
          sample: collector.sample,
        },
        signal,
        delivery,
      ),
    onResult: () => loop?.wakeUp(),
    onExitRequest: (code) => {
      log.info('exiting so that the service manager starts the agent again', { exit_code: code });
      exitCode = code;
      stop.abort();
    },
  });

  const hibernation = new HibernationNotice(log, ({ deadline, secondsLeft }) => {
    const hook = config.hooks.warning;
    if (!hook || stop.signal.aborted) return;
    void runHook('warning', hook, {
      timeoutMs: config.hookTimeoutMs,
      cwd: config.stateDir,
      env: {
        DUMONT_INSTANCE_ID: String(config.instanceId),
        DUMONT_HIBERNATE_IN_SECONDS: String(secondsLeft),
        DUMONT_HIBERNATE_AT: new Date(deadline).toISOString(),
      },
    }).then((run) => (run.status === 'succeeded' ? log.info : log.warn)(`warning hook ${run.status}`, { detail: run.detail.slice(0, 500) }));
  });

  loop = new HeartbeatLoop({
    clock,
    random,
    collect: collector.collect,
    send: createHttpSender({ endpoint, token: config.token, timeoutMs: config.requestTimeoutMs, userAgent: `dumont-agent/${AGENT_VERSION}` }),
    commands: queue,
    hibernation,
    log,
    intervalMs: config.intervalMs,
    maxBackoffMs: config.maxBackoffMs,
    hibernatedQuietMs: config.hibernatedQuietMs,
  });

  const onSignal = (signal: string) => {
    if (stop.signal.aborted) {
      log.warn(`second ${signal}: exiting now`);
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    }
    log.info(`${signal} received: stopping`);
    stop.abort();
  };
  const onTerm = () => onSignal('SIGTERM');
  const onInt = () => onSignal('SIGINT');
  signals.on('SIGTERM', onTerm);
  signals.on('SIGINT', onInt);
  stop.signal.addEventListener('abort', () => loop?.stop(), { once: true });

  try {
    await loop.run();
    await queue.stop(config.stopGraceMs);
    // Results recorded during shutdown (an abandoned hook, an update) get one chance to go out now;
    // otherwise the next start sends them.
    if (queue.pendingResults().length > 0) {
      const flush = await loop.beat();
      log.info(flush.ok ? 'results delivered before exit' : 'results kept for the next start', { pending: queue.pendingResults().length });
    }
  } finally {
    signals.off('SIGTERM', onTerm);
    signals.off('SIGINT', onInt);
  }
  log.info('dumont-agent stopped', { exit_code: exitCode });
  return exitCode;
}
