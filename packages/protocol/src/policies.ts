import { Type, type Static } from '@sinclair/typebox';
import { IsoTimestamp, Nullable } from './common.js';
import { MAX_KEEP_ALIVE_MINUTES, MAX_THRESHOLD_MINUTES, PROVIDER_NAME_PATTERN } from './instances.js';
import { MAX_SELECTOR_TERMS } from './labels.js';

/**
 * Named, admin-managed hibernation policies (`/api/v1/policies/{name}`). An instance follows the
 * highest-priority policy whose label selector it matches; every value a policy leaves out comes from
 * the server's defaults, and the admin limits bound what owners may set on the instance.
 */

export const POLICY_NAME_PATTERN = '^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$';

export const PolicyNameParams = Type.Object({ name: Type.String({ pattern: POLICY_NAME_PATTERN }) });
export type PolicyNameParams = Static<typeof PolicyNameParams>;

/** Working hours: outside them the policy shortens the threshold, or hibernates even a busy machine. */
export const ScheduleSchema = Type.Object(
  {
    /** An IANA time zone, e.g. `Europe/Berlin`. */
    timezone: Type.String({ maxLength: 64 }),
    /** Local ranges such as `Mon-Fri 08:00-20:00`; `Fri 22:00-06:00` runs past midnight. */
    active: Type.Array(Type.String({ maxLength: 64 }), { maxItems: 16 }),
    outside: Type.Union([Type.Literal('idle_only'), Type.Literal('hibernate')]),
    /** The threshold outside the active hours; required with `idle_only`. */
    outside_threshold_minutes: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_THRESHOLD_MINUTES })),
  },
  { additionalProperties: false },
);
export type ScheduleSchema = Static<typeof ScheduleSchema>;

/**
 * Something that counts as activity: a key an agent's signal hook reports (`type: "agent"`, `key`), or
 * a URL the server polls (`type: "http"`, `url`, optional timeout and interval). One object shape, so
 * that a wrong field is named as such; what each type needs is checked by the server.
 */
export const SignalSchema = Type.Object(
  {
    name: Type.String({ maxLength: 64 }),
    type: Type.Union([Type.Literal('agent'), Type.Literal('http')]),
    key: Type.Optional(Type.String({ maxLength: 64 })),
    /** May hold `{instance_id}`, `{hostname}`, `{provider_instance_id}` in its path or query; without them it is polled once for all. */
    url: Type.Optional(Type.String({ maxLength: 2048 })),
    timeout_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 })),
    interval_seconds: Type.Optional(Type.Integer({ minimum: 10, maximum: 3600 })),
  },
  { additionalProperties: false },
);
export type SignalSchema = Static<typeof SignalSchema>;

export const PolicyLimitsSchema = Type.Object(
  {
    max_threshold_minutes: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_THRESHOLD_MINUTES })),
    max_keep_alive_minutes: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_KEEP_ALIVE_MINUTES })),
    /** Keep-alive minutes owners may grant one instance per rolling 24 h; null = no budget. */
    keep_alive_budget_minutes: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 1440 }))),
    owner_may_disable: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type PolicyLimitsSchema = Static<typeof PolicyLimitsSchema>;

/** `PUT /api/v1/policies/{name}`: every value but `priority` may be left out (the server default applies). */
export const PolicySpec = Type.Object(
  {
    description: Type.Optional(Type.String({ maxLength: 500 })),
    /** Label selector terms, as in `?label=` (`team=vision`, `kind!=batch`, `gpu`, `!spot`); all must match; empty = every instance. */
    selector: Type.Array(Type.String({ maxLength: 200 }), { maxItems: MAX_SELECTOR_TERMS }),
    /** Higher wins where several policies match; two policies may not share one. */
    priority: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
    idle_utilization_percent: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100 })),
    threshold_minutes: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_THRESHOLD_MINUTES })),
    warning_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400 })),
    enabled: Type.Optional(Type.Boolean()),
    provider: Type.Optional(Type.String({ pattern: PROVIDER_NAME_PATTERN })),
    dry_run: Type.Optional(Type.Boolean()),
    schedule: Type.Optional(ScheduleSchema),
    /** Hibernate (with the warning, and keep-alive honoured) once the machine has run this long. */
    max_uptime_hours: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 8760 })),
    signals: Type.Optional(Type.Array(SignalSchema, { maxItems: 8 })),
    limits: Type.Optional(PolicyLimitsSchema),
  },
  { additionalProperties: false },
);
export type PolicySpec = Static<typeof PolicySpec>;

export const PolicyView = Type.Composite([
  Type.Object({
    name: Type.String(),
    created_at: IsoTimestamp,
    updated_at: IsoTimestamp,
    /** The admin key that last wrote it. */
    updated_by: Type.String(),
  }),
  PolicySpec,
]);
export type PolicyView = Static<typeof PolicyView>;

export const PolicyList = Type.Object({ policies: Type.Array(PolicyView) });
export type PolicyList = Static<typeof PolicyList>;

