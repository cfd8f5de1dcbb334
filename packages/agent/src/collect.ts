import { hostname } from 'node:os';
import type { CollectorError, CommandResult, HeartbeatRequest } from '@dumont/protocol';
import { ActivityTracker, type ActivityReport } from './collectors/activity.js';
import { defaultRuntimeDirs, readJupyter } from './collectors/jupyter.js';
import { NvidiaSmiCollector } from './collectors/nvidia-smi.js';
import { SYSTEM_PATHS, readPasswd, type SystemPaths } from './collectors/proc.js';
import { readSessions } from './collectors/sessions.js';
import { DEFAULT_SIGNAL_TIMEOUT_MS, SignalHookRunner } from './collectors/signal-hooks.js';
import type { AgentConfig } from './config.js';
import { buildHeartbeat } from './heartbeat/body.js';
import type { Logger } from './log.js';
import { AGENT_VERSION } from './version.js';

export interface CollectDeps {
  log: Logger;
  now: () => number;
  env: NodeJS.ProcessEnv;
  paths?: SystemPaths;
}

/** One reading of the machine: the heartbeat body and the activity behind its `last_activity`. */
export interface Reading {
  body: HeartbeatRequest;
  activity: ActivityReport;
}

export interface BeatCollector {
  /** The body of the next heartbeat. */
  collect(results: readonly CommandResult[], runningCommands?: readonly string[]): Promise<Reading>;
  /**
   * A fresh reading taken outside the beat rhythm (the hibernate guard): every collector runs again,
   * through the same activity tracker, so new activity since a beat shows as a higher `mark`.
   */
  sample(): Promise<Reading>;
}

/**
 * All collectors for one reading, run side by side, into one heartbeat body. Collector failures are
 * carried in the body (`collector_errors`) and logged once when they start and once when they
 * clear, not on every beat.
 */
export function createBeatCollector(
  config: Pick<AgentConfig, 'instanceId' | 'nvidiaSmi' | 'nvidiaSmiTimeoutMs' | 'utmpFile' | 'jupyterRuntimeDirs'> &
    Partial<Pick<AgentConfig, 'signalHooks' | 'signalTimeoutMs'>>,
  deps: CollectDeps,
): BeatCollector {
  const paths = deps.paths ?? SYSTEM_PATHS;
  const gpu = new NvidiaSmiCollector({ path: config.nvidiaSmi, timeoutMs: config.nvidiaSmiTimeoutMs });
  const tracker = new ActivityTracker();
  const signals = new SignalHookRunner(config.signalHooks ?? [], {
    timeoutMs: config.signalTimeoutMs ?? DEFAULT_SIGNAL_TIMEOUT_MS,
    env: config.instanceId === null ? {} : { DUMONT_INSTANCE_ID: String(config.instanceId) },
  });
  let lastErrors = new Map<string, string>();

  const read = async (results: readonly CommandResult[], runningCommands: readonly string[]): Promise<Reading> => {
    const passwd = await readPasswd(paths.passwd);
    const runtimeDirs = config.jupyterRuntimeDirs ?? defaultRuntimeDirs(deps.env, passwd);
    const [gpus, sessions, jupyter, activitySignals] = await Promise.all([
      gpu.collect(),
      readSessions(config.utmpFile, paths),
      readJupyter({ runtimeDirs, timeoutMs: 2000, passwd, procRoot: paths.proc }),
      signals.run(),
    ]);
    const now = deps.now();
    const errors: CollectorError[] = [...gpus.errors];
    if (!sessions.ok) errors.push({ collector: 'sessions', message: sessions.message });
    else if (sessions.problems.length > 0) errors.push({ collector: 'sessions', message: sessions.problems.join('; ') });
    for (const message of jupyter.errors) errors.push({ collector: 'jupyter', message });

    const activity = tracker.observe({ now, sessions: sessions.ok ? sessions.sessions : null, jupyter });
    if (activity.reasons.length > 0) deps.log.debug('activity', { reasons: activity.reasons });

    const current = new Map(errors.map((e) => [`${e.collector}: ${e.message}`, e.collector]));
    for (const [key, collector] of current) if (!lastErrors.has(key)) deps.log.warn('collector failed', { collector, error: key.slice(collector.length + 2) });
    for (const [key, collector] of lastErrors) if (!current.has(key)) deps.log.info('collector recovered', { collector, was: key.slice(collector.length + 2) });
    lastErrors = current;

    const body = buildHeartbeat({
      instanceId: config.instanceId ?? 0,
      hostname: hostname(),
      now,
      agentVersion: AGENT_VERSION,
      gpu: gpus,
      activity,
      commandResults: results,
      collectorErrors: errors,
      runningCommands,
      activitySignals,
    });
    return { body, activity };
  };

  // One reading at a time: a guard's sample that overlapped a beat would find nvidia-smi still
  // running (it is never started twice) and read that as an error instead of waiting for it.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = (run: () => Promise<Reading>): Promise<Reading> => {
    const next = queue.then(run, run);
    queue = next.catch(() => undefined);
    return next;
  };
  return {
    collect: (results, runningCommands = []) => serial(() => read(results, runningCommands)),
    sample: () => serial(() => read([], [])),
  };
}
