import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { InstanceId, InstanceStatus, IsoTimestamp, Nullable } from './common.js';
import { GpuMetrics, GpuSample, CollectorError } from './heartbeat.js';
import { LabelSelectorQuery, LabelsPatchSchema, LabelsSchema } from './labels.js';

/** The instance's labels, `{}` when none. */
const LabelsView = Type.Record(Type.String(), Type.String());

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
  /** The hottest GPU's temperature in the last heartbeat, of those that reported one; null when none did. */
  temperature_celsius: Nullable(Type.Number()),
  labels: LabelsView,
});
export type InstanceSummary = Static<typeof InstanceSummary>;

export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 1000;

/** What `sort` may name; a leading `-` sorts descending. Unknown values sort last either way. */
export const INSTANCE_SORT_KEYS = ['instance_id', 'hostname', 'last_heartbeat', 'idle_seconds', 'hibernate_in_seconds', 'gpu_utilization'] as const;
export type InstanceSortKey = (typeof INSTANCE_SORT_KEYS)[number];
export type InstanceSort = InstanceSortKey | `-${InstanceSortKey}`;
export const INSTANCE_SORTS = INSTANCE_SORT_KEYS.flatMap((k) => [k, `-${k}`] as const) as readonly InstanceSort[];
export const DEFAULT_INSTANCE_SORT: InstanceSort = 'instance_id';
export const MAX_SEARCH_LENGTH = 255;

export const ListInstancesQuery = Type.Object({
  status: Type.Optional(InstanceStatus),
  /**
   * Search: all digits matches that instance id or a hostname containing it; anything else is a
   * case-insensitive substring of the hostname (`%`, `_` and `\` are plain characters).
   */
  q: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_SEARCH_LENGTH })),
  /** A column, `-` first for descending; default `instance_id`. Ties go by instance id in the same direction. */
  sort: Type.Optional(Type.Unsafe<InstanceSort>({ type: 'string', enum: [...INSTANCE_SORTS] })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT })),
  /** From `next_cursor` of the previous page, asked with the same `sort`. */
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
  /** Label selector terms, all of which must match (labels.ts). */
  label: Type.Optional(LabelSelectorQuery),
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
  /** Instances that match `status`, `q` and `label`, across all pages (the `*_count` fields ignore all three). */
  count: Type.Integer(),
  active_count: Type.Integer(),
  idle_count: Type.Integer(),
  hibernating_count: Type.Integer(),
  hibernated_count: Type.Integer(),
  offline_count: Type.Integer(),
  waking_count: Type.Integer(),
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
  /** Dry-run (this instance's flag or DUMONT_DRY_RUN): the policy records `would_hibernate` and stops nothing. */
  dry_run: Type.Boolean(),
  /**
   * The stored values an admin limit bounds, present only where they differ from the effective ones
   * above (an owner's value stored before a limit was lowered).
   */
  threshold_minutes_requested: Type.Optional(Type.Number()),
  enabled_requested: Type.Optional(Type.Boolean()),
  dry_run_requested: Type.Optional(Type.Boolean()),
  /** What owners may set on this instance; admins may exceed any limit. */
  limits: Type.Optional(
    Type.Object({
      max_threshold_minutes: Type.Number(),
      max_keep_alive_minutes: Type.Integer(),
      /** Keep-alive minutes owners may grant the instance per rolling 24 h; null = no budget. */
      keep_alive_budget_minutes: Nullable(Type.Integer()),
      /** What is left of it now; null = unlimited. */
      keep_alive_left_minutes: Nullable(Type.Integer()),
      /** Whether owners may set `enabled: false` or `dry_run: true`. */
      owner_may_disable: Type.Boolean(),
    }),
  ),
});

export const PROVIDER_STATES = ['stopping', 'stopped', 'stop_failed', 'starting', 'running', 'start_failed'] as const;
export type ProviderState = (typeof PROVIDER_STATES)[number];

