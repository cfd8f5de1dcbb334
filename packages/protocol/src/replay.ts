import { Type, type Static } from '@sinclair/typebox';
import { IsoTimestamp } from './common.js';

/** Longest comma-separated list (`threshold_minutes`, `instance`) a replay query takes. */
export const MAX_REPLAY_LIST_LENGTH = 2048;

/**
 * `GET /api/v1/agent/replay` query. The lists arrive as text and are read by the route, so that a bad
 * element is a 400 naming its field like any other query number.
 */
export const ReplayQuery = Type.Object({
  threshold_minutes: Type.String({
    maxLength: MAX_REPLAY_LIST_LENGTH,
    description: 'Comma-separated thresholds to replay, each a number of minutes > 0 in plain decimal (fractions allowed), e.g. `10,20,30`',
  }),
  utilization_percent: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100, description: 'Idle below this GPU utilization; default DUMONT_IDLE_UTILIZATION_PERCENT' })),
  warning_seconds: Type.Optional(Type.Number({ minimum: 0, description: 'Warning before hibernating; default DUMONT_HIBERNATION_WARNING_SECONDS' })),
  regret_minutes: Type.Optional(Type.Number({ minimum: 0, description: 'A hibernation followed by demand within this is a regret; default 60' })),
  from: Type.Optional(
    Type.String({
      maxLength: 64,
      description: 'RFC 3339; default the start of raw retention (DUMONT_HISTORY_RAW_HOURS); earlier, down to DUMONT_HISTORY_DAYS, replays the 5-minute rollups',
    }),
  ),
  to: Type.Optional(Type.String({ maxLength: 64, description: 'RFC 3339; default now' })),
  instance: Type.Optional(
    Type.String({ maxLength: MAX_REPLAY_LIST_LENGTH, description: 'Comma-separated instance ids; default every instance the caller can see' }),
  ),
});
export type ReplayQuery = Static<typeof ReplayQuery>;

/** A replayed hibernation after which the instance showed demand again within the regret window. */
export const ReplayRegret = Type.Object({
  instance_id: Type.Integer(),
  hibernated_at: IsoTimestamp,
  busy_again_at: IsoTimestamp,
});
export type ReplayRegret = Static<typeof ReplayRegret>;

/** One instance's share of a policy's figures (instances without a hibernation are left out). */
export const ReplayInstanceFigures = Type.Object({
  instance_id: Type.Integer(),
  hibernations: Type.Integer({ minimum: 0 }),
  gpu_hours_saved: Type.Number(),
  usd_saved: Type.Number(),
  regret_count: Type.Integer({ minimum: 0 }),
});
export type ReplayInstanceFigures = Static<typeof ReplayInstanceFigures>;

const ReplayFigures = {
  hibernations: Type.Integer({ minimum: 0 }),
  gpu_hours_saved: Type.Number(),
  usd_saved: Type.Number(),
  regrets: Type.Array(ReplayRegret),
  /** Per instance, by instance id. */
  instances: Type.Array(ReplayInstanceFigures),
};

export const ReplayedPolicy = Type.Object({
  threshold_minutes: Type.Number(),
  utilization_percent: Type.Number(),
  warning_seconds: Type.Number(),
  ...ReplayFigures,
});
export type ReplayedPolicy = Static<typeof ReplayedPolicy>;

export const ReplayResponse = Type.Object({
  from: IsoTimestamp,
  to: IsoTimestamp,
  /**
   * Raw samples (every beat) are replayed from here to `to`; before it, where `from` is earlier, the
   * beats are rebuilt from 5-minute rollups (each GPU at its maximum: never less cautious).
   */
  raw_from: IsoTimestamp,
  /** What the policy that ran did over the same range. */
  actual: Type.Object(ReplayFigures),
  /** One per threshold asked, in the order asked. */
  policies: Type.Array(ReplayedPolicy),
});
export type ReplayResponse = Static<typeof ReplayResponse>;
