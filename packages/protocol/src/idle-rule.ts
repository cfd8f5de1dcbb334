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
}

export const hibernateArgsOf = (rule: IdleRule): HibernateArgs => ({
  idle_utilization_percent: rule.idleUtilizationPercent,
  ignore_gpu_processes: rule.ignoreGpuProcesses,
});

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
