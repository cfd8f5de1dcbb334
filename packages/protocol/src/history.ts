import { Type, type Static } from '@sinclair/typebox';
import { IsoTimestamp, Nullable } from './common.js';

/** At most this many points per GPU in one answer: a longer range is averaged into wider steps. */
export const MAX_HISTORY_POINTS = 1000;

/** `GET /api/v1/agent/instances/{instance_id}/metrics` query: RFC 3339 times; default the last hour up to now. */
export const MetricsHistoryQuery = Type.Object({
  from: Type.Optional(Type.String({ maxLength: 64, description: 'RFC 3339; default `to` minus one hour' })),
  to: Type.Optional(Type.String({ maxLength: 64, description: 'RFC 3339; default now' })),
});
export type MetricsHistoryQuery = Static<typeof MetricsHistoryQuery>;

const Metric = Nullable(Type.Number());
/** Lowest and highest sample behind an averaged point; absent on a raw sample. */
const Spread = Type.Optional(Nullable(Type.Number()));

/**
 * One point of one GPU: a sample as received, or the average of the samples of one step (then with
 * `_min`/`_max` companions). null = unknown for the whole step, never zero.
 */
export const MetricsPoint = Type.Object({
  at: IsoTimestamp,
  utilization_percent: Metric,
  utilization_percent_min: Spread,
  utilization_percent_max: Spread,
  memory_used_mb: Metric,
  memory_used_mb_min: Spread,
  memory_used_mb_max: Spread,
  temperature_celsius: Metric,
  temperature_celsius_min: Spread,
  temperature_celsius_max: Spread,
  power_watts: Metric,
  power_watts_min: Spread,
  power_watts_max: Spread,
});
export type MetricsPoint = Static<typeof MetricsPoint>;

export const MetricsHistoryResponse = Type.Object({
  instance_id: Type.Integer(),
  from: IsoTimestamp,
  to: IsoTimestamp,
  /** `raw`: samples as received; `rollup`: 5-minute min/avg/max (ranges older than raw retention). */
  resolution: Type.Union([Type.Literal('raw'), Type.Literal('rollup')]),
  /** Width of the step each point averages; 0 = raw samples, one per heartbeat. */
  step_seconds: Type.Integer({ minimum: 0 }),
  gpus: Type.Array(
    Type.Object({
      index: Type.Integer(),
      /** The GPU's UUID as the instance reports it now (null when unknown). */
      uuid: Nullable(Type.String()),
      points: Type.Array(MetricsPoint),
    }),
  ),
});
export type MetricsHistoryResponse = Static<typeof MetricsHistoryResponse>;
