import type { HeartbeatRequest } from './heartbeat.js';

/**
 * What one beat says about idleness, and the server's rule that judges it. The rule lives here, not in
 * the server alone, so that the agent's last check before a hibernate hook applies exactly the rule the
 * server decided with — with the parameters the server sends in the hibernate command's `args` — and
 * never a threshold of its own. Deciding when an instance has been idle long enough stays in the
 * server's policy (packages/server/src/policy).
 */
export interface BeatIdleFacts {
  /** One entry per GPU (or one for the host aggregate); null = unknown. */
  utilizations: readonly (number | null)[];
  /** nvidia-smi's index of each entry of `utilizations`, for the reasons; its position when absent. */
  gpuIndexes?: readonly number[];
  /** Distinct GPU processes; null = unknown. */
  processCount: number | null;
  /** Collectors that failed on this beat: what they would have said is unknown. */
  failedCollectors: readonly string[];
}

export interface IdleRule {
  idleUtilizationPercent: number;
  ignoreGpuProcesses: boolean;
}

export const DEFAULT_IDLE_RULE: IdleRule = { idleUtilizationPercent: 5, ignoreGpuProcesses: false };

export type IdleVerdict = { idle: true } | { idle: false; reason: string };

/** The facts of a heartbeat body; metrics it lacks stay unknown (null), never 0. */
export function idleFactsOf(beat: Pick<HeartbeatRequest, 'gpus' | 'gpu_metrics' | 'process_count' | 'collector_errors'>): BeatIdleFacts {
  const utilizations =
    beat.gpus && beat.gpus.length > 0
      ? beat.gpus.map((g) => g.utilization_percent ?? null)
      : beat.gpu_metrics
        ? [beat.gpu_metrics.utilization_percent ?? null]
        : [];
  return {
    utilizations,
    ...(beat.gpus && beat.gpus.length > 0 ? { gpuIndexes: beat.gpus.map((g) => g.index) } : {}),
    processCount: beat.process_count ?? null,
    failedCollectors: (beat.collector_errors ?? []).map((e) => e.collector),
  };
}

/**
 * A beat is idle only when every GPU is known to be below the threshold, no GPU process runs and every
 * collector answered. Anything unknown is "not idle": a torn nvidia-smi line that hides a busy GPU, or
 * a session collector that could not read who is logged in, must never read as an idle machine.
 */
export function judgeIdle(facts: BeatIdleFacts, rule: IdleRule): IdleVerdict {
  if (facts.failedCollectors.length > 0) {
    return { idle: false, reason: `collector error (${[...new Set(facts.failedCollectors)].join(', ')}): its facts are unknown` };
  }
  if (facts.utilizations.length === 0) return { idle: false, reason: 'GPU utilization unknown (no GPU reported)' };
  for (const [i, u] of facts.utilizations.entries()) {
    const gpu = facts.gpuIndexes?.[i] ?? i;
    if (u === null) return { idle: false, reason: `GPU utilization unknown (GPU ${gpu})` };
    if (u >= rule.idleUtilizationPercent) return { idle: false, reason: `GPU ${gpu} at ${u}% utilization` };
  }
  if (!rule.ignoreGpuProcesses) {
    if (facts.processCount === null) return { idle: false, reason: 'GPU process count unknown' };
    if (facts.processCount > 0) return { idle: false, reason: `${facts.processCount} GPU process(es) running` };
  }
  return { idle: true };
}

/**
 * The `args` of a hibernate command the policy issues: the rule the server judged with, so that the
 * agent's fresh check before running its hook cannot disagree with it.
 */
export interface HibernateArgs {
  idle_utilization_percent: number;
  ignore_gpu_processes: boolean;
  /**
   * An admin's schedule (outside active hours, a maximum uptime) hibernates even a busy machine: the
   * agent then skips its idle check but still runs its hook. The rule above is still sent, so that an
   * agent too old to know `forced` keeps refusing a busy machine rather than stopping it unguarded.
   */
  forced?: boolean;
  /** Why it is forced, for the agent's log and the command's result. */
  reason?: string;
}

export const hibernateArgsOf = (rule: IdleRule, forced?: { reason: string }): HibernateArgs => ({
  idle_utilization_percent: rule.idleUtilizationPercent,
  ignore_gpu_processes: rule.ignoreGpuProcesses,
  ...(forced ? { forced: true, reason: forced.reason } : {}),
});

export const DEFAULT_FORCED_REASON = 'forced by the server policy';
export const MAX_FORCED_REASON_LENGTH = 256;

/**
 * Whether a hibernate command's args force it past the agent's idle check. Only a literal `true`
 * counts: args are free-form JSON an operator can also write, and `"false"` or `1` must never be the
 * thing that stops a busy machine. The reason ends up in logs and result details, so it is bounded.
 */
export function isForcedHibernate(args: Record<string, unknown> | undefined): { reason: string } | null {
  if (args?.forced !== true) return null;
  const given = typeof args.reason === 'string' ? args.reason.trim() : '';
  if (given === '') return { reason: DEFAULT_FORCED_REASON };
  let reason = given.slice(0, MAX_FORCED_REASON_LENGTH);
  // Never cut a surrogate pair in half: a lone surrogate is not valid text in the journal or the DB.
  if (reason.length === MAX_FORCED_REASON_LENGTH && /[\uD800-\uDBFF]$/.test(reason)) reason = reason.slice(0, -1);
  return { reason };
}

/** The rule carried by a hibernate command's args; missing or malformed parts fall back to the defaults. */
export function idleRuleOf(args: Record<string, unknown> | undefined): IdleRule {
  const percent = args?.idle_utilization_percent;
  const ignore = args?.ignore_gpu_processes;
  return {
    idleUtilizationPercent:
      typeof percent === 'number' && Number.isFinite(percent) && percent > 0 && percent <= 100 ? percent : DEFAULT_IDLE_RULE.idleUtilizationPercent,
    ignoreGpuProcesses: typeof ignore === 'boolean' ? ignore : DEFAULT_IDLE_RULE.ignoreGpuProcesses,
  };
}
