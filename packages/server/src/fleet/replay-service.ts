import { DumontError, type ReplayInstanceFigures } from '@dumont/protocol';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { replay, type InstanceReplay, type ReplayBeat, type ReplayInstance, type ReplayRegret } from '../policy/replay.js';
import { ROLLUP_BUCKET_MS, type HistorySample, type HistoryStore, type RollupRow } from '../store/history.js';
import type { FleetStore } from '../store/store.js';
import { canSee, type Operator } from './principal.js';
import { openIntervals, round, sumSavings, totalOf } from './savings.js';

export const DEFAULT_REGRET_MINUTES = 60;
/** Each threshold replays every beat of every instance again: a table to choose from, not a sweep. */
export const MAX_REPLAY_THRESHOLDS = 20;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const PAGE = 1000;

/** What a replay is asked: one or more thresholds over a range of the recorded history. */
export interface ReplayQuery {
  /** Each > 0; fractional minutes are fine. */
  thresholdMinutes: readonly number[];
  utilizationPercent?: number | undefined;
  warningSeconds?: number | undefined;
  regretMinutes?: number | undefined;
  /** Server time (ms); default: to = now, from = the start of raw retention. */
  from?: number | undefined;
  to?: number | undefined;
  /** Default: every instance the operator can see. */
  instanceIds?: readonly number[] | undefined;
}

export interface ReplayedPolicy {
  threshold_minutes: number;
  utilization_percent: number;
  warning_seconds: number;
  hibernations: number;
  gpu_hours_saved: number;
  usd_saved: number;
  regrets: ReplayRegret[];
  /** Per instance, by instance id; instances without a hibernation are left out. */
  instances: ReplayInstanceFigures[];
}

export interface ReplayResponse {
  from: string;
  to: string;
  /** Beats from here on are raw samples; before it (when from is earlier) they come from rollups. */
  raw_from: string;
  /** What the policy that ran did over the same range: its hibernated intervals (savings). */
  actual: Omit<ReplayedPolicy, 'threshold_minutes' | 'utilization_percent' | 'warning_seconds'>;
  policies: ReplayedPolicy[];
}

/**
 * Groups one instance's samples (one row per GPU per beat) into beats. A beat with no GPU row
 * (`gpu_index` -1) has no known utilization: never idle. Its last activity and collector error are
 * the beat's (every row of a beat carries them); samples from before they were recorded have neither.
 */
export function beatsOf(samples: readonly HistorySample[]): ReplayBeat[] {
  return [...groupBy(samples, (sample) => sample.at).entries()]
    .sort(([a], [b]) => a - b)
    .map(([at, rows]) => ({
      at,
      utilizations: rows.filter((r) => r.gpu_index >= 0).sort((a, b) => a.gpu_index - b.gpu_index).map((r) => r.utilization_percent),
      processCount: rows[0]!.process_count,
      lastActivityAt: maxOf(rows.map((r) => r.last_activity_at ?? null)),
      collectorError: rows.some((r) => r.collector_error === 1),
    }));
}

/**
 * Beats made of 5-minute rollups, where the raw samples are gone, never less cautious than the raw
 * beats they summarise:
 * - A bucket's samples become as many beats, evenly from its first sample's time to its last: an idle
 *   streak starts no earlier than the first real beat of its first idle bucket, and stops where the
 *   beats stopped.
 * - A bucket in which the instance fell silent for the offline window or longer (or rolled up before
 *   migration 0008, which kept no silences) is unknown throughout: its beats, a heartbeat interval
 *   apart, have unknown facts (a collector error). No idle streak runs through it, and a machine the
 *   replay had stopped counts as woken by it.
 * - Each GPU is at its maximum, or unknown when any of its samples was unknown or it missed a beat;
 *   a bucket in which a beat reported no GPU is judged as such a beat throughout. The process count is
 *   the maximum (unknown if any was); a collector error anywhere in the bucket is on every beat.
 * - The bucket's latest last activity L is, at each beat, min(L, beat): activity "now" on every beat
 *   up to it, so no beat before it is ever idle by the activity rule.
 */
