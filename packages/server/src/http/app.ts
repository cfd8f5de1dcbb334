import { DumontError, ERRORS } from '@dumont/protocol';
import Fastify, { LogController, type FastifyInstance, type FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { HeartbeatService } from '../fleet/heartbeat-service.js';
import type { HistoryRecorder } from '../fleet/history-recorder.js';
import { HistoryService } from '../fleet/history-service.js';
import { HistoryStore } from '../store/history.js';
import { historyRoutes } from './history-routes.js';
import { ReplayService } from '../fleet/replay-service.js';
import { replayRoutes } from './replay-routes.js';
import type { Providers } from '../providers/registry.js';
import { MassSilenceGuard } from '../fleet/mass-silence.js';
import { OperatorService } from '../fleet/operator-service.js';
import type { FleetStore } from '../store/store.js';
import { agentDownloadRoutes } from './agent-download-routes.js';
import { agentRoutes } from './agent-routes.js';
import { AuthFailureGuard, Authenticator, credentialHashOf, SESSION_COOKIE, sessionHashOf } from './auth.js';
import { frameworkErrors, installErrorHandling } from './error-handler.js';
import { docsRoutes } from './docs-routes.js';
import { instanceRoutes } from './instance-routes.js';
import { metricsRoutes } from './metrics-routes.js';
import { dashboardRoutes } from './dashboard-routes.js';
import { sessionRoutes } from './session-routes.js';
import { SessionStore } from '../store/sessions.js';
import { MAX_JSON_DEPTH, nestsDeeperThan, validatorCompiler } from './validation.js';
import { policyRoutes } from './policy-routes.js';
import { PolicyService } from '../fleet/policy-service.js';
import type { PolicyBook } from '../fleet/policy-book.js';
import type { SignalBoard } from '../fleet/signal-board.js';

export const BODY_LIMIT_BYTES = 64 * 1024;

export interface AppDependencies {
  store: FleetStore;
  clock: Clock;
  config: ServerConfig;
  /** The providers this server is configured for (instances may name only these). */
  providers: Providers;
  /** Updated by the sweeper; holds every hibernation while much of the fleet is silent. */
  massSilence?: MassSilenceGuard;
  /** false for tests that want quiet output; otherwise pino JSON logs. */
  logger?: boolean;
  /** Keeps every beat's metrics (server.ts starts and stops it); without one, beats are not kept. */
  history?: HistoryRecorder;
  /** Where the built dashboard is (tests point elsewhere); default: @dumont/dashboard's dist. */
  dashboardDir?: string;
  /** Where the agent's build outputs are (tests point elsewhere); default: @dumont/agent's dist. */
  agentDistDir?: string;
  /** The named policies, loaded (server.ts shares them with the sweeper and the outbox). */
  policies: PolicyBook;
  /** External activity signals' readings (server.ts polls them). */
  signals: SignalBoard;
}

/** Assembles the HTTP server: routes → services → policy → store. No I/O happens until `listen`. */
export async function buildApp(deps: AppDependencies): Promise<FastifyInstance> {
  const { store, clock, config } = deps;
  const app = Fastify({
    bodyLimit: BODY_LIMIT_BYTES,
    frameworkErrors,
    logger:
      deps.logger === false
        ? false
        : { level: config.logLevel, redact: ['req.headers.authorization', 'req.headers.cookie'] },
    // One line per heartbeat would drown the logs at fleet scale; debug turns request lines back on.
    logController: new LogController({ disableRequestLogging: config.logLevel !== 'debug' && config.logLevel !== 'trace' }),
  });
  app.setValidatorCompiler(validatorCompiler);
  installErrorHandling(app);

  // An empty body on a bodiless POST (keep-alive) is fine; the route's schema decides if one is required.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    if (nestsDeeperThan(text, MAX_JSON_DEPTH)) {
      return done(new DumontError('invalid_request', `body: nested deeper than ${MAX_JSON_DEPTH} levels`, 'body'), undefined);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return done(new DumontError('invalid_request', 'body: not valid JSON', 'body'), undefined);
    }
    done(null, parsed);
  });

  await app.register(swagger, {
    openapi: {
      // 3.1: its JSON Schema takes TypeBox's numeric `exclusiveMinimum` (3.0 wants a boolean there).
      openapi: '3.1.0',
      info: { title: 'Dumont Agent Status API', version: '1' },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'An API key, or (POST /api/v1/agent/status only) the agent token returned by registration.' },
          session: {
            type: 'apiKey',
            in: 'cookie',
            name: SESSION_COOKIE,
            description: `The dashboard's session (POST /api/v1/session). Changes made with it also need the session's \`X-CSRF-Token\`.`,
          },
        },
      },
      security: [{ bearer: [] }],
    },
  });
  // Before any route: its onRoute hook documents each later route's errors and auth; /docs is exempt from the limits.
  await docsRoutes(app);

  // Both limits are app-level onRequest hooks, which run before each route's own (authentication):
  // a request over a limit is refused before its credential costs a database lookup.
  const limited = (request: FastifyRequest) => request.routeOptions.config?.rateLimit !== false;
  if (config.authFailuresPerMinute > 0) {
    const failures = new AuthFailureGuard(config.authFailuresPerMinute, clock);
    app.addHook('onRequest', async (request, reply) => {
      if (!limited(request)) return;
      const wait = failures.retryAfterSeconds(request);
      if (wait === 0) return;
      return reply
        .code(ERRORS.rate_limited.status)
        .header('retry-after', wait)
        .type('application/json')
        .send({ error: 'rate_limited', message: `too many failed authentications from this address; retry in ${wait} s` });
    });
    // onSend, not onResponse: the count is updated before the client can see the answer and retry.
    app.addHook('onSend', async (request, reply, payload) => {
      if (limited(request)) failures.observe(request, reply.statusCode);
      return payload;
    });
  }
  if (config.rateLimitPerMinute > 0) {
    await app.register(rateLimit, {
      // Not per route: the plugin would append its hook after the route's authentication.
      global: false,
      max: config.rateLimitPerMinute,
      timeWindow: 60_000,
      // Per credential, keyed by its hash so the limiter's memory holds no secret.
      keyGenerator: (request) => credentialHashOf(request) ?? sessionHashOf(request) ?? `ip:${request.ip}`,
      errorResponseBuilder: (_request, context) => ({
        statusCode: 429,
        error: 'rate_limited',
        message: `rate limit of ${context.max} requests per minute exceeded; retry in ${Math.ceil(context.ttl / 1000)} s`,
      }),
    });
    const perCredential = app.rateLimit();
    app.addHook('onRequest', async function (request, reply) {
      if (limited(request)) await perCredential.call(this, request, reply);
    });
  }

  const massSilence = deps.massSilence ?? new MassSilenceGuard(config);
  const heartbeats = new HeartbeatService(store, clock, config, deps.policies, deps.signals, massSilence, deps.history ?? null);
  const operators = new OperatorService(store, clock, config, deps.providers, deps.policies, deps.signals, massSilence);
  const auth = new Authenticator(store, config.adminKey, {
    store: new SessionStore(store.kysely),
    clock,
    ttlMs: config.sessionHours * 3_600_000,
  });

  app.get('/healthz', { config: { rateLimit: false }, schema: { hide: true } }, async (_request, reply) => {
    try {
      await store.ping();
      return { status: 'ok' };
    } catch {
      return reply.code(503).send({ error: 'unavailable', message: 'the store is unreachable' });
    }
  });
  app.get('/openapi.json', { config: { rateLimit: false }, schema: { hide: true } }, async () => app.swagger());

  // Before the routes: its hooks time every request and count accepted heartbeats.
  await metricsRoutes(app, { store, clock, auth, metricsToken: config.metricsToken });
  agentRoutes(app, heartbeats);
  agentDownloadRoutes(app, { publicUrl: config.publicUrl, publicUrlSet: config.publicUrlSet, distDir: deps.agentDistDir });
  await sessionRoutes(app, auth, { publicUrl: config.publicUrl, ttlSeconds: config.sessionHours * 3600 });
  dashboardRoutes(app, { distDir: deps.dashboardDir });
  instanceRoutes(app, operators, auth, config);
  historyRoutes(app, new HistoryService(store, new HistoryStore(store.kysely, store.dialect), clock, config), auth);
  policyRoutes(app, new PolicyService(store, clock, deps.policies, deps.providers), auth);
  replayRoutes(app, new ReplayService(store, new HistoryStore(store.kysely, store.dialect), clock, config), auth);
  return app;
}
