import { DumontError, ERRORS, type ErrorBody, type ErrorCode } from '@dumont/protocol';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import { describeValidationError, fieldOf } from './validation.js';

const byStatus = new Map<number, ErrorCode>(
  Object.entries(ERRORS)
    .reverse()
    .map(([code, e]) => [e.status, code as ErrorCode]),
);

function send(reply: FastifyReply, code: ErrorCode, message: string, field?: string) {
  const body: ErrorBody = field === undefined ? { error: code, message } : { error: code, message, field };
  return reply.code(ERRORS[code].status).type('application/json').send(body);
}

/**
 * Errors the router raises before any route runs (a path that is not valid percent-encoding, a path
 * parameter over the router's length limit). Fastify answers those with its own body shape unless this
 * is set; the API's clients only know `{error, message, field}`.
 */
export const frameworkErrors: NonNullable<FastifyServerOptions['frameworkErrors']> = (error, _request, reply) => {
  const message =
    error.code === 'FST_ERR_BAD_URL'
      ? 'url: the path is not valid percent-encoding'
      : error.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? 'url: a path parameter is too long'
        : `url: ${error.message}`;
  return send(reply, 'invalid_request', message, 'url');
};

/** Every failure leaves as `{error, message, field?}` with the catalogue's status; input never yields a 5xx. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) =>
    send(reply, 'not_found', `no route ${request.method} ${request.url.split('?')[0]}`),
  );

  app.setErrorHandler((error: FastifyError & { validationContext?: string }, request, reply) => {
    if (error instanceof DumontError) return send(reply, error.code, error.message, error.field);
    if (error.validation) {
      const first = error.validation[0] as Parameters<typeof fieldOf>[0];
      const field = fieldOf(first, error.validationContext);
      return send(reply, 'invalid_request', describeValidationError(first, field), field);
    }
    switch (error.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return send(reply, 'payload_too_large', 'request body is over the 64 KiB limit', 'body');
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return send(reply, 'unsupported_media_type', 'send the body as application/json', 'content-type');
      case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
        return send(reply, 'invalid_request', 'content-length does not match the body', 'body');
    }
    const status = error.statusCode ?? 500;
    if (status === 429) return send(reply, 'rate_limited', error.message || 'too many requests');
    if (status >= 400 && status < 500) {
      const field = error instanceof SyntaxError || /JSON/i.test(error.message) ? 'body' : undefined;
      return send(reply, byStatus.get(status) ?? 'invalid_request', error.message, field);
    }
    request.log.error({ err: error }, 'request failed');
    return send(reply, 'internal_error', 'internal error; nothing was changed');
  });
}