export function rollupBeatsOf(rows: readonly RollupRow[], timing: { heartbeatIntervalMs: number; offlineAfterMs: number }): ReplayBeat[] {
  const beats: ReplayBeat[] = [];
  for (const [bucketAt, bucket] of [...groupBy(rows, (row) => row.bucket_at).entries()].sort(([a], [b]) => a - b)) {
    const silence = maxOf(bucket.map((r) => r.silence_max ?? null));
    const first = minOf(bucket.map((r) => r.first_at ?? null)) ?? bucketAt;
    const last = maxOf(bucket.map((r) => r.last_at ?? null)) ?? bucketAt + ROLLUP_BUCKET_MS - 1;
    const known = bucket.every((r) => r.silence_max != null) && silence !== null && silence < timing.offlineAfterMs;
    const count = Math.max(...bucket.map((r) => r.samples));
    const gpus = bucket.filter((r) => r.gpu_index >= 0).sort((a, b) => a.gpu_index - b.gpu_index);
    const noGpuBeat = bucket.some((r) => r.gpu_index < 0);
    const utilizations = noGpuBeat ? [] : gpus.map((r) => (!known || r.samples < count || (r.utilization_unknown ?? 0) > 0 ? null : r.utilization_percent_max));
    const processCount = bucket.some((r) => (r.process_count_unknown ?? 0) > 0) ? null : maxOf(bucket.map((r) => r.process_count_max));
    const collectorError = !known || bucket.some((r) => r.collector_error_max === 1);
    const lastActivity = maxOf(bucket.map((r) => r.last_activity_at_max ?? null));
    const times = known ? spread(first, last, count) : spread(first, last, Math.floor((last - first) / timing.heartbeatIntervalMs) + 1);
    for (const at of times) {
      beats.push({ at, utilizations, processCount, lastActivityAt: lastActivity === null ? null : Math.min(lastActivity, at), collectorError });
    }
  }
  return beats;
}

/** `count` distinct whole-ms times from `first` to `last`, evenly (fewer if the span is too short). */
function spread(first: number, last: number, count: number): number[] {
  if (count <= 1 || last <= first) return [first];
  const times: number[] = [];
  for (let k = 0; k < count; k++) {
    const at = first + Math.floor((k * (last - first)) / (count - 1));
    if (times.length === 0 || at > times[times.length - 1]!) times.push(at);
  }
  return times;
}

function minOf(values: readonly (number | null)[]): number | null {
  return values.reduce<number | null>((min, v) => (v != null && (min === null || v < min) ? v : min), null);
}

/** Rows by a key, in first-seen order (Map.groupBy needs Node 21). */
function groupBy<T>(rows: readonly T[], key: (row: T) => number): Map<number, T[]> {
  const groups = new Map<number, T[]>();
  for (const row of rows) {
    const group = groups.get(key(row));
    if (group) group.push(row);
    else groups.set(key(row), [row]);
  }
  return groups;
}

function maxOf(values: readonly (number | null)[]): number | null {
  return values.reduce<number | null>((max, v) => (v != null && (max === null || v > max) ? v : max), null);
}

/**
 * `GET /agent/replay` and `dumont-server replay`: the real policy replayed over the recorded raw
 * history of an operator's instances, for each threshold asked, beside what actually happened.
 */
export class ReplayService {
  constructor(
    private readonly store: FleetStore,
    private readonly history: HistoryStore,
    private readonly clock: Clock,
    private readonly config: ServerConfig,
  ) {}

