import Fastify, { LogController, type FastifyInstance } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { HeartbeatService, type HibernationProvider } from '../fleet/heartbeat-service.js';
import { OperatorService } from '../fleet/operator-service.js';
import type { FleetStore } from '../store/store.js';
import { agentRoutes } from './agent-routes.js';
import { Authenticator, credentialHashOf } from './auth.js';
import { installErrorHandling } from './error-handler.js';
import { instanceRoutes } from './instance-routes.js';
import { validatorCompiler } from './validation.js';

export const BODY_LIMIT_BYTES = 64 * 1024;

export interface AppDependencies {
  store: FleetStore;
  clock: Clock;
  config: ServerConfig;
  provider?: HibernationProvider;
  /** false for tests that want quiet output; otherwise pino JSON logs. */
  logger?: boolean;
}

/** Assembles the HTTP server: routes → services → policy → store. No I/O happens until `listen`. */
export async function buildApp(deps: AppDependencies): Promise<FastifyInstance> {
  const { store, clock, config } = deps;
  const app = Fastify({
    bodyLimit: BODY_LIMIT_BYTES,
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
    try {
      done(null, JSON.parse(text));
    } catch {
      const error = Object.assign(new Error('body: not valid JSON'), { statusCode: 400 });
      done(error, undefined);
    }
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'Dumont Agent Status API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  if (config.rateLimitPerMinute > 0) {
    await app.register(rateLimit, {
      max: config.rateLimitPerMinute,
      timeWindow: 60_000,
      // Per credential, keyed by its hash so the limiter's memory holds no secret.
      keyGenerator: (request) => credentialHashOf(request) ?? `ip:${request.ip}`,
      errorResponseBuilder: (_request, context) => ({
        statusCode: 429,
        error: 'rate_limited',
        message: `rate limit of ${context.max} requests per minute exceeded; retry in ${Math.ceil(context.ttl / 1000)} s`,
      }),
    });
  }

  const heartbeats = new HeartbeatService(store, clock, config, deps.provider);
  const operators = new OperatorService(store, clock, config);
  const auth = new Authenticator(store, config.adminKey);

  app.get('/healthz', { config: { rateLimit: false }, schema: { hide: true } }, async (_request, reply) => {
    try {
      await store.ping();
      return { status: 'ok' };
    } catch {
      return reply.code(503).send({ error: 'unavailable', message: 'the store is unreachable' });
    }
  });
  app.get('/openapi.json', { config: { rateLimit: false }, schema: { hide: true } }, async () => app.swagger());

  agentRoutes(app, heartbeats);
  instanceRoutes(app, operators, auth);
  return app;
}
