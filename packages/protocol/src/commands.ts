import { Type, type Static } from '@sinclair/typebox';
import { IsoTimestamp, Nullable } from './common.js';

export const COMMAND_TYPES = ['hibernate', 'snapshot', 'update', 'restart'] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];
export const CommandTypeSchema = Type.Union(COMMAND_TYPES.map((t) => Type.Literal(t)));

export const CommandArgs = Type.Record(Type.String(), Type.Unknown());

/** A command as it travels to the agent in a heartbeat response. */
export const DeliveredCommand = Type.Object({
  id: Type.String(),
  type: CommandTypeSchema,
  args: CommandArgs,
  issued_at: IsoTimestamp,
});
export type DeliveredCommand = Static<typeof DeliveredCommand>;

/** What the agent reports back in a later heartbeat. */
export const CommandResult = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 64 }),
  status: Type.Union([Type.Literal('succeeded'), Type.Literal('failed')]),
  detail: Type.Optional(Nullable(Type.String({ maxLength: 8192 }))),
});
export type CommandResult = Static<typeof CommandResult>;

/** `expired`: a hibernate command unanswered in time; `cancelled`: a hibernate command withdrawn because the machine was busy again. */
export const COMMAND_STATES = ['pending', 'delivered', 'succeeded', 'failed', 'expired', 'cancelled'] as const;
export type CommandState = (typeof COMMAND_STATES)[number];

/**
 * Largest `args` of a new command, as JSON text. A command is repeated in every heartbeat answer until
 * its result arrives and the agent refuses answers over 1 MiB: without a bound, seventeen commands
 * with 60 KB of args would cut an instance off from every later answer, the ones that fix it included.
 */
export const MAX_COMMAND_ARGS_BYTES = 4096;

/** `POST /api/v1/agent/instances/{id}/commands` body; unknown fields are refused, `args` is free. */
export const CreateCommandRequest = Type.Object(
  {
    type: CommandTypeSchema,
    // `x-max-json-bytes`: the server's validator enforces it; other readers may ignore an `x-` keyword.
    args: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { 'x-max-json-bytes': MAX_COMMAND_ARGS_BYTES })),
  },
  { additionalProperties: false },
);
export type CreateCommandRequest = Static<typeof CreateCommandRequest>;

export const CommandView = Type.Object({
  id: Type.String(),
  instance_id: Type.Integer(),
  type: CommandTypeSchema,
  args: CommandArgs,
  state: Type.Union(COMMAND_STATES.map((s) => Type.Literal(s))),
  issued_at: IsoTimestamp,
  issued_by: Type.String(),
  delivered_at: Nullable(IsoTimestamp),
  completed_at: Nullable(IsoTimestamp),
  detail: Nullable(Type.String()),
});
export type CommandView = Static<typeof CommandView>;

export const CommandListResponse = Type.Object({
  commands: Type.Array(CommandView),
  count: Type.Integer(),
});
export type CommandListResponse = Static<typeof CommandListResponse>;
