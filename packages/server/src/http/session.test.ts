import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { hashSecret } from '../secrets.js';
import { SessionStore } from '../store/sessions.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';
import { csrfTokenOf, SESSION_COOKIE } from './auth.js';

/** The cookie a response set, as a browser would send it back (`name=value`), and its attributes. */
function sessionCookie(headers: Headers): { pair: string; value: string; attributes: string[] } {
  const line = headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`));
  if (!line) throw new Error('no session cookie was set');
  const [pair, ...attributes] = line.split(';').map((p) => p.trim());
  return { pair: pair!, value: pair!.slice(SESSION_COOKIE.length + 1), attributes };
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`dashboard sessions (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    let store: Awaited<ReturnType<typeof backend.open>>['store'];
    let reopen: () => Promise<typeof store>;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      store = db.store;
      reopen = db.reopen;
      t = await new TestServer(async () => db.store, { DUMONT_SESSION_HOURS: '2' }).start();
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    const login = (apiKey: string, headers: Record<string, string> = {}) =>
      t.request('POST', '/api/v1/session', { token: null, body: { api_key: apiKey }, headers });
    const withCookie = (pair: string, headers: Record<string, string> = {}) => ({ token: null, headers: { cookie: pair, ...headers } });

    it('logs in with an API key: an HttpOnly SameSite=Strict cookie that is not the key, and the session answers who it is', async () => {
      const res = await login(t.adminKey);
      expect(res.status).toBe(200);
      const cookie = sessionCookie(res.headers);
      expect(cookie.attributes).toEqual(expect.arrayContaining(['Path=/', 'HttpOnly', 'SameSite=Strict', `Max-Age=${2 * 3600}`]));
      expect(cookie.attributes).not.toContain('Secure'); // plain http on loopback; https public URLs add it
      expect(cookie.value).not.toContain(t.adminKey);
      // Beside it, a hint the page can read (it holds nothing but "1").
      expect(res.headers.getSetCookie()).toContain(`dumont_signed_in=1; Path=/; SameSite=Strict; Max-Age=${2 * 3600}`);
      expect(res.text).not.toContain(t.adminKey);
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(res.json).toEqual({
        owner: 'admin',
        admin: true,
        csrf_token: csrfTokenOf(cookie.value),
        expires_at: new Date(t.clock.now() + 2 * 3_600_000).toISOString(),
      });
      // Only the hash of the session token is stored, never the token or the key.
      const sessions = new SessionStore(store.kysely);
      expect(await sessions.find(hashSecret(cookie.value), t.clock.now())).toMatchObject({ key_hash: hashSecret(t.adminKey), owner: 'admin' });

      const me = await t.request('GET', '/api/v1/session', withCookie(cookie.pair));
      expect(me.status).toBe(200);
      expect(me.json).toEqual(res.json);
      // The cookie alone reads the operator API.
      expect((await t.request('GET', '/api/v1/agent/instances', withCookie(cookie.pair))).status).toBe(200);
    });

    it('refuses a wrong or missing key with a 4xx naming api_key, and sets no cookie', async () => {
      const wrong = await login('dmk_not_a_key');
      expect(wrong.status).toBe(401);
      expect(wrong.json).toMatchObject({ error: 'unauthorized', field: 'api_key' });
      expect(wrong.headers.getSetCookie()).toEqual([]);
      const missing = await t.request('POST', '/api/v1/session', { token: null, body: {} });
      expect(missing.status).toBe(400);
      expect(missing.json).toMatchObject({ error: 'invalid_request', field: 'api_key' });
      const extra = await t.request('POST', '/api/v1/session', { token: null, body: { api_key: t.adminKey, remember: true } });
      expect(extra.status).toBe(400);
      // An agent token is not an API key.
      const token = await t.register(4242);
      expect((await login(token)).status).toBe(401);
      expect(await new SessionStore(store.kysely).count()).toBe(0);
    });

    it('a plain HTML form post logs in and redirects to the dashboard', async () => {
      const res = await fetch(`${t.url}/api/v1/session`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ api_key: t.adminKey }).toString(),
        redirect: 'manual',
      });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/');
      const cookie = sessionCookie(res.headers);
      expect((await t.request('GET', '/api/v1/session', withCookie(cookie.pair))).status).toBe(200);
    });

    it('a change made with the cookie needs the CSRF token; without it nothing changes', async () => {
      const token = await t.register(77);
      await t.beat(token, { gpu_metrics: [{ index: 0, utilization_percent: 0, memory_used_mb: 0, memory_total_mb: 81920 }] });
      const { pair, value } = sessionCookie((await login(t.adminKey)).headers);
      const keepAlive = (headers: Record<string, string>) =>
        t.request('POST', '/api/v1/agent/instances/77/keep-alive?minutes=30', withCookie(pair, headers));

      const none = await keepAlive({});
      expect(none.status).toBe(403);
      expect(none.json).toMatchObject({ error: 'forbidden', field: 'x-csrf-token' });
      const forged = await keepAlive({ 'x-csrf-token': csrfTokenOf('dms_some_other_session') });
      expect(forged.status).toBe(403);
      // The token of the right session, but posted from another site's page.
      const crossSite = await keepAlive({ 'x-csrf-token': csrfTokenOf(value), origin: 'https://evil.example' });
      expect(crossSite.status).toBe(403);
      expect(crossSite.json).toMatchObject({ field: 'origin' });
      expect(await t.eventTypes(77)).not.toContain('keep_alive');

      const ok = await keepAlive({ 'x-csrf-token': csrfTokenOf(value), origin: t.url });
      expect(ok.status).toBe(200);
      expect(await t.eventTypes(77)).toContain('keep_alive');
      // A bearer key needs no CSRF token: no browser sends it on its own.
      expect((await t.request('POST', '/api/v1/agent/instances/77/keep-alive?minutes=30')).status).toBe(200);
    });

    it('an owner’s session sees only its instances, like its key', async () => {
      const aliceKey = await createApiKey(store, 'alice', false, t.clock.now());
      await t.register(1, 'gpu-admin');
      await t.register(2, 'gpu-alice', aliceKey);
      const res = await login(aliceKey);
      expect(res.json).toMatchObject({ owner: 'alice', admin: false });
      const { pair } = sessionCookie(res.headers);
      const list = await t.request('GET', '/api/v1/agent/instances', withCookie(pair));
      expect(list.json.instances.map((i: { hostname: string }) => i.hostname)).toEqual(['gpu-alice']);
      expect((await t.request('GET', '/api/v1/agent/instances/1', withCookie(pair))).status).toBe(404);
      // Registering through the session works as with the key: for oneself, not for another owner.
      const csrf = (await t.request('GET', '/api/v1/session', withCookie(pair))).json.csrf_token;
      const forBob = await t.request('POST', '/api/v1/agent/instances', { ...withCookie(pair, { 'x-csrf-token': csrf }), body: { instance_id: 3, owner: 'bob' } });
      expect(forBob.status).toBe(403);
      expect(forBob.json).toMatchObject({ error: 'forbidden', field: 'owner' });
      const own = await t.request('POST', '/api/v1/agent/instances', { ...withCookie(pair, { 'x-csrf-token': csrf }), body: { instance_id: 3, hostname: 'gpu-alice-2' } });
      expect(own.status).toBe(201);
      expect(own.json.install_command).toContain('--instance-id 3');
      const after = await t.request('GET', '/api/v1/agent/instances', withCookie(pair));
      expect(after.json.instances.map((i: { hostname: string }) => i.hostname)).toEqual(['gpu-alice', 'gpu-alice-2']);
    });

    it('logout ends the session for good (needs the CSRF token), and the cookie is cleared', async () => {
      const { pair, value } = sessionCookie((await login(t.adminKey)).headers);
      expect((await t.request('DELETE', '/api/v1/session', withCookie(pair))).status).toBe(403);
      const out = await t.request('DELETE', '/api/v1/session', withCookie(pair, { 'x-csrf-token': csrfTokenOf(value) }));
      expect(out.status).toBe(204);
      expect(sessionCookie(out.headers)).toMatchObject({ value: '', attributes: expect.arrayContaining(['Max-Age=0', 'HttpOnly']) });
      expect(out.headers.getSetCookie()).toContain('dumont_signed_in=; Path=/; SameSite=Strict; Max-Age=0');
      // Replaying the old cookie gets nothing.
      const after = await t.request('GET', '/api/v1/agent/instances', withCookie(pair));
      expect(after.status).toBe(401);
      expect((await t.request('GET', '/api/v1/session', withCookie(pair))).status).toBe(401);
    });

    it('a session expires with time (injected clock) and is pruned at the next login', async () => {
      const { pair } = sessionCookie((await login(t.adminKey)).headers);
      t.clock.advance(2 * 3_600_000 - 1000);
      expect((await t.request('GET', '/api/v1/agent/instances', withCookie(pair))).status).toBe(200);
      t.clock.advance(1000);
      const expired = await t.request('GET', '/api/v1/agent/instances', withCookie(pair));
      expect(expired.status).toBe(401);
      expect(expired.json).toMatchObject({ error: 'unauthorized', field: 'cookie' });
      await login(t.adminKey);
      expect(await new SessionStore(store.kysely).count()).toBe(1);
    });

    it('a session ends with its key: the server restarted with another admin key refuses the old admin session', async () => {
      const { pair } = sessionCookie((await login(t.adminKey)).headers);
      await t.close();
      const other = new TestServer(reopen, { DUMONT_SESSION_HOURS: '2' });
      t = await other.start();
      expect((await t.request('GET', '/api/v1/agent/instances', withCookie(pair))).status).toBe(401);
      expect((await login(t.adminKey)).status).toBe(200);
    });

    it('a bearer header wins over a cookie: a bad key with a good cookie is refused', async () => {
      const { pair } = sessionCookie((await login(t.adminKey)).headers);
      const res = await t.request('GET', '/api/v1/agent/instances', { token: 'dmk_wrong', headers: { cookie: pair } });
      expect(res.status).toBe(401);
      expect(res.json).toMatchObject({ field: 'authorization' });
    });
  });
}

