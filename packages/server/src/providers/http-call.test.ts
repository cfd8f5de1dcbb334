import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpRecorder } from '../test-support/http-recorder.js';
import { callHttp, retryAfterMs } from './http-call.js';

describe('how an HTTP answer is classified', () => {
  let recorder: HttpRecorder;
  beforeAll(async () => {
    recorder = await HttpRecorder.start();
  });
  afterAll(() => recorder.close());

  const call = () => callHttp({ method: 'POST', url: `${recorder.url}/x`, headers: {}, body: '{}', timeoutMs: 2000 });

  it('honours Retry-After on a 503 as on a 429, and ignores it on a 4xx', async () => {
    recorder.replyOnce({ status: 503, headers: { 'retry-after': '9' }, body: 'maintenance' });
    expect(await call()).toEqual({ ok: false, retryable: true, message: 'HTTP 503: maintenance', retryAfterMs: 9000 });
    recorder.replyOnce({ status: 429, headers: { 'retry-after': '3' } });
    expect(await call()).toEqual({ ok: false, retryable: true, message: 'HTTP 429', retryAfterMs: 3000 });
    recorder.replyOnce({ status: 500 });
    expect(await call()).toEqual({ ok: false, retryable: true, message: 'HTTP 500' });
    recorder.replyOnce({ status: 404, headers: { 'retry-after': '9' } });
    expect(await call()).toEqual({ ok: false, retryable: false, message: 'HTTP 404' });
  });

  it('does not follow a redirect: a 3xx fails at once', async () => {
    recorder.replyOnce({ status: 302, headers: { location: 'http://127.0.0.1:1/' } });
    expect(await call()).toMatchObject({ ok: false, retryable: false, message: 'HTTP 302' });
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(retryAfterMs('120', 0)).toBe(120_000);
    expect(retryAfterMs('Thu, 01 Jan 1970 00:01:00 GMT', 0)).toBe(60_000);
    expect(retryAfterMs('soon', 0)).toBeNull();
    expect(retryAfterMs(null, 0)).toBeNull();
  });
});
