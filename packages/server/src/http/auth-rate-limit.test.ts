import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { ManualClock } from '../clock.js';
import { loadConfig } from '../config.js';
import type { FleetStore } from '../store/store.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer, T0 } from '../test-support/test-server.js';
import { AuthFailureGuard, clientAddressKey } from './auth.js';

const randomToken = () => `dmk_${randomBytes(24).toString('base64url')}`;
const busy = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 85, memory_used_mb: 75, memory_total_mb: 100 }, process_count: 3 });

/** The real store, with every method call it receives written down (nothing is answered for it). */
function observed(store: FleetStore): { store: FleetStore; calls: string[] } {
  const calls: string[] = [];
  const proxy = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(String(property));
        return value.apply(target, args);
      };
    },
  });
  return { store: proxy, calls };
}

/** A GET from another loopback address than 127.0.0.1 (the server sees another client). */
function getFrom(localAddress: string, url: string, path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, { localAddress, headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`rate limits run before authentication (${backend.name})`, () => {
    let t: TestServer | undefined;
    let dispose: (() => Promise<void>) | undefined;
    afterEach(async () => {
      await t?.close();
      await dispose?.();
      t = undefined;
    });

    async function start(env: Record<string, string>) {
      const db = await backend.open();
      dispose = db.dispose;
      const seen = observed(db.store);
      t = await new TestServer(async () => seen.store, env).start();
      return { t, calls: seen.calls };
    }

    it('N failed authentications from one address: then 429 with Retry-After, and the store is no longer consulted', async () => {
      const { t, calls } = await start({ DUMONT_AUTH_FAILURES_PER_MINUTE: '10' });
      for (let i = 0; i < 10; i++) {
        const res = await t.request('GET', '/api/v1/agent/instances', { token: randomToken() });
        expect(res.status, `bad token ${i + 1}`).toBe(401);
      }
      expect(calls.filter((c) => c === 'findApiKey')).toHaveLength(10);

      const before = calls.length;
      const attempts = [
        () => t.request('GET', '/api/v1/agent/instances', { token: randomToken() }),
        () => t.request('GET', '/api/v1/agent/instances/1', { token: null }),
        () => t.request('POST', '/api/v1/agent/instances', { token: randomToken(), body: { instance_id: 1 } }),
        () => t.beat(randomToken(), busy(1)),
      ];
      for (let i = 0; i < 20; i++) {
        const res = await attempts[i % attempts.length]!();
        expect(res.status, `attempt ${i}`).toBe(429);
        expect(res.json).toEqual({ error: 'rate_limited', message: expect.stringMatching(/failed authentications/) });
        const retryAfter = Number(res.headers.get('retry-after'));
        expect(retryAfter).toBeGreaterThan(0);
        expect(retryAfter).toBeLessThanOrEqual(60);
      }
      expect(calls.slice(before)).toEqual([]);
      // Health checks are not authenticated and stay open.
      expect((await t.request('GET', '/healthz', { token: null })).status).toBe(200);

      if (backend.name === 'sqlite') {
        // With the store closed, a request that reached it would fail (500); this one is refused first.
        await t.server.store.close();
        expect((await t.request('GET', '/api/v1/agent/instances', { token: randomToken() })).status).toBe(429);
      }
    });

    it('credentials that authenticated before keep working from a blocked address; the block ends after a minute', async () => {
      const { t, calls } = await start({ DUMONT_AUTH_FAILURES_PER_MINUTE: '5' });
      const token = await t.register(1);
      expect((await t.beat(token, busy(1))).status).toBe(200);
      for (let i = 0; i < 5; i++) expect((await t.beat(randomToken(), busy(1))).status).toBe(401);
      const freshKey = await createApiKey(t.server.store, 'carol', false, T0);

      const before = calls.length;
      expect((await t.request('GET', '/api/v1/agent/instances', { token: randomToken() })).status).toBe(429);
      expect(calls.length).toBe(before);
      // Agents and operators already known from this address (one NAT, many machines) are not locked out.
      expect((await t.beat(token, busy(1))).status).toBe(200);
      expect((await t.request('GET', '/api/v1/agent/instances')).status).toBe(200);
      // A credential never seen from here waits like everyone else.
      expect((await t.request('GET', '/api/v1/agent/instances', { token: freshKey })).status).toBe(429);

      t.clock.advance(60_000);
      expect((await t.request('GET', '/api/v1/agent/instances', { token: freshKey })).status).toBe(200);
      expect((await t.request('GET', '/api/v1/agent/instances', { token: randomToken() })).status).toBe(401);
    });

    it('counts 401s and token 403s, not what an authenticated key may not do; other addresses are not affected', async () => {
      const { t } = await start({ DUMONT_AUTH_FAILURES_PER_MINUTE: '3' });
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      const one = await t.register(1);
      await t.register(2);
      // 403 to an authenticated operator (naming another owner): not a failed authentication.
      for (let i = 0; i < 5; i++) {
        const res = await t.request('POST', '/api/v1/agent/instances', { token: aliceKey, body: { instance_id: 9, owner: 'bob' } });
        expect(res.status).toBe(403);
      }
      // An agent token of another instance, an agent token on an operator route: failures.
      expect((await t.beat(one, busy(2))).status).toBe(403);
      expect((await t.request('GET', '/api/v1/agent/instances', { token: one })).status).toBe(403);
      expect((await t.request('GET', '/api/v1/agent/instances', { token: randomToken() })).status).toBe(401);
      expect((await t.request('GET', '/api/v1/agent/instances', { token: randomToken() })).status).toBe(429);
      // A failure also forgets the credential: the token that failed no longer passes the block.
      expect((await t.beat(one, busy(1))).status).toBe(429);

      const port = new URL(t.url).port;
      expect(await getFrom('127.0.0.2', `http://127.0.0.1:${port}`, '/api/v1/agent/instances', randomToken())).toBe(401);
    });

    it('DUMONT_AUTH_FAILURES_PER_MINUTE=0 turns the address limit off', async () => {
      const { t } = await start({ DUMONT_AUTH_FAILURES_PER_MINUTE: '0' });
      for (let i = 0; i < 150; i++) {
        expect((await t.request('GET', '/api/v1/agent/instances', { token: randomToken() })).status).toBe(401);
      }
    });

    it('the per-credential limit runs before authentication: a rejected credential is counted, and refused unread', async () => {
      const { t, calls } = await start({ DUMONT_RATE_LIMIT_PER_MINUTE: '5', DUMONT_AUTH_FAILURES_PER_MINUTE: '0' });
      const token = randomToken();
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await t.request('GET', '/api/v1/agent/instances', { token })).status);
      const before = calls.length;
      for (let i = 0; i < 2; i++) statuses.push((await t.request('GET', '/api/v1/agent/instances', { token })).status);
      expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
      expect(calls.length).toBe(before);
      const limited = await t.request('GET', '/api/v1/agent/instances', { token });
      expect(limited.json.error).toBe('rate_limited');
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
      expect((await t.request('GET', '/api/v1/agent/instances')).status).toBe(200);
    });
  });
}

