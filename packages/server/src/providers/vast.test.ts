import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HttpRecorder, refusingUrl } from '../test-support/http-recorder.js';
import type { ProviderAction, ProviderOutcome } from './provider.js';
import { createVastProvider } from './vast.js';

/** What Vast.ai's own CLI sent for `stop instance 1234` / `start instance 1234` (see SOURCES.md there). */
interface CliRequest {
  method: string;
  path: string;
  headers: { authorization: string; 'content-type': string };
  body: unknown;
}

function fixture(name: string): CliRequest {
  return JSON.parse(readFileSync(new URL(`../../test-fixtures/vast-cli/${name}.json`, import.meta.url), 'utf8')) as CliRequest;
}

// The key and instance id the fixtures were captured with.
const apiKey = 'test-key-123';

const stop: ProviderAction = {
  id: 'outbox-9',
  kind: 'stop',
  instanceId: 42,
  providerInstanceId: '1234',
  hostname: 'gpu-001',
  owner: 'alice',
  reason: 'idle for 30 min',
};
const start: ProviderAction = { ...stop, id: 'outbox-10', kind: 'start', reason: 'operator wake' };

function expectNoKey(outcome: ProviderOutcome): void {
  expect(JSON.stringify(outcome)).not.toContain(apiKey);
}

function expectFailure(outcome: ProviderOutcome, retryable: boolean): Extract<ProviderOutcome, { ok: false }> {
  expectNoKey(outcome);
  expect(outcome.ok).toBe(false);
  if (outcome.ok) throw new Error('unreachable');
  expect(outcome.retryable).toBe(retryable);
  return outcome;
}

describe('vast provider against a real HTTP server', () => {
  let recorder: HttpRecorder;
  beforeAll(async () => {
    recorder = await HttpRecorder.start();
  });
  afterAll(() => recorder.close());
  beforeEach(() => {
    recorder.requests.length = 0;
    recorder.reply({ status: 200, headers: { 'content-type': 'application/json' }, body: '{"success": true}' });
  });

  it('is named vast', () => {
    expect(createVastProvider({ apiUrl: recorder.url, apiKey }).name).toBe('vast');
  });

  it.each([
    ['stop', stop, 'stop-instance'],
    ['start', start, 'start-instance'],
  ] as const)('sends %s exactly as the official CLI does', async (_kind, action, name) => {
    const expected = fixture(name);
    const provider = createVastProvider({ apiUrl: recorder.url, apiKey });
    expect(await provider.execute(action, 5_000)).toEqual({ ok: true });
    const [request] = await recorder.waitFor(1);
    expect(request.method).toBe(expected.method);
    expect(request.path).toBe(expected.path);
    expect(request.headers.authorization).toBe(expected.headers.authorization);
    expect(request.headers['content-type']).toBe(expected.headers['content-type']);
    expect(JSON.parse(request.body)).toEqual(expected.body);
  });

  it('strips trailing slashes from the API URL', async () => {
    const provider = createVastProvider({ apiUrl: `${recorder.url}//`, apiKey });
    expect(await provider.execute(stop, 5_000)).toEqual({ ok: true });
    const [request] = await recorder.waitFor(1);
    expect(request.path).toBe(fixture('stop-instance').path);
  });

  it.each([
    ['an empty body', ''],
    ['success true', '{"success": true}'],
    ['other JSON', '{"instance": {"id": 1234}}'],
    ['JSON that is not an object', '[1, 2]'],
    ['text that is not JSON', 'ok'],
  ])('takes a 2xx with %s as done', async (_what, body) => {
    recorder.reply({ status: 200, body });
    expect(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(stop, 5_000)).toEqual({ ok: true });
  });

  it('gives up on a 200 whose JSON says success: false, with its msg', async () => {
    recorder.reply({ status: 200, body: '{"success": false, "msg": "Instance 1234 not found."}' });
    const outcome = expectFailure(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(stop, 5_000), false);
    expect(outcome.message).toContain('Instance 1234 not found.');
  });

  it('uses error when success: false comes without msg', async () => {
    recorder.reply({ status: 200, body: '{"success": false, "error": "invalid_request"}' });
    const outcome = expectFailure(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(start, 5_000), false);
    expect(outcome.message).toContain('invalid_request');
  });

  it.each([401, 404])('gives up on HTTP %i', async (status) => {
    recorder.reply({ status, body: '{"success": false, "msg": "nope"}' });
    const outcome = expectFailure(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(stop, 5_000), false);
    expect(outcome.message).toContain(String(status));
  });

  it('retries on HTTP 500', async () => {
    recorder.reply({ status: 500, body: 'internal error' });
    const outcome = expectFailure(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(stop, 5_000), true);
    expect(outcome.message).toContain('500');
  });

  it('retries on 429 after the Retry-After it was given', async () => {
    recorder.reply({ status: 429, headers: { 'retry-after': '7' }, body: '' });
    const outcome = expectFailure(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(stop, 5_000), true);
    expect(outcome.retryAfterMs).toBe(7000);
  });

  it('retries when the server hangs, without outliving the timeout by much', async () => {
    recorder.reply({ hang: true });
    const began = Date.now();
    expectFailure(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(stop, 300), true);
    expect(Date.now() - began).toBeLessThan(2_000);
    expect(recorder.requests).toHaveLength(1);
  });

  it('retries when the connection is dropped', async () => {
    recorder.reply({ destroy: true });
    expectFailure(await createVastProvider({ apiUrl: recorder.url, apiKey }).execute(stop, 5_000), true);
  });

  it('retries when the connection is refused', async () => {
    expectFailure(await createVastProvider({ apiUrl: await refusingUrl(), apiKey }).execute(stop, 5_000), true);
  });

  it.each(['../x', 'a/b', '.', '..', '', 'a b', '%2e%2e', '1234?x=1', '1234#', 'é', 'x'.repeat(129)])(
    'refuses provider instance id %j before any request',
    async (providerInstanceId) => {
      const provider = createVastProvider({ apiUrl: recorder.url, apiKey });
      expectFailure(await provider.execute({ ...stop, providerInstanceId }, 5_000), false);
      expect(recorder.requests).toHaveLength(0);
    },
  );

  it('accepts every id the upstream pattern allows, as one path segment', async () => {
    const provider = createVastProvider({ apiUrl: recorder.url, apiKey });
    expect(await provider.execute({ ...stop, providerInstanceId: 'vast-1.2_3...' }, 5_000)).toEqual({ ok: true });
    const [request] = await recorder.waitFor(1);
    expect(request.path).toBe('/api/v0/instances/vast-1.2_3.../');
  });

  it('never puts the key in a message, even when the server echoes it back', async () => {
    const echo = (status: number) => (request: { headers: Record<string, string> }) => ({
      status,
      body: JSON.stringify({ success: false, msg: `bad key ${request.headers.authorization}`, error: request.headers.authorization }),
    });
    const provider = createVastProvider({ apiUrl: recorder.url, apiKey });
    for (const status of [200, 401, 429, 500]) {
      recorder.reply(echo(status));
      const outcome = expectFailure(await provider.execute(stop, 5_000), status !== 200 && status !== 401);
      expect(outcome.message).toContain('[redacted]');
    }
  });

  it('refuses an API URL that is not http(s) at creation, without echoing it', () => {
    expect(() => createVastProvider({ apiUrl: 'console.vast.ai', apiKey })).toThrow(/not a URL/);
    expect(() => createVastProvider({ apiUrl: 'ftp://user:pw@console.vast.ai', apiKey })).toThrow(/^(?!.*pw).*http/);
  });
});
