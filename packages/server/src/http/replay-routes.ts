import { DumontError, parseTimestamp, ReplayQuery as ReplayWireQuery, ReplayResponse } from '@dumont/protocol';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ReplayQuery, ReplayService } from '../fleet/replay-service.js';
import type { Authenticator } from './auth.js';

// The same plain-decimal rule as the other query numbers (validation.ts): `1e3` or `0x10` is refused.
const DECIMAL_NUMBER = /^[0-9]+(?:\.[0-9]+)?$/;
const DECIMAL_INTEGER = /^[0-9]+$/;

/** `10,20.5` → [10, 20.5]; anything but plain decimals, or nothing at all, is a 400 naming `field`. */
export function numberList(text: string, field: string, what: string): number[] {
  const parts = text.split(',').map((part) => part.trim());
  if (parts.some((part) => !DECIMAL_NUMBER.test(part))) {
    throw new DumontError('invalid_request', `${field}: ${what}, comma-separated, each a number in plain decimal digits`, field);
  }
  return parts.map(Number);
}

/** `5,6` → instance ids [5, 6]; a 400 naming `field` for anything else. */
export function instanceIdList(texts: readonly string[], field: string): number[] {
  const parts = texts.flatMap((text) => text.split(',')).map((part) => part.trim());
  if (parts.some((part) => !DECIMAL_INTEGER.test(part) || Number(part) < 1 || !Number.isSafeInteger(Number(part)))) {
    throw new DumontError('invalid_request', `${field}: one or more instance ids, comma-separated, each a positive integer`, field);
  }
  return parts.map(Number);
}

/** An RFC 3339 time, or a 400 naming `field`. */
export function timeOf(text: string | undefined, field: string): number | undefined {
  if (text === undefined) return undefined;
  const time = parseTimestamp(text);
  if (time === null) throw new DumontError('invalid_request', `${field}: must be an RFC 3339 date-time`, field);
  return time;
}

/** The wire query as the service reads it; range, thresholds > 0 and retention are the service's to check. */
export function replayQueryOf(query: ReplayWireQuery): ReplayQuery {
  return {
    thresholdMinutes: numberList(query.threshold_minutes, 'threshold_minutes', 'one or more numbers of minutes > 0'),
    utilizationPercent: query.utilization_percent,
    warningSeconds: query.warning_seconds,
    regretMinutes: query.regret_minutes,
    from: timeOf(query.from, 'from'),
    to: timeOf(query.to, 'to'),
    instanceIds: query.instance === undefined ? undefined : instanceIdList([query.instance], 'instance'),
  };
}

/** `GET /api/v1/agent/replay`: the real policy replayed over the caller's recorded history, per threshold. */
export function replayRoutes(app: FastifyInstance, replay: ReplayService, auth: Authenticator): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const onRequest = async (request: FastifyRequest) => {
    request.operator = await auth.operator(request);
  };
  r.get('/api/v1/agent/replay', {
    onRequest,
    schema: { tags: ['savings'], querystring: ReplayWireQuery, response: { 200: ReplayResponse } },
    handler: (request) => replay.replay(request.operator!, replayQueryOf(request.query)),
  });
}
