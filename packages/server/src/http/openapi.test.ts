import { DumontError, ERRORS, type ErrorCode } from '@dumont/protocol';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Type } from '@sinclair/typebox';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite-store.js';
import { TestServer } from '../test-support/test-server.js';
import { documentErrorsAndAuth } from './docs-routes.js';
import { installErrorHandling } from './error-handler.js';
import { validatorCompiler } from './validation.js';

/**
 * The routes deliberately left out of the document (`schema.hide`), none of them JSON API: the probe,
 * the document and its page, the Prometheus scrape, the agent's download files. A new route outside
 * this list must be documented; one that should not be must be named here, on purpose.
 */
const UNDOCUMENTED = /^\/($|(healthz|openapi\.json|docs|metrics|agent\/[^/]+|ui\/[^/]+)(\/|$))/;
/** Documented routes that take no credential: logging in is how one gets one. */
const PUBLIC_ROUTES = new Set(['POST /api/v1/session']);
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/**
 * Every (method, path) the server routes, read from Fastify's own route tree. `commonPrefix: false`
 * prints one node per registered path segment run; a child's path is its parent's plus its own text.
 */
function registeredRoutes(tree: string): { method: string; path: string }[] {
  const routes: { method: string; path: string }[] = [];
  const pathAtDepth: string[] = [];
  for (const line of tree.split('\n')) {
    const match = /^((?:[│ ] {3})*)[├└]── (\S+)(?: \(([^)]*)\))?$/.exec(line);
    if (!match) continue;
    const depth = match[1]!.length / 4;
    const path = (depth === 0 ? '' : pathAtDepth[depth - 1]!) + match[2]!;
    pathAtDepth[depth] = path;
    for (const method of match[3]?.split(', ') ?? []) routes.push({ method, path });
  }
  return routes;
}

/** Fastify `:param` in OpenAPI's `{param}` notation. */
const openApiPath = (path: string) => path.replace(/:(\w+)/g, '{$1}');

describe('the OpenAPI document', () => {
  let t: TestServer;
  let doc: any;
  beforeAll(async () => {
    t = await new TestServer(() => SqliteStore.open(':memory:')).start();
    const res = await t.request('GET', '/openapi.json', { token: null });
    expect(res.status).toBe(200);
    doc = res.json;
  });
  afterAll(() => t?.close());

  it('is a valid OpenAPI document for an independent validator', async () => {
    const result = await new Validator().validate(doc);
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);
  });

  it('describes every route the server registers, with its errors and its authentication', () => {
    const routes = registeredRoutes(t.server.app.printRoutes({ commonPrefix: false })).filter(
      (r) => r.method !== 'HEAD' && r.method !== 'OPTIONS' && !UNDOCUMENTED.test(r.path),
    );
    // The tree parser found the routes (a format change must fail here, not pass on an empty list).
    expect(routes).toContainEqual({ method: 'POST', path: '/api/v1/agent/status' });
    expect(routes).toContainEqual({ method: 'PATCH', path: '/api/v1/agent/instances/:instance_id' });

    const missing: string[] = [];
    for (const { method, path } of routes) {
      const operation = doc.paths[openApiPath(path)]?.[method.toLowerCase()];
      const where = `${method} ${path}`;
      if (!operation) {
        missing.push(`${where}: not in the document`);
        continue;
      }
      const statuses = Object.keys(operation.responses ?? {});
      if (!statuses.some((s) => /^4\d\d$/.test(s))) missing.push(`${where}: no 4xx response`);
      if (!statuses.some((s) => /^2\d\d$/.test(s))) missing.push(`${where}: no success response`);
      if (PUBLIC_ROUTES.has(where)) {
        if (operation.security?.length !== 0) missing.push(`${where}: should say it needs no credential`);
      } else if (!(operation.security?.length > 0)) missing.push(`${where}: no security requirement`);
      for (const scheme of (operation.security ?? []).flatMap(Object.keys)) {
        if (!doc.components?.securitySchemes?.[scheme]) missing.push(`${where}: security scheme ${scheme} is not defined`);
      }
    }
    expect(missing).toEqual([]);
    // The heartbeat takes an agent token only; operator routes also take the dashboard's session.
    expect(doc.paths['/api/v1/agent/status'].post.security).toEqual([{ bearer: [] }]);
    expect(doc.paths['/api/v1/agent/instances'].get.security).toEqual([{ bearer: [] }, { session: [] }]);
  });

  it('documents nothing the server does not route, and none of the hidden routes', () => {
    const routed = new Set(registeredRoutes(t.server.app.printRoutes({ commonPrefix: false })).map((r) => `${r.method} ${openApiPath(r.path)}`));
    for (const [path, item] of Object.entries<any>(doc.paths)) {
      expect(UNDOCUMENTED.test(path), path).toBe(false);
      for (const method of Object.keys(item).filter((k) => HTTP_METHODS.includes(k))) {
        expect(routed, `${method} ${path}`).toContain(`${method.toUpperCase()} ${path}`);
      }
    }
  });

  it('gives each error status the `{error, message, field?}` shape with the catalogue codes for it', () => {
    const operation = doc.paths['/api/v1/agent/instances/{instance_id}/wake'].post;
    for (const [code, { status }] of Object.entries(ERRORS)) {
      const schema = operation.responses[String(status)]?.content?.['application/json']?.schema;
      expect(schema, `${status}`).toBeDefined();
      expect(schema.required).toEqual(['error', 'message']);
      expect(Object.keys(schema.properties)).toEqual(['error', 'message', 'field']);
      expect(schema.properties.error.enum).toContain(code);
    }
    expect(doc.paths['/api/v1/agent/instances/{instance_id}/wake'].post.responses['409'].description).toContain('instance_not_hibernated');
    // A status the route declares itself keeps its own schema.
    expect(doc.paths['/api/v1/agent/status'].post.responses['200'].content['application/json'].schema.properties).toHaveProperty('next_heartbeat_in');
  });

  it('an error of a documented route leaves byte for byte as the error handler built it, field included', async () => {
    const res = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 'seven', hostname: 'gpu-7' } });
    expect(res.status).toBe(400);
    expect(Object.keys(res.json)).toEqual(['error', 'message', 'field']);
    expect(res.json.field).toBe('instance_id');
    expect(res.text).toBe(JSON.stringify({ error: res.json.error, message: res.json.message, field: res.json.field }));
  });
});

