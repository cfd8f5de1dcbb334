import { InstanceIdParams, MetricsHistoryQuery, MetricsHistoryResponse } from '@dumont/protocol';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { HistoryService } from '../fleet/history-service.js';
import type { Authenticator } from './auth.js';

/** `GET /api/v1/agent/instances/{instance_id}/metrics`: an API key's view of an instance's GPU history. */
export function historyRoutes(app: FastifyInstance, history: HistoryService, auth: Authenticator): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const onRequest = async (request: FastifyRequest) => {
    request.operator = await auth.operator(request);
  };
  r.get('/api/v1/agent/instances/:instance_id/metrics', {
    onRequest,
    schema: { tags: ['instances'], params: InstanceIdParams, querystring: MetricsHistoryQuery, response: { 200: MetricsHistoryResponse } },
    handler: (request) => history.metrics(request.operator!, request.params.instance_id, request.query),
  });
}
