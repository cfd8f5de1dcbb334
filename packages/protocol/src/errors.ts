import { Type, type Static } from '@sinclair/typebox';

/**
 * Every error the API can answer, declared once. `code` is the stable `error` field of the JSON body;
 * docs/ERRORS.md lists the same codes and a test keeps the two in step.
 */
export const ERRORS = {
  invalid_request: { status: 400, title: 'A field of the request is missing or invalid; `field` names it.' },
  unauthorized: { status: 401, title: 'No valid `Authorization: Bearer` key or agent token, or no live dashboard session.' },
  forbidden: { status: 403, title: 'The credential is valid but may not do this (e.g. an agent token for another instance, or a change made with the session cookie without its `X-CSRF-Token`).' },
  not_found: { status: 404, title: 'No such route, or no such instance visible to this key.' },
  instance_hibernating: { status: 409, title: 'The instance is hibernating or hibernated; the action does not apply.' },
  instance_not_hibernated: { status: 409, title: 'Only a hibernated instance can be woken; this one is in another status.' },
  dry_run: { status: 409, title: 'Dry-run is on for this instance: nothing is hibernated, the policy records `would_hibernate` instead.' },
  payload_too_large: { status: 413, title: 'The request body is over the limit (64 KiB).' },
  unsupported_media_type: { status: 415, title: 'Bodies must be `application/json`.' },
  idempotency_key_reused: { status: 422, title: 'The `Idempotency-Key` was already used for a different request on this instance.' },
  rate_limited: { status: 429, title: 'Too many requests for this credential, or failed authentications from this address; wait `Retry-After` seconds.' },
  internal_error: { status: 500, title: 'A server fault; nothing was changed by the failed request.' },
  unavailable: { status: 503, title: 'The store is unreachable.' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERRORS;

export const ErrorBody = Type.Object({
  error: Type.String(),
  message: Type.String(),
  /** The offending field, dotted (e.g. `gpu_metrics.utilization_percent`), for `invalid_request`. */
  field: Type.Optional(Type.String()),
});
export type ErrorBody = Static<typeof ErrorBody>;

/** Thrown by services; routes turn it into `{error, message, field?}` with the catalogue's status. */
export class DumontError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'DumontError';
    this.status = ERRORS[code].status;
  }
}