/** Who stops and starts the machine, and what it last did. */
export const ProviderView = Type.Object({
  /** `none`, `vast`, `webhook` or `command`: this instance's, else the server's default. */
  name: Type.String(),
  /** The id the provider knows the machine by (default: the instance id). */
  instance_id: Type.String(),
  /** null until the first stop or start. */
  state: Type.Union([...PROVIDER_STATES.map((s) => Type.Literal(s)), Type.Null()]),
  last_error: Nullable(Type.String()),
  updated_at: Nullable(IsoTimestamp),
});
export type ProviderView = Static<typeof ProviderView>;

/** What hibernation saved this instance, over its whole history. */
export const InstanceSavings = Type.Object({
  hibernated_hours: Type.Number(),
  gpu_hours_saved: Type.Number(),
  usd_saved: Type.Number(),
});
export type InstanceSavings = Static<typeof InstanceSavings>;

/** Where an effective value came from: `default` (the server's), `policy`, `instance` (set on it), `limit`, `schedule`. */
export const VALUE_SOURCES = ['default', 'policy', 'instance', 'limit', 'schedule'] as const;
export type ValueSource = (typeof VALUE_SOURCES)[number];

const SourceSchema = Type.Union(VALUE_SOURCES.map((source) => Type.Literal(source)));
const Sourced = <T extends TSchema>(value: T) => Type.Object({ value, source: SourceSchema });

/** The detail's `effective_policy`: the values the server applies now, each with where it came from. */
export const EffectivePolicyView = Type.Object({
  /** The matching policy, or null (server defaults). */
  policy: Nullable(Type.String()),
  idle_utilization_percent: Sourced(Type.Number()),
  threshold_minutes: Sourced(Type.Number()),
  warning_seconds: Sourced(Type.Number()),
  enabled: Sourced(Type.Boolean()),
  provider: Sourced(Type.String()),
  dry_run: Sourced(Type.Boolean()),
  max_uptime_hours: Nullable(Type.Number()),
  schedule: Nullable(
    Type.Object({
      timezone: Type.String(),
      active: Type.Array(Type.String()),
      outside: Type.String(),
      outside_threshold_minutes: Nullable(Type.Integer()),
      /** Whether `now` lies in the active hours, and when that changes next (null: never within 8 days). */
      within_active_hours: Type.Boolean(),
      next_change_at: Nullable(IsoTimestamp),
    }),
  ),
  /** Why a hibernation would be forced now (outside hours with `hibernate`, or past max uptime); null = none. */
  forced: Nullable(Type.String()),
  signals: Type.Array(
    Type.Object({
      name: Type.String(),
      type: Type.String(),
      /** `active`, `idle` or `unavailable` (counts as active); null = not read yet. */
      state: Nullable(Type.String()),
      detail: Nullable(Type.String()),
    }),
  ),
});
export type EffectivePolicyView = Static<typeof EffectivePolicyView>;

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
  /** USD per hour while running; null = unknown (savings count hours, not money). */
  price_per_hour: Nullable(Type.Number()),
  provider: ProviderView,
  savings: InstanceSavings,
  labels: LabelsView,
  /** The values that govern the instance's hibernation now, each with where it came from (named policies). */
  effective_policy: EffectivePolicyView,
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

export const PROVIDER_NAME_PATTERN = '^[a-z][a-z0-9_-]{0,31}$';
/** Letters, digits, `_`, `.`, `-`; never `.` or `..`, which are path segments, not ids. */
export const PROVIDER_INSTANCE_ID_PATTERN = '^(?!\\.{1,2}$)[A-Za-z0-9_.-]{1,128}$';
export const MAX_PRICE_PER_HOUR = 10_000;

/** How the machine is stopped and started, and what it costs: set at registration or by PATCH. */
const ProviderFields = {
  /** A provider configured on this server (`none`, `vast`, `webhook`, `command`). */
  provider: Type.Optional(Type.String({ pattern: PROVIDER_NAME_PATTERN })),
  /** The provider's id for the machine; never able to change the provider's URL path. */
  provider_instance_id: Type.Optional(Type.String({ pattern: PROVIDER_INSTANCE_ID_PATTERN })),
  /** USD per hour while running. */
  price_per_hour: Type.Optional(Type.Number({ minimum: 0, maximum: MAX_PRICE_PER_HOUR })),
};