  async replay(operator: Operator, query: ReplayQuery): Promise<ReplayResponse> {
    const now = this.clock.now();
    const { from, to, rawFrom, regretMinutes, utilizationPercent, warningSeconds } = this.checked(query, now);
    const timing = { heartbeatIntervalMs: this.config.heartbeatIntervalSeconds * 1000, offlineAfterMs: this.config.offlineAfterSeconds * 1000 };
    const ids = await this.idsOf(operator, query.instanceIds);
    const settings = {
      offlineAfterSeconds: this.config.offlineAfterSeconds,
      hibernateTimeoutSeconds: this.config.hibernateTimeoutSeconds,
      freshnessSeconds: this.config.freshnessSeconds,
      wakeTimeoutSeconds: this.config.wakeTimeoutSeconds,
    };
    const replayed = query.thresholdMinutes.map(() => [] as InstanceReplay[]);
    // One instance at a time: only its samples are in memory, and the event loop (heartbeats) runs
    // between instances, however large the fleet.
    for (const id of ids) {
      // A turn of the event loop per instance: on SQLite every query answers at once, so without it a
      // replay of a large fleet would hold heartbeats until it is done.
      await new Promise((resolve) => setImmediate(resolve));
      const instance = await this.store.getInstance(id);
      if (!instance) continue; // deleted since it was listed
      const recorded: ReplayInstance = {
        instanceId: instance.instanceId,
        gpuCount: instance.gpuCount,
        pricePerHour: instance.settings.pricePerHour,
        beats: [
          ...(from < rawFrom
            ? rollupBeatsOf(await this.history.rollups(instance.instanceId, from, Math.min(rawFrom, to) - 1, { beats: true }), timing).filter((b) => b.at < rawFrom)
            : []),
          ...(rawFrom < to ? beatsOf(await this.history.samples(instance.instanceId, rawFrom, to - 1, { beats: true })) : []),
        ],
      };
      query.thresholdMinutes.forEach((thresholdMinutes, i) => {
        // The instance's own setting, as the running policy judges it.
        const policy = { thresholdMinutes, utilizationPercent, warningSeconds, ignoreGpuProcesses: instance.settings.ignoreGpuProcesses };
        const report = replay([recorded], policy, { from, to, regretMinutes, settings });
        replayed[i]!.push(...report.instances);
      });
    }
    const sum = (figures: readonly InstanceReplay[], key: 'gpu_hours_saved' | 'usd_saved') => round(figures.reduce((total, f) => total + f[key], 0));
    const policies = query.thresholdMinutes.map((thresholdMinutes, i) => {
      const perInstance = replayed[i]!;
      return {
        threshold_minutes: thresholdMinutes,
        utilization_percent: utilizationPercent,
        warning_seconds: warningSeconds,
        hibernations: perInstance.reduce((total, f) => total + f.hibernations, 0),
        // The rounded sum of the rounded per-instance figures, as policy/replay.ts totals them.
        gpu_hours_saved: sum(perInstance, 'gpu_hours_saved'),
        usd_saved: sum(perInstance, 'usd_saved'),
        regrets: perInstance.flatMap((f) => f.regrets),
        instances: perInstance
          .filter((f) => f.hibernations > 0)
          .map((f) => ({ instance_id: f.instance_id, hibernations: f.hibernations, gpu_hours_saved: f.gpu_hours_saved, usd_saved: f.usd_saved, regret_count: f.regrets.length })),
      };
    });
    return {
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      raw_from: new Date(Math.min(rawFrom, to)).toISOString(),
      actual: await this.actual(operator, ids, from, to, regretMinutes),
      policies,
    };
  }

