import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newWebhookSecret, parseWebhookSecret } from '../providers/standard-webhooks.js';
import { HttpRecorder } from '../test-support/http-recorder.js';
import { NOTIFICATION_TYPES, Notifier, slackText, type Notification, type NotificationType } from './notifier.js';

const secret = newWebhookSecret();
const key = parseWebhookSecret(secret, 'TEST_SECRET');
const publicUrl = 'https://dumont.example.com/';

const scheduled: Notification = {
  type: 'hibernation.scheduled',
  at: Date.parse('2026-03-01T13:55:00.000Z'),
  instanceId: 42,
  hostname: 'gpu-001',
  owner: 'alice',
  providerInstanceId: 'vast-123',
  reason: 'GPU idle',
  data: { scheduled_at: '2026-03-01T14:05:00.000Z', idle_seconds: 1800, threshold_minutes: 30 },
};

function of(type: NotificationType, data: Record<string, unknown> = {}): Notification {
  return { ...scheduled, type, reason: 'the reason', data };
}

describe('notifier against a real HTTP endpoint', () => {
  let recorder: HttpRecorder;
  beforeAll(async () => {
    recorder = await HttpRecorder.start();
  });
  afterAll(() => recorder.close());
  beforeEach(() => {
    recorder.requests.length = 0;
    recorder.reply({ status: 200, body: 'ok' });
  });

  it('standard: POSTs the Standard Webhooks payload, signed and verified by the library', async () => {
    const notifier = new Notifier({ url: `${recorder.url}/notify`, secret: key, format: 'standard', publicUrl });
    expect(await notifier.send('outbox-7', scheduled, 5_000)).toEqual({ ok: true });
    const [request] = await recorder.waitFor(1);
    expect(request.method).toBe('POST');
    expect(request.path).toBe('/notify');
    expect(request.headers['content-type']).toBe('application/json');
    expect(request.headers['webhook-id']).toBe('outbox-7');
    expect(new Webhook(secret).verify(request.body, request.headers)).toEqual(JSON.parse(request.body));
    expect(JSON.parse(request.body)).toStrictEqual({
      type: 'hibernation.scheduled',
      timestamp: '2026-03-01T13:55:00.000Z',
      data: {
        instance_id: 42,
        hostname: 'gpu-001',
        owner: 'alice',
        provider_instance_id: 'vast-123',
        reason: 'GPU idle',
        scheduled_at: '2026-03-01T14:05:00.000Z',
        idle_seconds: 1800,
        threshold_minutes: 30,
      },
    });
    expect(request.body).not.toContain(secret.slice('whsec_'.length));
  });

  it('standard: an extra never overrides who the event is about', async () => {
    const notifier = new Notifier({ url: recorder.url, secret: null, format: 'standard', publicUrl });
    await notifier.send('outbox-8', { ...scheduled, data: { instance_id: 7, owner: 'mallory', message: 'x' } }, 5_000);
    const [request] = await recorder.waitFor(1);
    expect(JSON.parse(request.body).data).toMatchObject({ instance_id: 42, owner: 'alice', message: 'x' });
  });

  it('slack: POSTs {"text"}, signed when a secret is set', async () => {
    const notifier = new Notifier({ url: recorder.url, secret: key, format: 'slack', publicUrl });
    expect(await notifier.send('outbox-9', scheduled, 5_000)).toEqual({ ok: true });
    const [request] = await recorder.waitFor(1);
    expect(JSON.parse(request.body)).toStrictEqual({ text: slackText(scheduled, publicUrl) });
    expect(request.headers['webhook-id']).toBe('outbox-9');
    expect(() => new Webhook(secret).verify(request.body, request.headers)).not.toThrow();
  });

  it.each(['standard', 'slack'] as const)('%s: sends no signature headers without a secret', async (format) => {
    const notifier = new Notifier({ url: recorder.url, secret: null, format, publicUrl });
    expect(await notifier.send('outbox-10', scheduled, 5_000)).toEqual({ ok: true });
    const [request] = await recorder.waitFor(1);
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) expect(request.headers).not.toHaveProperty(name);
  });

  it('keeps the webhook-id across retries and re-signs each attempt', async () => {
    let clock = Date.now() - 60_000;
    const notifier = new Notifier({ url: recorder.url, secret: key, format: 'standard', publicUrl, now: () => clock });
    recorder.replyOnce({ status: 500, body: 'oops' });
    expect(await notifier.send('outbox-11', scheduled, 5_000)).toEqual({ ok: false, retryable: true, message: 'HTTP 500: oops' });
    clock += 10_000;
    expect(await notifier.send('outbox-11', scheduled, 5_000)).toEqual({ ok: true });
    const [first, second] = await recorder.waitFor(2);
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(Number(second.headers['webhook-timestamp']) - Number(first.headers['webhook-timestamp'])).toBe(10);
    // The payload is the same event: only the signature's time moved.
    expect(second.body).toBe(first.body);
    for (const request of [first, second]) expect(() => new Webhook(secret).verify(request.body, request.headers)).not.toThrow();
  });

  it('classifies failures: 500 retryable, 400 not, 429 waits, a hang retryable', async () => {
    const notifier = new Notifier({ url: recorder.url, secret: key, format: 'slack', publicUrl });
    recorder.replyOnce({ status: 500, body: 'server error' });
    expect(await notifier.send('a', scheduled, 5_000)).toEqual({ ok: false, retryable: true, message: 'HTTP 500: server error' });
    recorder.replyOnce({ status: 400, body: 'invalid_payload' });
    expect(await notifier.send('b', scheduled, 5_000)).toEqual({ ok: false, retryable: false, message: 'HTTP 400: invalid_payload' });
    recorder.replyOnce({ status: 429, headers: { 'retry-after': '5' } });
    expect(await notifier.send('c', scheduled, 5_000)).toEqual({ ok: false, retryable: true, message: 'HTTP 429', retryAfterMs: 5_000 });
    recorder.replyOnce({ hang: true });
    expect(await notifier.send('d', scheduled, 300)).toMatchObject({ ok: false, retryable: true });
  });

  it('refuses a URL that is not http(s) at construction', () => {
    expect(() => new Notifier({ url: 'mailto:ops@example.com', secret: null, format: 'slack', publicUrl })).toThrow(/notification url/);
  });
});

