import { Type, type Static } from '@sinclair/typebox';
import { InstanceId, InstanceStatus, IsoTimestamp, Nullable } from './common.js';
import { GpuMetrics, GpuSample, CollectorError } from './heartbeat.js';

/** One row of `GET /api/v1/agent/instances` (the seed's shape plus ignorable extensions). */
export const InstanceSummary = Type.Object({
  instance_id: Type.Integer(),
  hostname: Nullable(Type.String()),
  last_heartbeat: Nullable(IsoTimestamp),
  status: InstanceStatus,
  gpu_utilization: Nullable(Type.Number()),
  memory_used_percent: Nullable(Type.Number()),
  idle_seconds: Type.Integer(),
  agent_version: Nullable(Type.String()),
  gpu_count: Type.Integer(),
  hibernate_in_seconds: Nullable(Type.Integer()),
});
export type InstanceSummary = Static<typeof InstanceSummary>;

export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 1000;

export const ListInstancesQuery = Type.Object({
  status: Type.Optional(InstanceStatus),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
});
export type ListInstancesQuery = Static<typeof ListInstancesQuery>;

/** Set while a large share of the fleet went silent at once: no hibernation is scheduled or fired. */
export const MassSilenceView = Type.Object({
  since: IsoTimestamp,
  /** Instances of the episode still silent. */
  silent: Type.Integer(),
  /** Instances watched when it began. */
  watched: Type.Integer(),
});
export type MassSilenceView = Static<typeof MassSilenceView>;

export const ListInstancesResponse = Type.Object({
  instances: Type.Array(InstanceSummary),
  /** Instances that match the filter, across all pages. */
  count: Type.Integer(),
  active_count: Type.Integer(),
  idle_count: Type.Integer(),
  hibernating_count: Type.Integer(),
  hibernated_count: Type.Integer(),
  offline_count: Type.Integer(),
  /** Pass as `cursor` to get the next page; null on the last page. */
  next_cursor: Nullable(Type.String()),
  mass_silence: Type.Union([MassSilenceView, Type.Null()]),
});
export type ListInstancesResponse = Static<typeof ListInstancesResponse>;

export const HibernationView = Type.Object({
  enabled: Type.Boolean(),
  threshold_minutes: Type.Number(),
  scheduled: Type.Boolean(),
  scheduled_at: Nullable(IsoTimestamp),
  ignore_gpu_processes: Type.Boolean(),
  hibernate_in_seconds: Nullable(Type.Integer()),
});

/** `GET /api/v1/agent/instances/{instance_id}`. */
export const InstanceDetail = Type.Object({
  instance_id: Type.Integer(),
  hostname: Nullable(Type.String()),
  status: InstanceStatus,
  last_heartbeat: Nullable(IsoTimestamp),
  heartbeat_count: Type.Integer(),
  uptime_hours: Type.Number(),
  gpu_metrics: GpuMetrics,
  activity: Type.Object({
    last_activity: Nullable(IsoTimestamp),
    idle_seconds: Type.Integer(),
    process_count: Nullable(Type.Integer()),
    active_users: Nullable(Type.Integer()),
  }),
  hibernation: HibernationView,
  agent_version: Nullable(Type.String()),
  gpus: Type.Array(GpuSample),
  postponed_until: Nullable(IsoTimestamp),
  /** The agent's own `timestamp` from the last applied beat (the server clock decides everything). */
  agent_timestamp: Nullable(Type.String()),
  collector_errors: Type.Array(CollectorError),
  registered_at: IsoTimestamp,
});
export type InstanceDetail = Static<typeof InstanceDetail>;

export const InstanceIdParams = Type.Object({ instance_id: InstanceId });
export type InstanceIdParams = Static<typeof InstanceIdParams>;

export const MAX_KEEP_ALIVE_MINUTES = 1440;
export const KeepAliveQuery = Type.Object({
  minutes: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_KEEP_ALIVE_MINUTES })),
});
export type KeepAliveQuery = Static<typeof KeepAliveQuery>;

export const KeepAliveResponse = Type.Object({
  success: Type.Boolean(),
  instance_id: Type.Integer(),
  hibernation_postponed_until: IsoTimestamp,
  message: Type.String(),
});
export type KeepAliveResponse = Static<typeof KeepAliveResponse>;

/** `POST /api/v1/agent/instances`: register (or re-register, rotating the token). */
export const RegisterInstanceRequest = Type.Object(
  {
    instance_id: InstanceId,
    hostname: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  },
  { additionalProperties: false },
);
export type RegisterInstanceRequest = Static<typeof RegisterInstanceRequest>;

export const RegisterInstanceResponse = Type.Object({
  instance_id: Type.Integer(),
  /** Shown once; only its hash is stored. */
  agent_token: Type.String(),
  rotated: Type.Boolean(),
});
export type RegisterInstanceResponse = Static<typeof RegisterInstanceResponse>;

export const MAX_THRESHOLD_MINUTES = 10_080;
/** `PATCH /api/v1/agent/instances/{id}/hibernation`. */
export const HibernationPolicyPatch = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean()),
    threshold_minutes: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: MAX_THRESHOLD_MINUTES })),
    ignore_gpu_processes: Type.Optional(Type.Boolean()),
  },
  { minProperties: 1, additionalProperties: false },
);
export type HibernationPolicyPatch = Static<typeof HibernationPolicyPatch>;

export const EVENT_TYPES = [
  'registered',
  'token_rotated',
  'online',
  'offline',
  'woke',
  'idle_detected',
  'active_again',
  'hibernation_scheduled',
  'hibernation_cancelled',
  'keep_alive',
  'policy_changed',
  'command_issued',
  'command_delivered',
  'command_succeeded',
  'command_failed',
  'command_expired',
  'command_cancelled',
  'hibernated',
  'hibernation_failed',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export const EventView = Type.Object({
  id: Type.Integer(),
  instance_id: Type.Integer(),
  at: IsoTimestamp,
  type: Type.Union(EVENT_TYPES.map((t) => Type.Literal(t))),
  reason: Type.String(),
  data: Type.Record(Type.String(), Type.Unknown()),
});
export type EventView = Static<typeof EventView>;

export const ListEventsQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
});
export type ListEventsQuery = Static<typeof ListEventsQuery>;

export const EventListResponse = Type.Object({
  events: Type.Array(EventView),
  next_cursor: Nullable(Type.String()),
});
export type EventListResponse = Static<typeof EventListResponse>;
