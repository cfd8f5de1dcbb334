import { PolicyList, PolicyNameParams, PolicySpec, PolicyView } from '@dumont/protocol';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { PolicyService } from '../fleet/policy-service.js';
import type { Authenticator } from './auth.js';

/** `/api/v1/policies`: named hibernation policies; any key reads them, admin keys write them. */
export function policyRoutes(app: FastifyInstance, policies: PolicyService, auth: Authenticator): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const tags = ['policies'];
  const onRequest = async (request: FastifyRequest) => {
    request.operator = await auth.operator(request);
  };

  r.get('/api/v1/policies', {
    onRequest,
    schema: { tags, response: { 200: PolicyList } },
    handler: () => policies.list(),
  });

  r.get('/api/v1/policies/:name', {
    onRequest,
    schema: { tags, params: PolicyNameParams, response: { 200: PolicyView } },
    handler: (request) => policies.get(request.params.name),
  });

  r.put('/api/v1/policies/:name', {
    onRequest,
    schema: { tags, params: PolicyNameParams, body: PolicySpec, response: { 200: PolicyView, 201: PolicyView } },
    handler: async (request, reply) => {
      const { policy, created } = await policies.put(request.operator!, request.params.name, request.body);
      // The audit line: policies are few and change rarely, and who changed one matters.
      request.log.info({ policy: policy.name, by: policy.updated_by, created }, created ? 'policy created' : 'policy replaced');
      return reply.code(created ? 201 : 200).send(policy);
    },
  });

  r.delete('/api/v1/policies/:name', {
    onRequest,
    schema: { tags, params: PolicyNameParams, response: { 200: Type.Object({ success: Type.Boolean(), name: Type.String() }) } },
    handler: async (request) => {
      await policies.delete(request.operator!, request.params.name);
      request.log.info({ policy: request.params.name, by: request.operator!.owner }, 'policy deleted');
      return { success: true, name: request.params.name };
    },
  });
}
