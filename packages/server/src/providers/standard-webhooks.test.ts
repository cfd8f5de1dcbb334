import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { newWebhookSecret, parseWebhookSecret, signedHeaders } from './standard-webhooks.js';

// The reference library is the judge: if it accepts our headers, every receiver's library should.
const secret = newWebhookSecret();
const key = parseWebhookSecret(secret, 'TEST_SECRET');
const body = JSON.stringify({ type: 'instance.stop', data: { instance_id: 42, hostname: 'gpu-001 ünïcode' } });
const nowSeconds = () => Math.floor(Date.now() / 1000);

describe('signedHeaders, checked by the standardwebhooks library', () => {
  it('produces headers the library verifies', () => {
    const headers = signedHeaders(key, 'msg_1', nowSeconds(), body);
    expect(Object.keys(headers).sort()).toEqual(['webhook-id', 'webhook-signature', 'webhook-timestamp']);
    expect(headers['webhook-id']).toBe('msg_1');
    expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
  });

  it('matches the library’s own signature byte for byte', () => {
    const at = nowSeconds();
    expect(signedHeaders(key, 'msg_2', at, body)['webhook-signature']).toBe(new Webhook(secret).sign('msg_2', new Date(at * 1000), body));
  });

  it('signs a fractional timestamp as the whole second receivers read', () => {
    const headers = signedHeaders(key, 'msg_3', Date.now() / 1000, body);
    expect(headers['webhook-timestamp']).toMatch(/^\d+$/);
    expect(() => new Webhook(secret).verify(body, headers)).not.toThrow();
  });

  it('is refused when the body was tampered with', () => {
    const headers = signedHeaders(key, 'msg_4', nowSeconds(), body);
    expect(() => new Webhook(secret).verify(body.replace('42', '43'), headers)).toThrow(/No matching signature/);
  });

  it('is refused when the id was changed', () => {
    const headers = signedHeaders(key, 'msg_5', nowSeconds(), body);
    expect(() => new Webhook(secret).verify(body, { ...headers, 'webhook-id': 'msg_6' })).toThrow(/No matching signature/);
  });

  it('is refused under another secret', () => {
    const headers = signedHeaders(key, 'msg_7', nowSeconds(), body);
    expect(() => new Webhook(newWebhookSecret()).verify(body, headers)).toThrow(/No matching signature/);
  });

  it('is refused as a replay once older than the five-minute tolerance', () => {
    const headers = signedHeaders(key, 'msg_8', nowSeconds() - 6 * 60, body);
    expect(() => new Webhook(secret).verify(body, headers)).toThrow(/too old/);
  });

  it('is still accepted a little within the tolerance', () => {
    const headers = signedHeaders(key, 'msg_9', nowSeconds() - 4 * 60, body);
    expect(() => new Webhook(secret).verify(body, headers)).not.toThrow();
  });
});

describe('newWebhookSecret', () => {
  it('makes distinct whsec_ secrets of 32 bytes that the library and the parser accept', () => {
    const a = newWebhookSecret();
    const b = newWebhookSecret();
    expect(a).not.toBe(b);
    expect(a).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(parseWebhookSecret(a, 'X')).toHaveLength(32);
    expect(() => new Webhook(a)).not.toThrow();
  });
});

describe('parseWebhookSecret', () => {
  it('returns the decoded key', () => {
    const raw = randomBytes(24);
    expect(parseWebhookSecret(`whsec_${raw.toString('base64')}`, 'X').equals(raw)).toBe(true);
  });

  it('accepts what the library accepts for real secrets: 24 to 64 bytes, padded or not', () => {
    for (const bytes of [16, 24, 32, 33, 34, 64]) {
      const raw = randomBytes(bytes);
      for (const encoded of [raw.toString('base64'), raw.toString('base64').replace(/=+$/, '')]) {
        const secretText = `whsec_${encoded}`;
        const parsed = parseWebhookSecret(secretText, 'X');
        expect(parsed.equals(raw)).toBe(true);
        // Same key as the library derives: its signature is ours.
        const at = nowSeconds();
        expect(signedHeaders(parsed, 'id', at, 'x')['webhook-signature']).toBe(new Webhook(secretText).sign('id', new Date(at * 1000), 'x'));
      }
    }
  });

  it('ignores surrounding whitespace, e.g. a newline from a secrets file', () => {
    const raw = randomBytes(32);
    expect(parseWebhookSecret(`  whsec_${raw.toString('base64')}\n`, 'X').equals(raw)).toBe(true);
  });

  const realLooking = `whsec_${randomBytes(32).toString('base64')}`;
  const bad: [string, string, RegExp][] = [
    ['no prefix', realLooking.slice('whsec_'.length), /must be a Standard Webhooks secret/],
    ['another prefix', realLooking.replace('whsec_', 'whsek_'), /must be a Standard Webhooks secret/],
    ['empty', '', /must be a Standard Webhooks secret/],
    ['prefix only', 'whsec_', /not valid base64/],
    ['URL-safe alphabet', `whsec_${randomBytes(32).toString('base64url').replace(/^./, '-')}`, /not valid base64/],
    ['a space inside', `${realLooking.slice(0, 20)} ${realLooking.slice(20)}`, /not valid base64/],
    ['too much padding', `${realLooking.replace(/=+$/, '')}===`, /not valid base64/],
    // 45 characters: one is left over, which decoders drop silently; not what anyone meant to paste.
    ['a stray extra character', `whsec_${randomBytes(33).toString('base64')}A`, /not valid base64/],
    ['padding in the middle', `whsec_AAAA=AAA${realLooking.slice(6)}`, /not valid base64/],
    ['a short key', `whsec_${randomBytes(15).toString('base64')}`, /15-byte key; at least 16/],
    ['a password, not base64', 'whsec_hunter2!correct-horse', /not valid base64/],
  ];

  it.each(bad)('refuses %s, naming the variable and never echoing the secret', (_label, value, why) => {
    let error: Error | undefined;
    try {
      parseWebhookSecret(value, 'DUMONT_WEBHOOK_SECRET');
    } catch (e) {
      error = e as Error;
    }
    expect(error).toBeInstanceOf(Error);
    expect(error!.message).toMatch(why);
    expect(error!.message).toContain('DUMONT_WEBHOOK_SECRET');
    const secretPart = value.trim().replace(/^whsec_/, '');
    if (secretPart.length >= 8) {
      for (const shown of [error!.message, String(error!.stack)]) expect(shown).not.toContain(secretPart.slice(0, 8));
    }
  });
});
