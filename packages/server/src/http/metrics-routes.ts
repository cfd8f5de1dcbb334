import { DumontError } from '@dumont/protocol';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Clock } from '../clock.js';
import { FleetMetrics } from '../fleet/fleet-metrics.js';
import { hashSecret, sameHash } from '../secrets.js';
import type { FleetStore } from '../store/store.js';
import { bearerHash, type Authenticator } from './auth.js';

export interface MetricsDependencies {
  store: FleetStore;
  clock: Clock;
  auth: Authenticator;
  /** DUMONT_METRICS_TOKEN: a scrape-only credential; admin API keys are accepted too. */
  metricsToken: string | undefined;
}

const HEARTBEAT_ROUTE = '/api/v1/agent/status';
/** Requests that matched no route share one label value, so random paths cannot grow the series. */
const UNMATCHED_ROUTE = 'unmatched';

/**
 * `GET /metrics` for Prometheus, and the hooks that feed its per-process series. Called on the root
 * instance (not through `register`), so its hooks see every route of the app.
 */
export async function metricsRoutes(app: FastifyInstance, deps: MetricsDependencies): Promise<FleetMetrics> {
  const metrics = new FleetMetrics(deps.store, deps.clock);
  const tokenHash = deps.metricsToken ? hashSecret(deps.metricsToken) : null;

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
    metrics.requestDuration.observe({ method: request.method, route, status_code: String(reply.statusCode) }, reply.elapsedTime / 1000);
    if (route === HEARTBEAT_ROUTE && request.method === 'POST' && reply.statusCode === 200) metrics.recordHeartbeat();
  });

  // The metrics token is checked first and in constant time; anything else must be an admin API key.
  const onRequest = async (request: FastifyRequest) => {
    const hash = bearerHash(request);
    if (tokenHash !== null && sameHash(hash, tokenHash)) return;
    request.operator = await deps.auth.operator(request);
    if (!request.operator.admin) {
      throw new DumontError('forbidden', 'metrics cover the whole fleet: use an admin API key or the metrics token', 'authorization');
    }
  };

  app.get('/metrics', { onRequest, schema: { hide: true } }, async (_request, reply) => {
    const body = await metrics.scrape();
    return reply.type(metrics.contentType).header('cache-control', 'no-store').send(body);
  });
  return metrics;
}