describe('documenting error responses does not change what is sent', () => {
  // Quotes, a backslash, a control character, non-ASCII and a lone surrogate: every escaping path.
  const awkward = 'bad "value" \\ \u0001 é 🚀 \ud800 </script>';

  async function appWith(documented: boolean) {
    const app = Fastify({ logger: false });
    app.setValidatorCompiler(validatorCompiler);
    installErrorHandling(app);
    if (documented) app.addHook('onRoute', documentErrorsAndAuth);
    app.post('/things/:id', {
      schema: {
        params: Type.Object({ id: Type.Integer() }),
        body: Type.Object({ name: Type.String({ minLength: 1 }) }),
        response: { 200: Type.Object({ ok: Type.Boolean() }) },
      },
      handler: async () => ({ ok: true }),
    });
    app.get('/fail/:code', {
      schema: { response: { 200: Type.Object({ ok: Type.Boolean() }) } },
      handler: async (request) => {
        const { code } = request.params as { code: ErrorCode };
        throw new DumontError(code, `${code}: ${awkward}`, code === 'invalid_request' ? `field ${awkward}` : undefined);
      },
    });
    // A body with a key the documented shape does not list (e.g. a future `retry_after`): still sent.
    app.get('/extra', {
      schema: { tags: ['test'] },
      handler: async (_request, reply) => reply.code(429).send({ error: 'rate_limited', message: awkward, retry_after: 3, field: 'x' }),
    });
    await app.ready();
    return app;
  }

  let plain: Awaited<ReturnType<typeof appWith>>;
  let documented: Awaited<ReturnType<typeof appWith>>;
  beforeAll(async () => {
    [plain, documented] = await Promise.all([appWith(false), appWith(true)]);
  });
  afterAll(async () => {
    await Promise.all([plain?.close(), documented?.close()]);
  });

  const requests: { name: string; method: 'GET' | 'POST'; url: string; payload?: Record<string, unknown> }[] = [
    { name: 'a body that fails validation', method: 'POST', url: '/things/1', payload: { name: '' } },
    { name: 'a path parameter that fails validation', method: 'POST', url: '/things/x', payload: { name: 'a' } },
    ...Object.keys(ERRORS).map((code) => ({ name: `a thrown ${code}`, method: 'GET' as const, url: `/fail/${code}` })),
  ];

  it.each(requests)('$name', async ({ method, url, payload }) => {
    const [before, after] = await Promise.all([plain.inject({ method, url, payload }), documented.inject({ method, url, payload })]);
    expect(before.statusCode).toBeGreaterThanOrEqual(400);
    expect(after.statusCode).toBe(before.statusCode);
    expect(after.rawPayload.equals(before.rawPayload), `${before.payload}\n${after.payload}`).toBe(true);
    expect(after.headers['content-type']).toBe(before.headers['content-type']);
  });

  it('a key the documented shape does not list is still sent (listed keys first, as the handler orders them)', async () => {
    const [before, after] = await Promise.all([plain.inject({ url: '/extra' }), documented.inject({ url: '/extra' })]);
    expect(after.statusCode).toBe(429);
    expect(after.json()).toEqual(before.json());
    expect(after.json()).toHaveProperty('retry_after', 3);
  });

  it('the hook did document those routes (the comparison is not between two plain apps)', async () => {
    const seen: any[] = [];
    const app = Fastify({ logger: false });
    app.addHook('onRoute', documentErrorsAndAuth);
    app.addHook('onRoute', (route) => void seen.push(route.schema));
    app.get('/x', { schema: { response: { 200: Type.Object({}) } } }, async () => ({}));
    app.get('/own', { schema: { security: [], response: { 404: Type.Object({ gone: Type.Boolean() }) } } }, async () => ({}));
    app.get('/hidden', { schema: { hide: true } }, async () => ({}));
    await app.ready();
    await app.close();
    const [x, own, hidden] = seen.filter((_schema, i) => i % 2 === 0); // GET, then its HEAD
    expect(Object.keys(x.response).sort()).toEqual(['200', ...new Set(Object.values(ERRORS).map((e) => String(e.status)))].sort());
    expect(x.security).toEqual([{ bearer: [] }, { session: [] }]);
    expect(own.security).toEqual([]);
    expect(own.response['404'].properties).toHaveProperty('gone');
    expect(Object.keys(hidden)).toEqual(['hide']);
  });
});

