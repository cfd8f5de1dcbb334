import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HttpRecorder, refusingUrl } from '../test-support/http-recorder.js';
import type { ProviderAction, ProviderOutcome } from './provider.js';
import { newWebhookSecret, parseWebhookSecret } from './standard-webhooks.js';
import { createWebhookProvider } from './webhook.js';

const secret = newWebhookSecret();
const key = parseWebhookSecret(secret, 'TEST_SECRET');
const secretPart = secret.slice('whsec_'.length);

const stop: ProviderAction = {
  id: 'outbox-17',
  kind: 'stop',
  instanceId: 42,
  providerInstanceId: 'vast-123.4_5',
  hostname: 'gpu-001',
  owner: 'alice',
  reason: 'idle for 30 min',
};

function expectNoSecret(outcome: ProviderOutcome): void {
  const text = JSON.stringify(outcome);
  expect(text).not.toContain(secretPart);
  expect(text).not.toContain(key.toString('hex'));
}

describe('webhook provider against a real HTTP endpoint', () => {
  let recorder: HttpRecorder;
  beforeAll(async () => {
    recorder = await HttpRecorder.start();
  });
  afterAll(() => recorder.close());
  beforeEach(() => {
    recorder.requests.length = 0;
    recorder.reply({ status: 204 });
  });

  it('is named webhook', () => {
    expect(createWebhookProvider({ url: recorder.url, secret: key }).name).toBe('webhook');
  });

  it('POSTs a Standard Webhooks payload that the standardwebhooks library verifies', async () => {
    const provider = createWebhookProvider({ url: `${recorder.url}/hooks/dumont?team=ml`, secret: key });
    expect(await provider.execute(stop, 5_000)).toEqual({ ok: true });
    const [request] = await recorder.waitFor(1);
    expect(request.method).toBe('POST');
    expect(request.path).toBe('/hooks/dumont?team=ml');
    expect(request.headers['content-type']).toBe('application/json');
    expect(request.headers['webhook-id']).toBe('outbox-17');
    const verified = new Webhook(secret).verify(request.body, request.headers);
    expect(verified).toEqual(JSON.parse(request.body));
    expect(request.body).not.toContain(secretPart);
  });

  it('sends exactly the documented fields', async () => {
    const at = Date.parse('2026-03-01T12:00:00.000Z');
    const provider = createWebhookProvider({ url: recorder.url, secret: key, now: () => at });
    await provider.execute(stop, 5_000);
    await provider.execute({ ...stop, id: 'outbox-18', kind: 'start', hostname: null, reason: 'operator wake' }, 5_000);
    const [stopped, started] = await recorder.waitFor(2);
    expect(JSON.parse(stopped.body)).toStrictEqual({
      type: 'instance.stop',
      timestamp: '2026-03-01T12:00:00.000Z',
      data: { instance_id: 42, provider_instance_id: 'vast-123.4_5', hostname: 'gpu-001', owner: 'alice', reason: 'idle for 30 min' },
    });
    expect(JSON.parse(started.body)).toStrictEqual({
      type: 'instance.start',
      timestamp: '2026-03-01T12:00:00.000Z',
      data: { instance_id: 42, provider_instance_id: 'vast-123.4_5', hostname: null, owner: 'alice', reason: 'operator wake' },
    });
    expect(stopped.headers['webhook-timestamp']).toBe(String(at / 1000));
  });

  it('keeps the webhook-id across retries and signs each attempt with its own time', async () => {
    let clock = Date.now() - 60_000;
    const provider = createWebhookProvider({ url: recorder.url, secret: key, now: () => clock });
    recorder.replyOnce({ status: 503, body: 'busy' });
    expect(await provider.execute(stop, 5_000)).toMatchObject({ ok: false, retryable: true });
    clock += 30_000;
    expect(await provider.execute(stop, 5_000)).toEqual({ ok: true });
    const [first, second] = await recorder.waitFor(2);
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(Number(second.headers['webhook-timestamp']) - Number(first.headers['webhook-timestamp'])).toBe(30);
    for (const request of [first, second]) expect(() => new Webhook(secret).verify(request.body, request.headers)).not.toThrow();
  });

  it('ignores whatever a 2xx says', async () => {
    recorder.replyOnce({ status: 200, headers: { 'content-type': 'application/json' }, body: '{"success": false}' });
    recorder.replyOnce({ status: 202, body: 'not json' });
    const provider = createWebhookProvider({ url: recorder.url, secret: key });
    expect(await provider.execute(stop, 5_000)).toEqual({ ok: true });
    expect(await provider.execute(stop, 5_000)).toEqual({ ok: true });
  });

  it('gives up on a 4xx', async () => {
    recorder.replyOnce({ status: 401, body: 'bad signature' });
    const outcome = await createWebhookProvider({ url: recorder.url, secret: key }).execute(stop, 5_000);
    expect(outcome).toEqual({ ok: false, retryable: false, message: 'HTTP 401: bad signature' });
    expectNoSecret(outcome);
  });

  it('retries a 5xx', async () => {
    recorder.replyOnce({ status: 502, body: 'bad gateway' });
    const outcome = await createWebhookProvider({ url: recorder.url, secret: key }).execute(stop, 5_000);
    expect(outcome).toEqual({ ok: false, retryable: true, message: 'HTTP 502: bad gateway' });
    expectNoSecret(outcome);
  });

  it('honours a 429 Retry-After', async () => {
    recorder.replyOnce({ status: 429, headers: { 'retry-after': '120' }, body: 'slow down' });
    const outcome = await createWebhookProvider({ url: recorder.url, secret: key }).execute(stop, 5_000);
    expect(outcome).toEqual({ ok: false, retryable: true, message: 'HTTP 429: slow down', retryAfterMs: 120_000 });
  });

  it('retries a hang, answering within about the timeout', async () => {
    recorder.replyOnce({ hang: true });
    const started = Date.now();
    const outcome = await createWebhookProvider({ url: recorder.url, secret: key }).execute(stop, 300);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(outcome).toMatchObject({ ok: false, retryable: true });
    expectNoSecret(outcome);
  });

  it('retries a dropped connection', async () => {
    recorder.replyOnce({ destroy: true });
    const outcome = await createWebhookProvider({ url: recorder.url, secret: key }).execute(stop, 5_000);
    expect(outcome).toMatchObject({ ok: false, retryable: true });
    expectNoSecret(outcome);
  });

  it('retries a refused connection', async () => {
    const outcome = await createWebhookProvider({ url: await refusingUrl(), secret: key }).execute(stop, 5_000);
    expect(outcome).toMatchObject({ ok: false, retryable: true });
    expect((outcome as { message: string }).message).toMatch(/ECONNREFUSED/);
    expectNoSecret(outcome);
  });

  it('refuses a URL that is not http(s) at construction, without echoing it', () => {
    expect(() => createWebhookProvider({ url: 'ftp://user:token123@example.com/x', secret: key })).toThrow(/http:\/\/ or https:\/\//);
    expect(() => createWebhookProvider({ url: 'not a url token123', secret: key })).toThrow(/^(?!.*token123).*not a URL/);
  });
});
