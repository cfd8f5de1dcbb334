import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { okReply, startStubApi, type StubApi } from '../test-support/stub-api.js';
import { opensslAvailable, selfSignedCert } from '../test-support/tls-cert.js';
import { createHttpSender, readResponse } from './sender.js';
import type { HeartbeatRequest } from '@dumont/protocol';

const body: HeartbeatRequest = { instance_id: 7, hostname: 'h', timestamp: '2024-12-20T15:30:00.000Z' };
let api: StubApi;
beforeAll(async () => {
  api = await startStubApi();
});
afterAll(() => api.close());

const sender = (timeoutMs = 2000, endpoint = `${api.url}/api/v1/agent/status`) =>
  createHttpSender({ endpoint, token: 'agent-token-123456', timeoutMs, userAgent: 'dumont-agent/test', now: () => Date.parse('2024-12-20T15:30:00Z') });

describe('createHttpSender against a loopback server', () => {
  it('POSTs the body as JSON with the bearer token and reads the response', async () => {
    api.reply = () => okReply({ commands: [{ id: 'c1', type: 'hibernate', args: {}, issued_at: '2024-12-20T15:30:00Z' }], hibernate_in_seconds: 0, next_heartbeat_in: 15 });
    const outcome = await sender()(body);
    const req = api.received.at(-1)!;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/api/v1/agent/status');
    expect(req.headers.authorization).toBe('Bearer agent-token-123456');
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.body).toEqual(body);
    expect(outcome).toEqual({
      kind: 'ok',
      response: { success: true, commands: [{ id: 'c1', type: 'hibernate', args: {}, issued_at: '2024-12-20T15:30:00Z' }], hibernate_in_seconds: 0, next_heartbeat_in: 15 },
    });
  });

  it('reads the error catalogue body and Retry-After of a 429', async () => {
    api.reply = () => ({ status: 429, headers: { 'retry-after': '7' }, body: { error: 'rate_limited', message: 'slow down' } });
    expect(await sender()(body)).toEqual({ kind: 'rejected', status: 429, error: 'rate_limited', message: 'slow down', field: null, retryAfterMs: 7000 });
  });

  it('keeps the offending field of a 400', async () => {
    api.reply = () => ({ status: 400, body: { error: 'invalid_request', message: 'must be <= 100', field: 'gpu_metrics.utilization_percent' } });
    expect(await sender()(body)).toMatchObject({ kind: 'rejected', status: 400, field: 'gpu_metrics.utilization_percent', retryAfterMs: null });
  });

  it('survives a proxy’s HTML error page', async () => {
    api.reply = () => ({ status: 502, body: '<html>Bad Gateway</html>' });
    expect(await sender()(body)).toMatchObject({ kind: 'rejected', status: 502, error: null, message: '<html>Bad Gateway</html>' });
  });

  it('gives up on a server that does not answer in time', async () => {
    api.reply = () => ({ ...okReply(), delayMs: 3000 });
    expect(await sender(200)(body)).toEqual({ kind: 'unreachable', message: 'no answer within 0.2 s' });
  });

  it('reports a reset connection and a refused one as unreachable', async () => {
    api.reply = () => ({ status: 200, destroy: true });
    expect((await sender()(body)).kind).toBe('unreachable');
    const refused = await sender(2000, 'http://127.0.0.1:1/api/v1/agent/status')(body);
    expect(refused).toMatchObject({ kind: 'unreachable', message: expect.stringMatching(/ECONNREFUSED/) });
  });
});

describe.skipIf(!opensslAvailable())('over https', () => {
  it('refuses a certificate it cannot verify, as unreachable with the TLS reason', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dumont-tls-'));
    const tls = await startStubApi(() => okReply(), selfSignedCert(dir));
    try {
      const outcome = await sender(2000, `${tls.url}/api/v1/agent/status`)(body);
      expect(outcome).toMatchObject({ kind: 'unreachable', message: expect.stringMatching(/self-signed certificate/) });
      expect(tls.received).toEqual([]);
    } finally {
      await tls.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('readResponse', () => {
  it('refuses a 2xx that is not a heartbeat response', () => {
    expect(readResponse(200, 'ok')).toMatchObject({ kind: 'bad-response' });
    expect(readResponse(200, '{"success":true}')).toMatchObject({ kind: 'bad-response', message: 'next_heartbeat_in is missing or invalid' });
    expect(readResponse(200, '{"next_heartbeat_in":30,"hibernate_in_seconds":"soon"}')).toMatchObject({ kind: 'bad-response' });
    expect(readResponse(200, '{"next_heartbeat_in":30,"commands":{}}')).toMatchObject({ kind: 'bad-response' });
  });

  it('keeps commands it cannot run (so they are reported failed) but drops ones without an id', () => {
    const outcome = readResponse(200, JSON.stringify({ next_heartbeat_in: 30, commands: [{ id: 'a', type: 'teleport' }, { type: 'hibernate' }, { id: 'b' }] }));
    expect(outcome.kind === 'ok' && outcome.response.commands.map((c) => [c.id, c.type])).toEqual([['a', 'teleport'], ['b', 'undefined']]);
  });
});