describe('login abuse', () => {
  it('wrong keys through the login form count as failed authentications: the address is then refused, even with a good key', async () => {
    const [sqlite] = await testBackends();
    const db = await sqlite!.open();
    const t = await new TestServer(async () => db.store, { DUMONT_AUTH_FAILURES_PER_MINUTE: '3' }).start();
    try {
      const login = (apiKey: string, headers: Record<string, string> = {}) =>
        t.request('POST', '/api/v1/session', { token: null, body: { api_key: apiKey }, headers });
      // Another site's page cannot log a visitor's browser in (login CSRF).
      const crossSite = await login(t.adminKey, { origin: 'https://evil.example' });
      expect(crossSite.status).toBe(403);
      expect(crossSite.headers.getSetCookie()).toEqual([]);
      // That refusal counted as a failure too: two more guesses reach the limit of three.
      for (let i = 0; i < 2; i++) expect((await login(`dmk_guess_${i}`)).status).toBe(401);
      const blocked = await login(t.adminKey);
      expect(blocked.status).toBe(429);
      expect(blocked.headers.getSetCookie()).toEqual([]);
      t.clock.advance(61_000);
      expect((await login(t.adminKey)).status).toBe(200);
    } finally {
      await t.close();
      await db.dispose();
    }
  });
});

