import {
  CommandListResponse,
  DumontError,
  CommandView,
  CreateCommandRequest,
  EventListResponse,
  HibernationPolicyPatch,
  InstanceDetail,
  InstanceIdParams,
  InstancePatch,
  SavingsQuery,
  SavingsResponse,
  WakeResponse,
  KeepAliveQuery,
  KeepAliveResponse,
  ListEventsQuery,
  ListInstancesQuery,
  ListInstancesResponse,
  RegisterInstanceRequest,
  RegisterInstanceResponse,
} from '@dumont/protocol';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { OperatorService } from '../fleet/operator-service.js';
import type { ServerConfig } from '../config.js';
import { installCommand } from '../agent-install-script.js';
import { publicUrlOf } from './agent-download-routes.js';
import type { Authenticator } from './auth.js';

const DEFAULT_KEEP_ALIVE_MINUTES = 30;
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,128}$/;

function idempotencyKeyOf(request: FastifyRequest): string | undefined {
  const key = request.headers['idempotency-key'];
  if (key === undefined) return undefined;
  if (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)) {
    throw new DumontError('invalid_request', 'idempotency-key: must be 1 to 128 printable ASCII characters', 'idempotency-key');
  }
  return key;
}

/** Operator endpoints under /api/v1/agent/instances; thin: validate, call the service. */
export function instanceRoutes(app: FastifyInstance, operators: OperatorService, auth: Authenticator, config: ServerConfig): void {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const operator = (request: FastifyRequest) => request.operator!;
  const onRequest = async (request: FastifyRequest) => {
    request.operator = await auth.operator(request);
  };
  const tags = ['instances'];

  r.get('/api/v1/agent/instances', {
    onRequest,
    schema: { tags, querystring: ListInstancesQuery, response: { 200: ListInstancesResponse } },
    handler: (request) => operators.list(operator(request), request.query),
  });

  r.post('/api/v1/agent/instances', {
    onRequest,
    schema: {
      tags,
      body: Type.Composite([RegisterInstanceRequest, Type.Object({ owner: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) })]),
      response: { 201: RegisterInstanceResponse, 200: RegisterInstanceResponse },
    },
    handler: async (request, reply) => {
      const result = await operators.register(operator(request), request.body);
      // The address the operator reached this server by: a GPU host can likely reach it too.
      const install_command = installCommand(publicUrlOf(request, config), result.instance_id);
      return reply.code(result.rotated ? 200 : 201).send({ ...result, install_command });
    },
  });

  r.get('/api/v1/agent/instances/:instance_id', {
    onRequest,
    schema: { tags, params: InstanceIdParams, response: { 200: InstanceDetail } },
    handler: (request) => operators.detail(operator(request), request.params.instance_id),
  });

  r.post('/api/v1/agent/instances/:instance_id/keep-alive', {
    onRequest,
    schema: { tags, params: InstanceIdParams, querystring: KeepAliveQuery, response: { 200: KeepAliveResponse } },
    handler: (request) =>
      operators.keepAlive(operator(request), request.params.instance_id, request.query.minutes ?? DEFAULT_KEEP_ALIVE_MINUTES),
  });

  r.patch('/api/v1/agent/instances/:instance_id/hibernation', {
    onRequest,
    schema: { tags, params: InstanceIdParams, body: HibernationPolicyPatch, response: { 200: InstanceDetail } },
    handler: (request) => operators.patchHibernation(operator(request), request.params.instance_id, request.body),
  });

  r.post('/api/v1/agent/instances/:instance_id/commands', {
    onRequest,
    schema: {
      tags,
      params: InstanceIdParams,
      // Described here for the OpenAPI document; checked in the handler for a clearer message.
      headers: Type.Object({
        'idempotency-key': Type.Optional(
          Type.String({ description: '1 to 128 printable ASCII characters; the same key again for this instance answers the same command (200)' }),
        ),
      }),
      body: CreateCommandRequest,
      response: { 201: CommandView, 200: CommandView },
    },
    handler: async (request, reply) => {
      const key = idempotencyKeyOf(request);
      const { command, replayed } = await operators.createCommand(operator(request), request.params.instance_id, request.body, key);
      if (replayed) reply.header('idempotent-replayed', 'true');
      return reply.code(replayed ? 200 : 201).send(command);
    },
  });

  r.patch('/api/v1/agent/instances/:instance_id', {
    onRequest,
    schema: { tags, params: InstanceIdParams, body: InstancePatch, response: { 200: InstanceDetail } },
    handler: (request) => operators.patchInstance(operator(request), request.params.instance_id, request.body),
  });

  r.post('/api/v1/agent/instances/:instance_id/wake', {
    onRequest,
    schema: { tags, params: InstanceIdParams, response: { 202: WakeResponse } },
    handler: async (request, reply) => reply.code(202).send(await operators.wake(operator(request), request.params.instance_id)),
  });

  r.get('/api/v1/agent/savings', {
    onRequest,
    schema: { tags: ['savings'], querystring: SavingsQuery, response: { 200: SavingsResponse } },
    handler: (request) => operators.savings(operator(request), request.query),
  });

  r.get('/api/v1/agent/instances/:instance_id/commands', {
    onRequest,
    schema: { tags, params: InstanceIdParams, response: { 200: CommandListResponse } },
    handler: (request) => operators.listCommands(operator(request), request.params.instance_id),
  });

  r.get('/api/v1/agent/instances/:instance_id/events', {
    onRequest,
    schema: { tags, params: InstanceIdParams, querystring: ListEventsQuery, response: { 200: EventListResponse } },
    handler: (request) => operators.listEvents(operator(request), request.params.instance_id, request.query),
  });
}