describe('AuthFailureGuard memory and addresses', () => {
  const requestFrom = (ip: string, token?: string) =>
    ({ ip, headers: token ? { authorization: `Bearer ${token}` } : {} }) as unknown as FastifyRequest;

  it('tracks at most maxAddresses, however many addresses fail', () => {
    const clock = new ManualClock(T0);
    const guard = new AuthFailureGuard(3, clock, 1000);
    for (let i = 0; i < 20_000; i++) {
      guard.observe(requestFrom(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`), 401);
      if (i % 100 === 0) clock.advance(1);
    }
    expect(guard.trackedAddresses).toBeLessThanOrEqual(1000);
    // The newest are kept: the last address still blocks after three failures.
    const last = requestFrom('10.0.78.31');
    guard.observe(last, 401);
    guard.observe(last, 401);
    expect(guard.retryAfterSeconds(requestFrom('10.0.78.31'))).toBeGreaterThan(0);
    // Expired windows go first.
    clock.advance(60_000);
    guard.observe(requestFrom('192.0.2.1'), 401);
    expect(guard.trackedAddresses).toBe(1);
  });

  it('counts an IPv6 client by its /64 and an IPv4-mapped address as IPv4', () => {
    expect(clientAddressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(clientAddressKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(clientAddressKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(clientAddressKey('2001:0db8:0001:0002::9')).toBe('2001:db8:1:2::/64');
    expect(clientAddressKey('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64');
    expect(clientAddressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(clientAddressKey('::1')).toBe('0:0:0:0::/64');
    expect(clientAddressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    const guard = new AuthFailureGuard(2, new ManualClock(T0));
    guard.observe(requestFrom('2001:db8:1:2::a'), 401);
    guard.observe(requestFrom('2001:db8:1:2::b'), 401);
    expect(guard.retryAfterSeconds(requestFrom('2001:db8:1:2::c'))).toBe(60);
    expect(guard.retryAfterSeconds(requestFrom('2001:db8:1:3::c'))).toBe(0);
  });

  it('DUMONT_AUTH_FAILURES_PER_MINUTE: 120 by default, an integer ≥ 0', () => {
    expect(loadConfig({}).authFailuresPerMinute).toBe(120);
    expect(loadConfig({ DUMONT_AUTH_FAILURES_PER_MINUTE: '0' }).authFailuresPerMinute).toBe(0);
    for (const bad of ['-1', '2.5', 'many']) {
      expect(() => loadConfig({ DUMONT_AUTH_FAILURES_PER_MINUTE: bad })).toThrow(/DUMONT_AUTH_FAILURES_PER_MINUTE/);
    }
  });
});