/** `POST /api/v1/agent/instances`: register (or re-register, rotating the token). */
export const RegisterInstanceRequest = Type.Object(
  {
    instance_id: InstanceId,
    hostname: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    ...ProviderFields,
    /** Replaces the instance's labels; left out at re-registration, the stored ones stay. */
    labels: Type.Optional(LabelsSchema),
  },
  { additionalProperties: false },
);
export type RegisterInstanceRequest = Static<typeof RegisterInstanceRequest>;

export const RegisterInstanceResponse = Type.Object({
  instance_id: Type.Integer(),
  /** Shown once; only its hash is stored. */
  agent_token: Type.String(),
  rotated: Type.Boolean(),
  /**
   * Run on the GPU host as root after saving `agent_token` to ./dumont-agent.token: installs the agent
   * from this server. Holds no secret (the token is read from the file, never from the command line).
   */
  install_command: Type.String(),
});
export type RegisterInstanceResponse = Static<typeof RegisterInstanceResponse>;

export const MAX_THRESHOLD_MINUTES = 10_080;
/** `PATCH /api/v1/agent/instances/{id}/hibernation`. */
export const HibernationPolicyPatch = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean()),
    /** null: follow the instance's policy (or the server default) again. */
    threshold_minutes: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, maximum: MAX_THRESHOLD_MINUTES }))),
    ignore_gpu_processes: Type.Optional(Type.Boolean()),
    /** Record `would_hibernate` instead of hibernating this instance. */
    dry_run: Type.Optional(Type.Boolean()),
  },
  { minProperties: 1, additionalProperties: false },
);
export type HibernationPolicyPatch = Static<typeof HibernationPolicyPatch>;

/** `PATCH /api/v1/agent/instances/{id}`. */
export const InstancePatch = Type.Object(
  { ...ProviderFields, labels: Type.Optional(LabelsPatchSchema) },
  { minProperties: 1, additionalProperties: false },
);
export type InstancePatch = Static<typeof InstancePatch>;

/** `POST /api/v1/agent/instances/{id}/wake`: accepted; the first heartbeat makes it `active`. */
export const WakeResponse = Type.Object({
  success: Type.Boolean(),
  instance_id: Type.Integer(),
  status: Type.Literal('waking'),
});
export type WakeResponse = Static<typeof WakeResponse>;

/** `GET /api/v1/agent/savings`: ISO times; default the last 30 days. */
export const SavingsQuery = Type.Object({
  from: Type.Optional(Type.String({ maxLength: 64 })),
  to: Type.Optional(Type.String({ maxLength: 64 })),
  /** Only instances matching these label selector terms. */
  label: Type.Optional(LabelSelectorQuery),
});
export type SavingsQuery = Static<typeof SavingsQuery>;

const SavingsFigures = {
  hibernated_hours: Type.Number(),
  gpu_hours_saved: Type.Number(),
  usd_saved: Type.Number(),
  /** Dry-run: what the hours counted as `would_hibernate` would have saved. */
  would_have_saved_hours: Type.Number(),
  would_have_saved_usd: Type.Number(),
};

export const SavingsResponse = Type.Object({
  from: IsoTimestamp,
  to: IsoTimestamp,
  ...SavingsFigures,
  instances: Type.Array(Type.Object({ instance_id: Type.Integer(), hostname: Nullable(Type.String()), ...SavingsFigures })),
});
export type SavingsResponse = Static<typeof SavingsResponse>;

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
  'instance_updated',
  'would_hibernate',
  'provider_stop_requested',
  'provider_stop_failed',
  'provider_stopped',
  'provider_start_requested',
  'provider_start_failed',
  'provider_started',
  'wake_requested',
  'wake_failed',
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