  private checked(query: ReplayQuery, now: number) {
    if (query.thresholdMinutes.length === 0 || query.thresholdMinutes.some((t) => !Number.isFinite(t) || t <= 0)) {
      throw new DumontError('invalid_request', 'threshold_minutes: one or more numbers of minutes, each > 0', 'threshold_minutes');
    }
    if (query.thresholdMinutes.length > MAX_REPLAY_THRESHOLDS) {
      throw new DumontError('invalid_request', `threshold_minutes: at most ${MAX_REPLAY_THRESHOLDS} thresholds per replay`, 'threshold_minutes');
    }
    const utilizationPercent = query.utilizationPercent ?? this.config.idleUtilizationPercent;
    if (!Number.isFinite(utilizationPercent) || utilizationPercent <= 0 || utilizationPercent > 100) {
      throw new DumontError('invalid_request', 'utilization_percent: a number in (0, 100]', 'utilization_percent');
    }
    const warningSeconds = query.warningSeconds ?? this.config.hibernationWarningSeconds;
    if (!Number.isFinite(warningSeconds) || warningSeconds < 0) {
      throw new DumontError('invalid_request', 'warning_seconds: a number of seconds ≥ 0', 'warning_seconds');
    }
    const regretMinutes = query.regretMinutes ?? DEFAULT_REGRET_MINUTES;
    if (!Number.isFinite(regretMinutes) || regretMinutes < 0) {
      throw new DumontError('invalid_request', 'regret_minutes: a number of minutes ≥ 0', 'regret_minutes');
    }
    // Raw samples from the first whole bucket inside raw retention on; rollups before it.
    const rawSince = Math.ceil((now - this.config.historyRawHours * HOUR) / ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS;
    // What has not happened yet cannot be replayed, nor counted as saved: a later `to` is now (the
    // answer's `to` says so).
    const to = Math.min(query.to ?? now, now);
    // Rollups are kept whole buckets at a time: the oldest whole bucket still kept.
    const rollupsSince = Math.ceil((now - this.config.historyDays * DAY) / ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS;
    // By default the raw retention's length of history before `to` (all of it raw when `to` is now).
    const from = query.from ?? Math.max(rollupsSince, to === now ? rawSince : to - this.config.historyRawHours * HOUR);
    if (to <= from) throw new DumontError('invalid_request', 'to: must be after from', 'to');
    if (from < rollupsSince) {
      throw new DumontError(
        'invalid_request',
        `from: the history is kept for ${this.config.historyDays} days (DUMONT_HISTORY_DAYS); start at ${new Date(rollupsSince).toISOString()} or later`,
        'from',
      );
    }
    const rawFrom = Math.max(from, rawSince);
    return { from, to, rawFrom, regretMinutes, utilizationPercent, warningSeconds };
  }

  /**
   * The ids of the named instances (each must be visible: another owner's answers as a missing one),
   * or of every visible one. Ids only: a large fleet's records are read one at a time as replayed.
   */
  private async idsOf(operator: Operator, named: readonly number[] | undefined): Promise<number[]> {
    if (named !== undefined) {
      const ids = [...new Set(named)];
      for (const id of ids) {
        const instance = await this.store.getInstance(id);
        if (!instance || !canSee(operator, instance.owner)) throw new DumontError('not_found', `instance ${id} not found`, 'instance');
      }
      return ids;
    }
    const ids: number[] = [];
    let after: number | undefined;
    for (;;) {
      const page = await this.store.listInstances({ owner: operator.admin ? null : operator.owner, afterInstanceId: after, limit: PAGE });
      for (const entry of page) ids.push(entry.instanceId);
      if (page.length < PAGE) return ids;
      after = page[page.length - 1]!.instanceId;
    }
  }

  /** What the running policy did over the range, counted as a replayed policy is. */
  private async actual(operator: Operator, instanceIds: readonly number[], from: number, to: number, regretMinutes: number) {
    const ids = new Set(instanceIds);
    const owner = operator.admin ? null : operator.owner;
    const [closed, open] = await Promise.all([this.store.listSavings({ owner, from, to }), this.store.listOpenSavings({ owner })]);
    // Like a replayed policy: the hibernations that began in the range, their hours up to `to`, and as
    // regrets those woken within the window and before `to` (a replay cannot see past it either).
    const began = [...closed, ...openIntervals(open, this.clock.now())].filter(
      (i) => i.kind === 'hibernated' && ids.has(i.instance_id) && i.started_at >= from && i.started_at < to,
    );
    const perInstance = sumSavings(began, from, to);
    const figures = totalOf(perInstance.values());
    const regrets = closed
      .filter((i) => i.kind === 'hibernated' && ids.has(i.instance_id) && i.started_at >= from && i.ended_at < to)
      .filter((i) => i.ended_at - i.started_at <= regretMinutes * MINUTE)
      .map((i) => ({ instance_id: i.instance_id, hibernated_at: new Date(i.started_at).toISOString(), busy_again_at: new Date(i.ended_at).toISOString() }));
    const count = (rows: readonly { instance_id: number }[], id: number) => rows.filter((r) => r.instance_id === id).length;
    const byInstance = [...new Set(began.map((i) => i.instance_id))]
      .sort((a, b) => a - b)
      .map((id) => ({
        instance_id: id,
        hibernations: count(began, id),
        gpu_hours_saved: perInstance.get(id)?.gpu_hours_saved ?? 0,
        usd_saved: perInstance.get(id)?.usd_saved ?? 0,
        regret_count: count(regrets, id),
      }));
    return {
      hibernations: began.length,
      gpu_hours_saved: figures.gpu_hours_saved,
      usd_saved: figures.usd_saved,
      regrets,
      instances: byInstance,
    };
  }
}