describe('/docs', () => {
  let t: TestServer;
  beforeAll(async () => {
    // A limit of one request a minute: the docs must not count against it.
    t = await new TestServer(() => SqliteStore.open(':memory:'), { DUMONT_RATE_LIMIT_PER_MINUTE: '1' }).start();
  });
  afterAll(() => t?.close());

  const referencesIn = (html: string) => [...html.matchAll(/\b(?:src|href)\s*=\s*["']([^"']*)["']/gi)].map((m) => m[1]!);

  it('serves a readable page whose every asset comes from this server, under a strict CSP', async () => {
    const res = await t.request('GET', '/docs', { token: null });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const references = referencesIn(res.text);
    expect(references.length).toBeGreaterThan(3);
    const origin = new URL(t.url).origin;
    for (const reference of references) expect(new URL(reference, `${t.url}/docs`).origin, reference).toBe(origin);

    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toMatch(/https?:|\*|unsafe-eval|upgrade-insecure-requests/);
  });

  it('serves the script bundle the page references, and the spec it loads is the OpenAPI document', async () => {
    const page = await t.request('GET', '/docs', { token: null });
    const bundle = referencesIn(page.text).find((r) => /swagger-ui-bundle\.js$/.test(r));
    expect(bundle).toBeDefined();
    const asset = await fetch(new URL(bundle!, `${t.url}/docs`));
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toMatch(/javascript/);
    expect((await asset.arrayBuffer()).byteLength).toBeGreaterThan(100_000);

    const initializer = await t.request('GET', '/docs/static/swagger-initializer.js', { token: null });
    expect(initializer.status).toBe(200);
    expect(initializer.text).toContain("resolveUrl('./json')");
    // Swagger UI's online validator badge would call validator.swagger.io; null turns it off.
    expect(initializer.text).toContain('validatorUrl: null');
    const [spec, openapi] = await Promise.all([t.request('GET', '/docs/json', { token: null }), t.request('GET', '/openapi.json', { token: null })]);
    expect(spec.json).toEqual(openapi.json);
  });

  it('is neither rate limited nor authenticated, while the API is', async () => {
    for (let i = 0; i < 4; i++) {
      for (const path of ['/docs', '/docs/static/swagger-ui.css', '/docs/json']) {
        expect((await t.request('GET', path, { token: null })).status, path).toBe(200);
      }
    }
    const statuses = [];
    for (let i = 0; i < 2; i++) statuses.push((await t.request('GET', '/api/v1/agent/instances')).status);
    expect(statuses).toEqual([200, 429]);
  });
});
