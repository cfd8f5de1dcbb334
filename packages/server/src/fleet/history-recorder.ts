import { parseTimestamp, type HeartbeatRequest } from '@dumont/protocol';
import type { Clock } from '../clock.js';
import { MAX_ROWS_PER_INSERT, ROLLUP_BUCKET_MS, type HistorySample, type HistoryStore } from '../store/history.js';

/** How long raw samples and rollups are kept (DUMONT_HISTORY_RAW_HOURS, DUMONT_HISTORY_DAYS). */
export interface HistorySettings {
  historyRawHours: number;
  historyDays: number;
}

export interface HistoryRecorderOptions {
  /** A pending batch is written at least this often. */
  flushIntervalMs?: number;
  /** …or as soon as it holds this many samples (one per GPU per beat). */
  flushAtSamples?: number;
  /** Rollups and pruning run this often. */
  maintenanceIntervalMs?: number;
  /** While the database refuses writes the oldest samples beyond this many are dropped, not the process. */
  maxPendingSamples?: number;
  /**
   * At most one sample per instance this often: an agent beats every 30 s, and one retrying or beating
   * faster adds no resolution worth a row per GPU (0 keeps every beat). A beat that may be busier than
   * the last one kept is kept all the same: a policy replay must see every beat that could have
   * stopped an idle streak.
   */
  minSampleIntervalMs?: number;
  onError?: (error: unknown, what: 'flush' | 'maintenance') => void;
}

/** A bucket is rolled up only once this long after it ended: samples still in a batch have landed by then. */
const ROLLUP_GRACE_MS = 30_000;
/** Each maintenance recomputes this many recent buckets again: a late flush (a slow replica) is folded in. */
const ROLLUP_LOOKBACK_BUCKETS = 3;

/** The rows of one beat: one per GPU; a beat without GPUs still keeps its process count and users. */
export function samplesOf(instanceId: number, at: number, beat: HeartbeatRequest): HistorySample[] {
  // As the heartbeat maps it for the policy: the activity's age on the agent's clock, from our `at`.
  const beatAt = parseTimestamp(beat.timestamp);
  const activity = beat.last_activity ? parseTimestamp(beat.last_activity) : null;
  const instance = {
    process_count: beat.process_count ?? null,
    active_users: beat.active_users ?? null,
    last_activity_at: activity === null || beatAt === null ? null : at - Math.max(0, beatAt - activity),
    collector_error: (beat.collector_errors?.length ?? 0) > 0 ? 1 : 0,
  };
  const gpus = beat.gpus ?? [];
  // Only the aggregate (an older agent): it stands for one GPU, as the instance's gpu_count says.
  const reported = gpus.length > 0 ? gpus : beat.gpu_metrics ? [{ index: 0, ...beat.gpu_metrics }] : [];
  if (reported.length === 0) {
    return [{ instance_id: instanceId, at, gpu_index: -1, utilization_percent: null, memory_used_mb: null, temperature_celsius: null, power_watts: null, ...instance }];
  }
  return reported.map((g) => ({
    instance_id: instanceId,
    at,
    gpu_index: g.index,
    utilization_percent: g.utilization_percent ?? null,
    memory_used_mb: g.memory_used_mb ?? null,
    temperature_celsius: g.temperature_celsius ?? null,
    power_watts: g.power_watts ?? null,
    ...instance,
  }));
}

/** What of a beat could end an idle streak: unknowns count as the busiest. */
interface Busyness {
  at: number;
  utilization: number;
  processes: number;
  activity: number;
  failed: boolean;
}

function busynessOf(at: number, samples: readonly HistorySample[]): Busyness {
  let utilization = -Infinity;
  for (const s of samples) utilization = Math.max(utilization, s.gpu_index < 0 || s.utilization_percent === null ? Infinity : s.utilization_percent);
  const first = samples[0]!;
  return {
    at,
    utilization,
    processes: first.process_count ?? Infinity,
    activity: first.last_activity_at ?? -Infinity,
    failed: first.collector_error === 1,
  };
}

/** Activity times move with the network's jitter (they are mapped onto the server clock): a second is news. */
const ACTIVITY_NEWS_MS = 1000;

function mayBeBusier(beat: Busyness, kept: Busyness): boolean {
  return beat.failed || beat.utilization > kept.utilization || beat.processes > kept.processes || beat.activity > kept.activity + ACTIVITY_NEWS_MS;
}

/**
 * Keeps every heartbeat's metrics without slowing the heartbeat: `record` only appends to a batch in
 * memory, and the batch is written in one multi-row INSERT every second (or sooner when it is full).
 * Every five minutes closed buckets are rolled up and what is past retention is pruned. A crash loses
 * at most the unwritten batch (about a second of samples), which the history can afford.
 */
