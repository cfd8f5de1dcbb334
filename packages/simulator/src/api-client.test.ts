import { describe, expect, it } from 'vitest';
import { assertLoopback, retryAfterMs } from './api-client.js';

describe('assertLoopback', () => {
  it('accepts this machine only', () => {
    for (const url of ['http://127.0.0.1:8080', 'http://127.8.9.10', 'http://localhost:1', 'http://[::1]:8080/']) {
      expect(() => assertLoopback(url)).not.toThrow();
    }
    for (const url of ['http://10.0.0.1:8080', 'http://192.168.1.5', 'http://example.com', 'http://128.0.0.1', 'http://[::2]']) {
      expect(() => assertLoopback(url)).toThrow(/must point at this machine/);
    }
    expect(() => assertLoopback('https://127.0.0.1')).toThrow(/http:\/\//);
  });
});

describe('retryAfterMs', () => {
  it('reads delta-seconds and HTTP dates, and nothing else', () => {
    expect(retryAfterMs('7')).toBe(7000);
    expect(retryAfterMs('0.5')).toBe(500);
    const now = Date.parse('2026-03-01T12:00:00Z');
    expect(retryAfterMs('Sun, 01 Mar 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Sun, 01 Mar 2026 11:00:00 GMT', now)).toBe(0);
    expect(retryAfterMs(undefined)).toBeNull();
    expect(retryAfterMs('soon')).toBeNull();
    expect(retryAfterMs(['3', '9'])).toBe(3000);
  });
});
