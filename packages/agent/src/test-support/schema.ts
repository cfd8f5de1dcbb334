import { FormatRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { HeartbeatRequest } from '@dumont/protocol';

// The server validates date-time strictly (RFC 3339); TypeBox needs the format registered.
if (!FormatRegistry.Has('date-time')) {
  FormatRegistry.Set('date-time', (v) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) && !Number.isNaN(Date.parse(v)));
}

/** Errors of a heartbeat body against the protocol's schema; [] when the server would accept it. */
export function heartbeatSchemaErrors(body: unknown): string[] {
  return [...Value.Errors(HeartbeatRequest, body)].map((e) => `${e.path}: ${e.message}`);
}