describe('slackText', () => {
  it('scheduled: hostname, HH:MM UTC, idle minutes and the keep-alive command', () => {
    const text = slackText(scheduled, publicUrl);
    expect(text).toContain('gpu-001 (instance 42)');
    expect(text).toContain('14:05 UTC');
    expect(text).toContain('idle 30 min');
    expect(text).toContain('https://dumont.example.com/api/v1/agent/instances/42/keep-alive?minutes=60');
    expect(text).toContain('curl -X POST -H "Authorization: Bearer $DUMONT_API_KEY"');
  });

  it('scheduled: idle from threshold_minutes, hostname falls back to the instance id', () => {
    const text = slackText({ ...scheduled, hostname: null, data: { scheduled_at: '2026-03-01T09:07:59Z', threshold_minutes: 45 } }, 'http://h:8080');
    expect(text).toMatch(/^instance 42 will hibernate at 09:07 UTC, idle 45 min;/);
    expect(text).toContain("'http://h:8080/api/v1/agent/instances/42/keep-alive?minutes=60'");
  });

  it('scheduled: still a sentence without the extras', () => {
    expect(slackText({ ...scheduled, data: {} }, publicUrl)).toMatch(/^gpu-001 \(instance 42\) will hibernate soon; keep it with:/);
  });

  it('gives every type a non-empty sentence of its own', () => {
    const texts = NOTIFICATION_TYPES.map((type) => slackText(of(type), publicUrl));
    for (const text of texts) expect(text.trim().length).toBeGreaterThan(10);
    expect(new Set(texts).size).toBe(NOTIFICATION_TYPES.length);
    for (const text of texts) expect(text).toContain('gpu-001');
  });

  it('says the reason where it matters', () => {
    for (const type of ['hibernation.cancelled', 'hibernation.failed', 'instance.offline', 'wake.failed'] as const) {
      expect(slackText(of(type), publicUrl)).toContain('the reason');
    }
  });

  it('says the time an instance hibernated', () => {
    expect(slackText(of('instance.hibernated'), publicUrl)).toContain('13:55 UTC');
  });

  it('provider.failed names the provider, the action and its message', () => {
    const text = slackText(of('provider.failed', { provider: 'vast', action: 'stop', message: 'HTTP 401: bad key' }), publicUrl);
    expect(text).toBe('The vast provider failed to stop gpu-001 (instance 42): HTTP 401: bad key');
  });

  it('escapes Slack markup in what agents and providers report', () => {
    const text = slackText({ ...of('hibernation.failed'), hostname: '<!channel>', reason: 'a & b <https://evil|click>' }, publicUrl);
    expect(text).not.toMatch(/[<>]/);
    expect(text).toContain('&lt;!channel&gt;');
    expect(text).toContain('a &amp; b');
  });
});
