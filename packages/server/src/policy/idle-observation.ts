/** What one heartbeat tells about idleness, reduced to the facts the policy needs. */
export interface IdleObservation {
  /** One entry per GPU (or one for the host aggregate); null = unknown. */
  utilizations: readonly (number | null)[];
  /** Distinct GPU processes; null = unknown. */
  processCount: number | null;
  /** The agent's last_activity mapped onto the server clock (ms), or null. */
  lastActivityAt: number | null;
}

export interface IdleCriteria {
  idleUtilizationPercent: number;
  ignoreGpuProcesses: boolean;
}

export type IdleVerdict = { idle: true } | { idle: false; reason: string };

/**
 * A beat is idle only when every GPU is known to be below the threshold and no GPU process runs.
 * Anything unknown is "not idle": hibernating on a guess would kill someone's training run.
 */
export function judgeIdle(obs: IdleObservation, criteria: IdleCriteria): IdleVerdict {
  if (obs.utilizations.length === 0) return { idle: false, reason: 'GPU utilization unknown (no GPU reported)' };
  for (const [i, u] of obs.utilizations.entries()) {
    if (u === null) return { idle: false, reason: `GPU utilization unknown (GPU ${i})` };
    if (u >= criteria.idleUtilizationPercent) return { idle: false, reason: `GPU ${i} at ${u}% utilization` };
  }
  if (!criteria.ignoreGpuProcesses) {
    if (obs.processCount === null) return { idle: false, reason: 'GPU process count unknown' };
    if (obs.processCount > 0) return { idle: false, reason: `${obs.processCount} GPU process(es) running` };
  }
  return { idle: true };
}