describe('dashboard page and assets', () => {
  let dir: string;
  let t: TestServer;
  let dispose: () => Promise<void>;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dumont-dashboard-'));
    const [sqlite] = await testBackends();
    const db = await sqlite!.open();
    dispose = db.dispose;
    t = new TestServer(async () => db.store);
  });
  afterEach(async () => {
    await t.close();
    await dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the built page with a strict CSP, its assets gzipped when asked, revalidated by ETag, and 503 before a build', async () => {
    const dist = join(dir, 'dist');
    t.dashboardDir = dist;
    await t.start();
    const missing = await fetch(`${t.url}/`);
    expect(missing.status).toBe(503);
    expect(await missing.json()).toMatchObject({ error: 'unavailable' });

    mkdirSync(dist);
    writeFileSync(join(dist, 'index.html'), '<!doctype html><title>Dumont</title><script type="module" src="/ui/app.js"></script>');
    const js = 'console.log("dashboard");'.repeat(50);
    writeFileSync(join(dist, 'app.js'), js);
    const { gzipSync, gunzipSync } = await import('node:zlib');
    writeFileSync(join(dist, 'app.js.gz'), gzipSync(js));
    const page = await fetch(`${t.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(await page.text()).toContain('/ui/app.js');

    const raw = await import('node:http');
    const get = (headers: Record<string, string>) =>
      new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
        raw.get(`${t.url}/ui/app.js`, { headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
        }).on('error', reject);
      });
    const gz = await get({ 'accept-encoding': 'gzip, deflate' });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(gz.body).toString()).toBe(js);
    const plain = await get({});
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.body.toString()).toBe(js);
    expect(plain.headers['content-type']).toBe('text/javascript; charset=utf-8');
    const again = await get({ 'if-none-match': String(plain.headers.etag) });
    expect(again.status).toBe(304);
    // A rebuild is served at once (new ETag), and so is its new gzip twin.
    writeFileSync(join(dist, 'app.js'), `${js}//v2`);
    const rebuilt = await get({ 'if-none-match': String(plain.headers.etag) });
    expect(rebuilt.status).toBe(200);
    expect(rebuilt.body.toString()).toBe(`${js}//v2`);
    writeFileSync(join(dist, 'app.js.gz'), gzipSync(`${js}//v2`));
    expect(gunzipSync((await get({ 'accept-encoding': 'gzip' })).body).toString()).toBe(`${js}//v2`);
  });
});
