import { Type, type TSchema } from '@sinclair/typebox';

/** A value the sender could not read. `null` means "unknown", never zero. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

/** Instance ids are the provider's numeric ids (Vast.ai style); kept within JavaScript's safe range. */
export const InstanceId = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });

export const IsoTimestamp = Type.String({ format: 'date-time', maxLength: 64 });

export const InstanceStatus = Type.Union([
  Type.Literal('active'),
  Type.Literal('idle'),
  Type.Literal('hibernating'),
  Type.Literal('hibernated'),
  Type.Literal('offline'),
]);

export const INSTANCE_STATUSES = ['active', 'idle', 'hibernating', 'hibernated', 'offline'] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];
