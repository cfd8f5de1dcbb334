import { HeartbeatRequest } from '@dumont/protocol';
import { validatorCompiler } from '../../../server/src/http/validation.js';

// The very validator the server runs on POST /api/v1/agent/status bodies.
const validate = validatorCompiler({ schema: HeartbeatRequest, httpPart: 'body', method: 'POST', url: '/api/v1/agent/status' }) as ((
  body: unknown,
) => boolean) & { errors?: { instancePath: string; message?: string }[] | null };

/** Errors of a heartbeat body against the protocol's schema; [] when the server would accept it. */
export function heartbeatSchemaErrors(body: unknown): string[] {
  return validate(body) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath}: ${e.message ?? 'invalid'}`);
}
