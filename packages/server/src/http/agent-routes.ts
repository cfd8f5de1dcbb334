import { HeartbeatRequest, HeartbeatResponse } from '@dumont/protocol';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { HeartbeatService } from '../fleet/heartbeat-service.js';
import { bearerHash } from './auth.js';

/** The agent's one endpoint: the seed's heartbeat. */
export function agentRoutes(app: FastifyInstance, heartbeats: HeartbeatService): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/api/v1/agent/status', {
    onRequest: async (request) => {
      bearerHash(request);
    },
    schema: { tags: ['agent'], body: HeartbeatRequest, response: { 200: HeartbeatResponse } },
    handler: (request) => heartbeats.ingest(bearerHash(request), request.body),
  });
}
