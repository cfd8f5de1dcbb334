import {
  DumontError,
  MAX_HISTORY_POINTS,
  parseTimestamp,
  type MetricsHistoryQuery,
  type MetricsHistoryResponse,
  type MetricsPoint,
} from '@dumont/protocol';
import type { Clock } from '../clock.js';
import { GPU_METRICS, ROLLUP_BUCKET_MS, type HistoryStore } from '../store/history.js';
import type { FleetStore } from '../store/store.js';
import type { HistorySettings } from './history-recorder.js';
import { canSee, type Operator } from './principal.js';

const DEFAULT_RANGE_MS = 3_600_000;

type GpuMetric = (typeof GPU_METRICS)[number];

/** What a step knows of one metric: a raw sample is a summary of one. */
interface Summary {
  n: number;
  min: number | null;
  sum: number;
  max: number | null;
}

type StepSummary = { at: number } & Record<GpuMetric, Summary>;

const emptySummary = (): Summary => ({ n: 0, min: null, sum: 0, max: null });

function merge(into: Summary, n: number, min: number | null, avg: number | null, max: number | null): void {
  if (avg === null) return;
  into.n += n;
  into.sum += avg * n;
  if (min !== null) into.min = into.min === null ? min : Math.min(into.min, min);
  if (max !== null) into.max = into.max === null ? max : Math.max(into.max, max);
}

function pointOf(step: StepSummary, withSpread: boolean): MetricsPoint {
  const point: Record<string, unknown> = { at: new Date(step.at).toISOString() };
  for (const metric of GPU_METRICS) {
    const s = step[metric];
    point[metric] = s.n === 0 ? null : s.sum / s.n;
    if (withSpread) {
      point[`${metric}_min`] = s.min;
      point[`${metric}_max`] = s.max;
    }
  }
  return point as MetricsPoint;
}

/** The narrowest multiple of `unitMs` whose epoch-aligned steps cover [from, to] in at most MAX_HISTORY_POINTS. */
function stepFor(from: number, to: number, unitMs: number): number {
  let step = Math.max(unitMs, Math.ceil((to - from) / (MAX_HISTORY_POINTS - 1) / unitMs) * unitMs);
  while (Math.floor(to / step) - Math.floor(from / step) + 1 > MAX_HISTORY_POINTS) step += unitMs;
  return step;
}

function parseTime(value: string | undefined, field: 'from' | 'to'): number | undefined {
  if (value === undefined) return undefined;
  const time = parseTimestamp(value);
  if (time === null) throw new DumontError('invalid_request', `${field}: must be an RFC 3339 date-time`, field);
  return time;
}

/** `GET …/instances/{id}/metrics`: a GPU's history, raw while the range is in raw retention, rollups beyond. */
export class HistoryService {
  constructor(
    private readonly store: FleetStore,
    private readonly history: HistoryStore,
    private readonly clock: Clock,
    private readonly settings: HistorySettings,
  ) {}

  async metrics(operator: Operator, instanceId: number, query: MetricsHistoryQuery): Promise<MetricsHistoryResponse> {
    const now = this.clock.now();
    const { from, to } = this.rangeOf(query, now);
    const instance = await this.store.getInstance(instanceId);
    // Another owner's instance answers exactly as a missing one: nothing about it leaks.
    if (!instance || !canSee(operator, instance.owner)) {
      throw new DumontError('not_found', `instance ${instanceId} not found`, 'instance_id');
    }
    const raw = from >= now - this.settings.historyRawHours * 3_600_000;
    const steps = new Map<number, Map<number, StepSummary>>();
    let stepMs = 0;
    const stepOf = (gpu: number, at: number) => {
      let perGpu = steps.get(gpu);
      if (!perGpu) steps.set(gpu, (perGpu = new Map()));
      const start = stepMs === 0 ? at : Math.floor(at / stepMs) * stepMs;
      let step = perGpu.get(start);
      if (!step) {
        step = { at: start, ...Object.fromEntries(GPU_METRICS.map((m) => [m, emptySummary()])) } as StepSummary;
        perGpu.set(start, step);
      }
      return step;
    };
    if (raw) {
      const samples = await this.history.samples(instanceId, from, to);
      const perGpu = new Map<number, number>();
      for (const s of samples) perGpu.set(s.gpu_index, (perGpu.get(s.gpu_index) ?? 0) + 1);
      // Raw samples as received while they fit; otherwise averaged into steps of whole seconds.
      if (Math.max(0, ...perGpu.values()) > MAX_HISTORY_POINTS) stepMs = stepFor(from, to, 1000);
      for (const s of samples) {
        const step = stepOf(s.gpu_index, s.at);
        for (const m of GPU_METRICS) merge(step[m], 1, s[m], s[m], s[m]);
      }
    } else {
      stepMs = stepFor(from, to, ROLLUP_BUCKET_MS);
      for (const r of await this.history.rollups(instanceId, from, to)) {
        const step = stepOf(r.gpu_index, r.bucket_at);
        for (const m of GPU_METRICS) merge(step[m], r.samples, r[`${m}_min` as const], r[`${m}_avg` as const], r[`${m}_max` as const]);
      }
    }
    const uuids = new Map(instance.readings.gpus.map((g) => [g.index, g.uuid ?? null]));
    const gpus = [...steps.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, perGpu]) => ({
        index,
        uuid: uuids.get(index) ?? null,
        points: [...perGpu.values()].sort((a, b) => a.at - b.at).map((step) => pointOf(step, stepMs > 0)),
      }));
    return {
      instance_id: instanceId,
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      resolution: raw ? 'raw' : 'rollup',
      step_seconds: stepMs / 1000,
      gpus,
    };
  }

  private rangeOf(query: MetricsHistoryQuery, now: number): { from: number; to: number } {
    const to = parseTime(query.to, 'to') ?? now;
    const from = parseTime(query.from, 'from') ?? to - DEFAULT_RANGE_MS;
    if (to <= from) throw new DumontError('invalid_request', 'to: must be after from', 'to');
    const days = this.settings.historyDays;
    if (to - from > days * 86_400_000) {
      throw new DumontError('invalid_request', `from: the range may span at most the history retention (${days} days)`, 'from');
    }
    return { from, to };
  }
}