export class HistoryRecorder {
  private pending: HistorySample[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | null = null;
  private maintenanceTimer: NodeJS.Timeout | null = null;
  private maintaining: Promise<void> | null = null;
  /** Buckets before this are rolled up already (by this process); null until the first maintenance. */
  private rolledUntil: number | null = null;
  private readonly flushIntervalMs: number;
  private readonly flushAtSamples: number;
  private readonly maintenanceIntervalMs: number;
  private readonly maxPendingSamples: number;
  /** Samples dropped because the database did not take them in time. */
  dropped = 0;
  /** Each instance's last kept sample (server time, and how busy it was), for `minSampleIntervalMs`. */
  private readonly lastKept = new Map<number, Busyness>();

  constructor(
    private readonly history: HistoryStore,
    private readonly clock: Clock,
    private readonly settings: HistorySettings,
    private readonly options: HistoryRecorderOptions = {},
  ) {
    this.flushIntervalMs = options.flushIntervalMs ?? 1000;
    this.flushAtSamples = Math.min(options.flushAtSamples ?? MAX_ROWS_PER_INSERT, MAX_ROWS_PER_INSERT);
    this.maintenanceIntervalMs = options.maintenanceIntervalMs ?? ROLLUP_BUCKET_MS;
    this.maxPendingSamples = options.maxPendingSamples ?? 200_000;
  }

  get rawRetentionMs(): number {
    return this.settings.historyRawHours * 3_600_000;
  }

  get retentionMs(): number {
    return this.settings.historyDays * 86_400_000;
  }

  /** Samples waiting for the next flush. */
  get pendingSamples(): number {
    return this.pending.length;
  }

  /** On the heartbeat's path: no I/O, no await. Once started, a full batch is written at once. */
  record(instanceId: number, at: number, beat: HeartbeatRequest): void {
    const minInterval = this.options.minSampleIntervalMs ?? 0;
    const samples = samplesOf(instanceId, at, beat);
    if (minInterval > 0) {
      const busyness = busynessOf(at, samples);
      const last = this.lastKept.get(instanceId);
      if (last !== undefined && at - last.at < minInterval && at >= last.at && !mayBeBusier(busyness, last)) return;
      this.lastKept.set(instanceId, busyness);
    }
    for (const sample of samples) this.pending.push(sample);
    if (this.pending.length > this.maxPendingSamples) {
      const excess = this.pending.length - this.maxPendingSamples;
      this.pending.splice(0, excess);
      this.dropped += excess;
    }
    if (this.pending.length >= this.flushAtSamples && this.flushTimer !== null) void this.flush().catch(() => {});
  }

  /** Writes everything recorded so far; flushes never overlap, so samples land in the order recorded. */
  flush(): Promise<void> {
    const run = this.flushing.then(async () => {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.flushAtSamples);
        try {
          await this.history.insertSamples(batch);
        } catch (error) {
          // Back to the front of the queue: the next flush tries again.
          this.pending.unshift(...batch);
          throw error;
        }
      }
    });
    this.flushing = run.catch((error) => this.options.onError?.(error, 'flush'));
    return run;
  }

  /** Rolls up the buckets that closed since the last run, then prunes. */
  maintain(): Promise<void> {
    this.maintaining ??= this.runMaintenance().finally(() => (this.maintaining = null));
    return this.maintaining;
  }

  private async runMaintenance(): Promise<void> {
    // What is recorded reaches the table before its bucket is rolled up.
    await this.flush().catch(() => {});
    const now = this.clock.now();
    const closedUntil = Math.floor((now - ROLLUP_GRACE_MS) / ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS;
    // After a start, every sample still stored: the server may have been down when its bucket closed,
    // and a sample is never pruned before it was rolled up.
    const from =
      this.rolledUntil === null ? now - this.retentionMs : Math.min(this.rolledUntil, closedUntil) - ROLLUP_LOOKBACK_BUCKETS * ROLLUP_BUCKET_MS;
    if (closedUntil > from) await this.history.rollUp(from, closedUntil);
    this.rolledUntil = closedUntil;
    await this.history.prune(now - this.rawRetentionMs, now - this.retentionMs);
  }

  start(): void {
    if (this.flushTimer !== null) return;
    this.flushTimer = setInterval(() => void this.flush().catch(() => {}), this.flushIntervalMs);
    this.maintenanceTimer = setInterval(
      () => void this.maintain().catch((error) => this.options.onError?.(error, 'maintenance')),
      this.maintenanceIntervalMs,
    );
    // Neither keeps the process alive on its own.
    this.flushTimer.unref();
    this.maintenanceTimer.unref();
  }

  /** Stops the timers and writes what is left. */
  async stop(): Promise<void> {
    if (this.flushTimer !== null) clearInterval(this.flushTimer);
    if (this.maintenanceTimer !== null) clearInterval(this.maintenanceTimer);
    this.flushTimer = this.maintenanceTimer = null;
    await this.maintaining?.catch(() => {});
    await this.flush().catch(() => {});
  }
}
