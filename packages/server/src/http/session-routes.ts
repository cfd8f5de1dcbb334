import { ERRORS, ErrorBody, LoginRequest, SessionView } from '@dumont/protocol';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { checkSameOrigin, SESSION_COOKIE, type Authenticator, type OpenedSession } from './auth.js';

/** Set beside the session cookie and cleared with it; holds nothing but `1`. */
export const SIGNED_IN_HINT_COOKIE = 'dumont_signed_in';

export interface SessionRouteOptions {
  /** The server's public URL: an https one marks the cookie Secure. */
  publicUrl: string;
  /** How long a session lasts: the cookie's Max-Age (the server's own expiry is what counts). */
  ttlSeconds: number;
}

const FORM = 'application/x-www-form-urlencoded';

/**
 * Dashboard login: an API key in, an HttpOnly SameSite=Strict session cookie out. The key is checked
 * once and never kept by the browser; failed logins count against the address like any failed
 * authentication (auth.ts), so the form cannot be used to guess keys.
 */
export async function sessionRoutes(app: FastifyInstance, auth: Authenticator, options: SessionRouteOptions): Promise<void> {
  const secureCookie = (request: FastifyRequest) => request.protocol === 'https' || options.publicUrl.startsWith('https:');
  const cookie = (request: FastifyRequest, value: string, maxAgeSeconds: number) => [
    `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secureCookie(request) ? '; Secure' : ''}`,
    // No secret, readable by the page: it asks for its session only when it may have one, so a first
    // visit is not answered with a 401.
    `${SIGNED_IN_HINT_COOKIE}=${value === '' ? '' : '1'}; Path=/; SameSite=Strict; Max-Age=${maxAgeSeconds}${secureCookie(request) ? '; Secure' : ''}`,
  ];
  const view = (session: Omit<OpenedSession, 'token'>): SessionView => ({
    owner: session.owner,
    admin: session.admin,
    csrf_token: session.csrfToken,
    expires_at: new Date(session.expiresAt).toISOString(),
  });
  const tags = ['session'];
  const errors = (...codes: (keyof typeof ERRORS)[]) => Object.fromEntries(codes.map((c) => [ERRORS[c].status, ErrorBody]));

  // Its own scope: only the login route reads url-encoded bodies (a plain HTML form works without script).
  await app.register(async (scope) => {
    scope.addContentTypeParser(FORM, { parseAs: 'string' }, (_request, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(typeof body === 'string' ? body : body.toString('utf8'))));
    });
    scope.withTypeProvider<TypeBoxTypeProvider>().post('/api/v1/session', {
      schema: {
        tags,
        summary: 'Log in to the dashboard with an API key',
        description: `JSON, or the login form's \`${FORM}\` post (answered with a 303 to \`/\`). Sets the HttpOnly, SameSite=Strict \`${SESSION_COOKIE}\` cookie.`,
        security: [],
        body: LoginRequest,
        response: { 200: SessionView, 303: Type.Null(), ...errors('invalid_request', 'unauthorized', 'forbidden', 'rate_limited') },
      },
      handler: async (request, reply: FastifyReply) => {
        checkSameOrigin(request);
        const session = await auth.openSession(request.body.api_key);
        reply.header('set-cookie', cookie(request, session.token, Math.ceil(options.ttlSeconds))).header('cache-control', 'no-store');
        if (request.headers['content-type']?.startsWith(FORM)) return reply.code(303).header('location', '/').send(null);
        return view(session);
      },
    });
  });

  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  r.get('/api/v1/session', {
    schema: {
      tags,
      summary: 'The dashboard session of this cookie, with its CSRF token',
      security: [{ session: [] }],
      response: { 200: SessionView, ...errors('unauthorized') },
    },
    handler: async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return view(await auth.currentSession(request));
    },
  });
  r.delete('/api/v1/session', {
    schema: {
      tags,
      summary: 'Log out: ends the session (needs X-CSRF-Token)',
      security: [{ session: [] }],
      response: { 204: Type.Null(), ...errors('unauthorized', 'forbidden') },
    },
    handler: async (request, reply) => {
      await auth.closeSession(request);
      return reply.code(204).header('set-cookie', cookie(request, '', 0)).send(null);
    },
  });
}
