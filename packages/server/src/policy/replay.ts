import { judgeIdle, type BeatIdleFacts, type IdleRule } from '@dumont/protocol';
import { evaluate, NEVER_SEEN, type Decision, type InstancePolicy, type PolicyInput, type PolicySettings } from './hibernation-policy.js';
import type { IdleObservation } from './idle-observation.js';

/**
 * Policy replay (issue 11): what a given policy would have done to recorded instances. Pure: no I/O,
 * no clock; the only clock is the time of the recorded beats. It drives the real `evaluate()` of
 * hibernation-policy.ts, so a replay can never disagree with the policy that runs.
 *
 * Semantics, per instance, on its beats in [from, to) in time order (beats outside are ignored; the
 * instance starts as a registered instance that never beat, so an idle streak begins at the first
 * beat at or after `from`, never earlier):
 * - Before each beat, the sweeper's `tick` runs at every deadline the previous decision set that is
 *   at or before the beat (and, at the end, at or before `to`): a silence as long as the offline
 *   window makes the instance offline exactly as the sweeper would, and silence never counts as idle.
 *   A silence shorter than the offline window does count: idle time is measured between beats.
 * - Each beat is a `heartbeat` whose facts were collected at the beat's time (always fresh), with
 *   its recorded collector error if any, no hook running and no mass-silence hold, judged with the policy's utilization
 *   threshold and `ignoreGpuProcesses`. The instance policy is enabled, without provider or dry-run.
 * - A decision that issues the hibernate command is confirmed by the agent at once (a successful
 *   `hibernate_result` at the same time): a hibernation at that beat. The machine is then off: the
 *   beats that follow are skipped until the first one that shows demand (not idle by `judgeIdle`, or
 *   a `lastActivityAt` after the hibernation), `busy_again_at`. That beat is applied to the hibernated
 *   facts, which is the real wake path (`woke`, a new online streak, a new idle streak).
 * - Saved: hours = (busy_again_at, else `to`) − hibernated_at; GPU-hours = hours × gpuCount; money =
 *   hours × pricePerHour (the machine's price, 0 when unknown), as fleet/savings.ts counts them.
 * - A regret is a hibernation whose busy_again_at is at most `regretMinutes` after it (inclusive). A
 *   hibernation still off at `to` is no regret, however close `to` is: what came next is unknown.
 *
 * What the history keeps bounds the replay's trust. Where only rollups remain the caller passes each
 * GPU's maximum (and the maximum process count): a beat judged on maxima is idle only if every sample
 * behind it was, so this can only make the replay more cautious. The caller must then spread a bucket
 * into beats at the heartbeat interval: beats further apart than the offline window never form an
 * idle streak. Samples recorded before migration 0007 keep neither `last_activity` nor collector
 * errors (pass null / false): both only ever make a real beat busy, so over such samples the replay may
 * hibernate where the server would not.
 *
 * Figures are rounded to 4 decimals (as fleet/savings.ts); totals are the rounded sum of the rounded
 * per-instance figures, so that they add up like the savings of the policy that actually ran.
 */

export interface ReplayBeat {
  /** Server time of the beat (ms). */
  at: number;
  /** One per GPU; null = unknown (never idle). */
  utilizations: readonly (number | null)[];
  /** Distinct GPU processes; null = unknown. */
  processCount: number | null;
  /** Last user activity on the server clock (ms), or null. */
  lastActivityAt: number | null;
  /** A collector failed on this beat: its facts are unknown, so the beat is not idle. */
  collectorError?: boolean;
}

export interface ReplayInstance {
  instanceId: number;
  gpuCount: number;
  pricePerHour: number | null;
  /** Strictly increasing `at`. */
  beats: readonly ReplayBeat[];
}

export interface ReplayPolicy {
  thresholdMinutes: number;
  utilizationPercent: number;
  warningSeconds: number;
  ignoreGpuProcesses: boolean;
}

/** The server's policy settings the replayed policy does not choose. */
export type ReplaySettings = Omit<PolicySettings, 'idleUtilizationPercent' | 'hibernationWarningSeconds'>;

export interface ReplayOptions {
  from: number;
  to: number;
  regretMinutes: number;
  settings: ReplaySettings;
}

export interface ReplayRegret {
  instance_id: number;
  hibernated_at: string;
  busy_again_at: string;
}

export interface ReplayHibernation {
  hibernated_at: string;
  /** null: still off at `to`. */
  busy_again_at: string | null;
}

export interface ReplayFigures {
  hibernations: number;
  hibernated_hours: number;
  gpu_hours_saved: number;
  usd_saved: number;
  regrets: ReplayRegret[];
}

export interface InstanceReplay extends ReplayFigures {
  instance_id: number;
  /** Beats in [from, to) the replay read (0: no history in the range). */
  beats_replayed: number;
  timeline: ReplayHibernation[];
}

export interface ReplayReport extends ReplayFigures {
  threshold_minutes: number;
  utilization_percent: number;
  warning_seconds: number;
  ignore_gpu_processes: boolean;
  instances: InstanceReplay[];
}

const HOUR = 3_600_000;
const MINUTE = 60_000;
const round = (n: number) => Math.round(n * 10_000) / 10_000;
const iso = (ms: number) => new Date(ms).toISOString();

