import { Type, type Static, type TSchema } from '@sinclair/typebox';

/**
 * A value the sender could not read: `null` means "unknown", never zero. Written as a type list
 * (`type: ["number", "null"]`) rather than `anyOf`, which validators and serializers handle without
 * trying each branch — this sits on every field of every heartbeat. For primitive schemas only.
 */
export const Nullable = <T extends TSchema & { type: string }>(schema: T) =>
  Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] });

/** Instance ids are the provider's numeric ids (Vast.ai style); kept within JavaScript's safe range. */
export const InstanceId = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });

export const IsoTimestamp = Type.String({ format: 'date-time', maxLength: 64 });

export const InstanceStatus = Type.Union([
  Type.Literal('active'),
  Type.Literal('idle'),
  Type.Literal('hibernating'),
  Type.Literal('hibernated'),
  Type.Literal('offline'),
  Type.Literal('waking'),
]);

export const INSTANCE_STATUSES = ['active', 'idle', 'hibernating', 'hibernated', 'offline', 'waking'] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];
