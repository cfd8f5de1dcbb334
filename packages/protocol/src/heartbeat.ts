import { Type, type Static } from '@sinclair/typebox';
import { InstanceId, IsoTimestamp, Nullable } from './common.js';
import { CommandResult, DeliveredCommand } from './commands.js';

/** Metrics of one GPU, or the aggregate of all of them. Every field may be missing or null: unknown. */
export const GpuMetrics = Type.Object({
  utilization_percent: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 100 }))),
  memory_used_mb: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1e9 }))),
  memory_total_mb: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1e9 }))),
  temperature_celsius: Type.Optional(Nullable(Type.Number({ minimum: -273, maximum: 1000 }))),
  power_watts: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1e6 }))),
});
export type GpuMetrics = Static<typeof GpuMetrics>;

/** One GPU of a multi-GPU host (extension of the seed: `gpus`). */
export const GpuSample = Type.Composite([
  Type.Object({
    index: Type.Integer({ minimum: 0, maximum: 1023 }),
    uuid: Type.Optional(Nullable(Type.String({ maxLength: 128 }))),
    name: Type.Optional(Nullable(Type.String({ maxLength: 256 }))),
  }),
  GpuMetrics,
]);
export type GpuSample = Static<typeof GpuSample>;

/** A collector that failed on this beat; its metrics are reported as unknown. */
export const CollectorError = Type.Object({
  collector: Type.String({ minLength: 1, maxLength: 64 }),
  message: Type.String({ maxLength: 2048 }),
});
export type CollectorError = Static<typeof CollectorError>;

export const MAX_GPUS_PER_HOST = 64;

/**
 * The outcome of one agent signal hook on this beat (extension: `activity_signals`). `unavailable` is a
 * hook that could not say (it failed, timed out or was not found); a policy reads that as activity.
 */
export const ActivitySignalReport = Type.Object({
  key: Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,63}$' }),
  state: Type.Union([Type.Literal('active'), Type.Literal('idle'), Type.Literal('unavailable')]),
  detail: Type.Optional(Type.String({ maxLength: 256 })),
});
export type ActivitySignalReport = Static<typeof ActivitySignalReport>;

/**
 * `POST /api/v1/agent/status` body: the seed's heartbeat plus optional, ignorable extensions. Fields the
 * server does not know, at any level, are dropped before anything reads them (a newer agent may send
 * some) and never stored; the server's validator does that for this route only.
 */
export const HeartbeatRequest = Type.Object({
  instance_id: InstanceId,
  hostname: Type.String({ minLength: 1, maxLength: 255 }),
  timestamp: IsoTimestamp,
  gpu_metrics: Type.Optional(GpuMetrics),
  process_count: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 1_000_000 }))),
  active_users: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 1_000_000 }))),
  last_activity: Type.Optional(Nullable(IsoTimestamp)),
  agent_version: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
  gpus: Type.Optional(Type.Array(GpuSample, { maxItems: MAX_GPUS_PER_HOST })),
  command_results: Type.Optional(Type.Array(CommandResult, { maxItems: 100 })),
  collector_errors: Type.Optional(Type.Array(CollectorError, { maxItems: 32 })),
  /**
   * Commands whose hook is running on this beat. A hibernate hook that is running may itself keep the
   * GPU busy (saving a checkpoint): such a beat does not cancel the hibernation, the agent's own checks
   * before and after the hook do.
   */
  running_commands: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 16 })),
  /** Results of the agent's signal hooks on this beat (extension; only the keys a policy names are read). */
  activity_signals: Type.Optional(Type.Array(ActivitySignalReport, { maxItems: 16 })),
});
export type HeartbeatRequest = Static<typeof HeartbeatRequest>;

export const HeartbeatResponse = Type.Object({
  success: Type.Boolean(),
  commands: Type.Array(DeliveredCommand),
  /** Seconds until the scheduled hibernation; 0 once the hibernate command is out; null when none. */
  hibernate_in_seconds: Nullable(Type.Integer({ minimum: 0 })),
  /** Seconds the agent should wait before its next beat. */
  next_heartbeat_in: Type.Number({ minimum: 0 }),
});
export type HeartbeatResponse = Static<typeof HeartbeatResponse>;
