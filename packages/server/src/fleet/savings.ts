import type { SavingsRow } from '../store/schema.js';
import type { OpenSavingsRow } from '../store/store.js';

/** What hibernation saved (or, in dry-run, would have saved) over a range. */
export interface SavingsFigures {
  hibernated_hours: number;
  gpu_hours_saved: number;
  usd_saved: number;
  would_have_saved_hours: number;
  would_have_saved_usd: number;
}

type Interval = Pick<SavingsRow, 'instance_id' | 'kind' | 'started_at' | 'ended_at' | 'gpu_count' | 'price_per_hour'>;

const HOUR = 3_600_000;
/** Savings figures are kept to 4 decimals. */
export const round = (n: number) => Math.round(n * 10_000) / 10_000;

export const noSavings = (): SavingsFigures => ({
  hibernated_hours: 0,
  gpu_hours_saved: 0,
  usd_saved: 0,
  would_have_saved_hours: 0,
  would_have_saved_usd: 0,
});

/** The intervals still open (hibernated now, or idle after `would_hibernate`), closed at `now`. */
export function openIntervals(rows: readonly OpenSavingsRow[], now: number): Interval[] {
  return rows.map((r) => ({
    instance_id: r.instance_id,
    kind: r.status === 'hibernated' ? 'hibernated' : 'would',
    started_at: r.saving_since!,
    ended_at: now,
    gpu_count: r.gpu_count,
    price_per_hour: r.price_per_hour,
  }));
}

/**
 * Sums intervals clipped to [from, to), per instance: hours × `price_per_hour` for money (an unknown
 * price saves hours, not dollars), hours × GPUs for GPU-hours. Rounded to 4 decimals.
 */
export function sumSavings(intervals: readonly Interval[], from: number, to: number): Map<number, SavingsFigures> {
  const byInstance = new Map<number, SavingsFigures>();
  for (const interval of intervals) {
    const ms = Math.min(interval.ended_at, to) - Math.max(interval.started_at, from);
    if (ms <= 0) continue;
    const hours = ms / HOUR;
    const figures = byInstance.get(interval.instance_id) ?? noSavings();
    const usd = hours * (interval.price_per_hour ?? 0);
    if (interval.kind === 'hibernated') {
      figures.hibernated_hours += hours;
      figures.gpu_hours_saved += hours * interval.gpu_count;
      figures.usd_saved += usd;
    } else {
      figures.would_have_saved_hours += hours;
      figures.would_have_saved_usd += usd;
    }
    byInstance.set(interval.instance_id, figures);
  }
  for (const figures of byInstance.values()) {
    for (const key of Object.keys(figures) as (keyof SavingsFigures)[]) figures[key] = round(figures[key]);
  }
  return byInstance;
}

export function totalOf(figures: Iterable<SavingsFigures>): SavingsFigures {
  const total = noSavings();
  for (const f of figures) for (const key of Object.keys(total) as (keyof SavingsFigures)[]) total[key] += f[key];
  for (const key of Object.keys(total) as (keyof SavingsFigures)[]) total[key] = round(total[key]);
  return total;
}