export function replay(instances: readonly ReplayInstance[], policy: ReplayPolicy, options: ReplayOptions): ReplayReport {
  validate(policy, options);
  const settings: PolicySettings = {
    ...options.settings,
    idleUtilizationPercent: policy.utilizationPercent,
    hibernationWarningSeconds: policy.warningSeconds,
  };
  const perInstance = instances.map((instance) => replayInstance(instance, policy, settings, options));
  const sum = (key: 'hibernated_hours' | 'gpu_hours_saved' | 'usd_saved') => round(perInstance.reduce((total, i) => total + i[key], 0));
  return {
    threshold_minutes: policy.thresholdMinutes,
    utilization_percent: policy.utilizationPercent,
    warning_seconds: policy.warningSeconds,
    ignore_gpu_processes: policy.ignoreGpuProcesses,
    hibernations: perInstance.reduce((total, i) => total + i.hibernations, 0),
    hibernated_hours: sum('hibernated_hours'),
    gpu_hours_saved: sum('gpu_hours_saved'),
    usd_saved: sum('usd_saved'),
    regrets: perInstance.flatMap((i) => i.regrets),
    instances: perInstance,
  };
}

function validate(policy: ReplayPolicy, options: ReplayOptions): void {
  const finite = (n: number) => Number.isFinite(n);
  if (!finite(policy.thresholdMinutes) || policy.thresholdMinutes <= 0) throw new RangeError('threshold minutes: must be a number > 0');
  if (!finite(policy.utilizationPercent) || policy.utilizationPercent <= 0 || policy.utilizationPercent > 100) {
    throw new RangeError('utilization percent: must be in (0, 100]');
  }
  if (!finite(policy.warningSeconds) || policy.warningSeconds < 0) throw new RangeError('warning seconds: must be a number ≥ 0');
  if (!finite(options.regretMinutes) || options.regretMinutes < 0) throw new RangeError('regret minutes: must be a number ≥ 0');
  if (!finite(options.from) || !finite(options.to) || options.from >= options.to) throw new RangeError('range: from must be before to');
}

function replayInstance(instance: ReplayInstance, policy: ReplayPolicy, settings: PolicySettings, options: ReplayOptions): InstanceReplay {
  const { from, to } = options;
  const instancePolicy: InstancePolicy = {
    enabled: true,
    thresholdMinutes: policy.thresholdMinutes,
    ignoreGpuProcesses: policy.ignoreGpuProcesses,
    stopsThroughProvider: false,
    dryRun: false,
  };
  const rule: IdleRule = { idleUtilizationPercent: policy.utilizationPercent, ignoreGpuProcesses: policy.ignoreGpuProcesses };

  let facts = NEVER_SEEN;
  let deadline: number | null = null;
  const apply = (input: PolicyInput, now: number): Decision => {
    const decision = evaluate(facts, instancePolicy, input, settings, now);
    facts = decision.facts;
    deadline = decision.deadline;
    return decision;
  };
  /** The sweeper's visits up to `until`, each at the deadline it was due (it never looks late here). */
  const sweepUntil = (until: number) => {
    while (deadline !== null && deadline <= until) {
      const due: number = deadline;
      apply({ kind: 'tick' }, due);
      if (deadline === due) break; // a deadline the tick did not move would be visited forever
    }
  };

  const timeline: { hibernatedAt: number; busyAgainAt: number | null }[] = [];
  let offSince: number | null = null;
  let previousAt = -Infinity;
  let replayed = 0;
  for (const beat of instance.beats) {
    if (!(beat.at > previousAt)) throw new RangeError(`instance ${instance.instanceId}: beats must be in strictly increasing time order`);
    previousAt = beat.at;
    if (beat.at < from || beat.at >= to) continue;
    replayed += 1;
    const idleFacts: BeatIdleFacts = {
      utilizations: beat.utilizations,
      processCount: beat.processCount,
      failedCollectors: beat.collectorError ? ['recorded collector error'] : [],
    };
    if (offSince !== null) {
      // A stopped machine sends nothing: a recorded idle beat after the hibernation is one the policy
      // would have prevented, not a beat to apply.
      const demand = !judgeIdle(idleFacts, rule).idle || (beat.lastActivityAt !== null && beat.lastActivityAt > offSince);
      if (!demand) continue;
      timeline[timeline.length - 1]!.busyAgainAt = beat.at;
      offSince = null;
    }
    sweepUntil(beat.at);
    const observation: IdleObservation = { ...idleFacts, lastActivityAt: beat.lastActivityAt, observedAt: beat.at, hibernateHookRunning: false };
    if (!apply({ kind: 'heartbeat', observation }, beat.at).issueHibernate) continue;
    apply({ kind: 'hibernate_result', succeeded: true, detail: 'replay: confirmed at once' }, beat.at);
    if (facts.status !== 'hibernated') {
      throw new Error(`replay: a confirmed hibernation left instance ${instance.instanceId} ${facts.status}; the policy changed under the replay`);
    }
    offSince = beat.at;
    timeline.push({ hibernatedAt: beat.at, busyAgainAt: null });
  }
  sweepUntil(to);

  let hours = 0;
  const regrets: ReplayRegret[] = [];
  for (const { hibernatedAt, busyAgainAt } of timeline) {
    hours += ((busyAgainAt ?? to) - hibernatedAt) / HOUR;
    if (busyAgainAt !== null && busyAgainAt - hibernatedAt <= options.regretMinutes * MINUTE) {
      regrets.push({ instance_id: instance.instanceId, hibernated_at: iso(hibernatedAt), busy_again_at: iso(busyAgainAt) });
    }
  }
  return {
    instance_id: instance.instanceId,
    beats_replayed: replayed,
    hibernations: timeline.length,
    hibernated_hours: round(hours),
    gpu_hours_saved: round(hours * instance.gpuCount),
    usd_saved: round(hours * (instance.pricePerHour ?? 0)),
    regrets,
    timeline: timeline.map((t) => ({ hibernated_at: iso(t.hibernatedAt), busy_again_at: t.busyAgainAt === null ? null : iso(t.busyAgainAt) })),
  };
}
