import { HeartbeatRequest, HeartbeatResponse } from '@dumont/protocol';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { HeartbeatService } from '../fleet/heartbeat-service.js';
import { bearerHash } from './auth.js';

declare module 'fastify' {
  interface FastifyRequest {
    credentialHash?: string;
  }
}

/** The agent's one endpoint: the seed's heartbeat. */
export function agentRoutes(app: FastifyInstance, heartbeats: HeartbeatService): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/api/v1/agent/status', {
    onRequest: async (request) => {
      request.credentialHash = bearerHash(request);
    },
    schema: { tags: ['agent'], body: HeartbeatRequest, response: { 200: HeartbeatResponse } },
    handler: (request) => heartbeats.ingest(request.credentialHash!, request.body),
  });
}
