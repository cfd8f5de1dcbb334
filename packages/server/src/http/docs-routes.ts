import { ERRORS, type ErrorCode } from '@dumont/protocol';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, RouteOptions } from 'fastify';

export const DOCS_PREFIX = '/docs';

/**
 * The same policy as swagger-ui's `staticCSP: true`, less what a self-hosted server must not need: no
 * `https:` or validator.swagger.io origins (every asset is ours), and no `upgrade-insecure-requests`,
 * which would turn the page's own assets into https requests on a plain-HTTP deployment.
 */
const DOCS_CSP = [
  "default-src 'self'",
  "base-uri 'self'",
  "connect-src 'self'",
  "font-src 'self' data:",
  "form-action 'self'",
  "frame-ancestors 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "script-src 'self'",
  "script-src-attr 'none'",
  "style-src 'self'",
].join('; ');

/** The body every error leaves with (http/error-handler.ts), described once per status. */
function errorResponseFor(codes: ErrorCode[]) {
  return {
    description: codes.map((code) => `\`${code}\`: ${ERRORS[code].title}`).join(' '),
    type: 'object',
    required: ['error', 'message'],
    properties: {
      error: { type: 'string', enum: codes },
      message: { type: 'string' },
      field: { type: 'string', description: 'The offending field, dotted (e.g. `gpu_metrics.utilization_percent`).' },
    },
    // Fastify serializes replies by this schema: a key it did not list would otherwise be dropped silently.
    additionalProperties: true,
  } as const;
}

const codesByStatus = new Map<number, ErrorCode[]>();
for (const [code, { status }] of Object.entries(ERRORS)) {
  codesByStatus.set(status, [...(codesByStatus.get(status) ?? []), code as ErrorCode]);
}
/** One response per status of the catalogue: any route may answer any of them (auth, limits, input, faults). */
export const ERROR_RESPONSES: Record<number, ReturnType<typeof errorResponseFor>> = Object.fromEntries(
  [...codesByStatus].map(([status, codes]) => [status, errorResponseFor(codes)]),
);

/** API key or agent token, both as `Authorization: Bearer` (the scheme registered with @fastify/swagger). */
const BEARER = [{ bearer: [] }];
/** Operator routes also take the dashboard's session cookie (with its CSRF token for changes). */
const BEARER_OR_SESSION = [{ bearer: [] }, { session: [] }];
const AGENT_ONLY_ROUTES = new Set(['/api/v1/agent/status']);

/**
 * Documents the errors and the authentication of every route added after it, without touching the
 * route files: each visible route gets the catalogue's error responses (for the statuses it does not
 * declare itself) and a bearer-or-session security requirement (unless it declares its own, e.g. `security: []`).
 */
export function documentErrorsAndAuth(routeOptions: RouteOptions): void {
  const schema = routeOptions.schema ?? {};
  if ((schema as { hide?: boolean }).hide) return;
  // A fresh object: schemas may share parts (tags, response maps) with other routes.
  routeOptions.schema = {
    ...schema,
    security: (schema as { security?: unknown }).security ?? (AGENT_ONLY_ROUTES.has(routeOptions.url) ? BEARER : BEARER_OR_SESSION),
    response: { ...ERROR_RESPONSES, ...(schema.response as object | undefined) },
  } as RouteOptions['schema'];
}

function isDocsRoute(routeOptions: RouteOptions): boolean {
  return routeOptions.url === DOCS_PREFIX || routeOptions.url.startsWith(`${DOCS_PREFIX}/`);
}

/**
 * `/docs`: the OpenAPI document in Swagger UI, every asset served from this server. Call after
 * @fastify/swagger is registered and before any API route is added (the onRoute hooks only see later routes).
 */
export async function docsRoutes(app: FastifyInstance): Promise<void> {
  app.addHook('onRoute', (routeOptions) => {
    // The page and its assets hold no data: no credential, no limit (a browser fetches a dozen files at once).
    if (isDocsRoute(routeOptions)) routeOptions.config = { ...routeOptions.config, rateLimit: false };
  });
  app.addHook('onRoute', documentErrorsAndAuth);
  await app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    staticCSP: DOCS_CSP,
    uiConfig: { deepLinking: true },
    theme: { title: 'Dumont API' },
  });
}
