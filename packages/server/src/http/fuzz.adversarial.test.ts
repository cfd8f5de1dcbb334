import http from 'node:http';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ERRORS } from '@dumont/protocol';
import { createApiKey } from '../admin-key.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { testBackends, type TestBackend } from '../test-support/backends.js';
import { recordFigure, scaled } from '../test-support/reliability.js';
import { TestServer, T0 } from '../test-support/test-server.js';
import { BODY_LIMIT_BYTES } from './app.js';

/**
 * Generated requests over real HTTP (keep-alive sockets, raw bytes) against a real server and store:
 * every endpoint, every class of bad input the issue lists, mixed with valid requests so the write
 * paths run too. Nothing may answer 5xx, drop a connection without an answer, or change a control
 * instance that only ever receives requests that must fail.
 */

const SUITE = 'Fuzz over HTTP';
const REQUESTS = scaled(10_000, 100_000);
// PostgreSQL runs a quarter in `npm test`: it exercises the same validation and the store's own
// failure modes (e.g. text it cannot hold) without doubling the suite's time.
const REQUESTS_POSTGRES = scaled(2_500, 100_000);
const CONCURRENCY = 8;
const CHUNK = 500;

const FUZZ = 4242; // the instance valid credentials act on
const CONTROL = 777; // registered and beaten once; only ever sent requests that must fail
const SINK = 5151; // takes the valid commands that FUZZ's heartbeats would otherwise repeat forever

const ENDPOINTS = ['heartbeat', 'list', 'register', 'detail', 'keepAlive', 'patch', 'createCommand', 'listCommands', 'events', 'healthz', 'openapi', 'junkRoute', 'patchInstance', 'wake', 'savings'] as const;
type Endpoint = (typeof ENDPOINTS)[number];
/** Most classes spoil a body: the endpoints that take one are drawn more often. */
const ENDPOINT_WEIGHTS: Endpoint[] = ENDPOINTS.flatMap((e) => Array<Endpoint>(e === 'heartbeat' ? 4 : ['register', 'patch', 'createCommand', 'keepAlive', 'patchInstance'].includes(e) ? 2 : 1).fill(e));
const CLASSES = ['valid', 'malformed', 'wrongType', 'hugeNumber', 'deep', 'bytes', 'extra', 'duplicate', 'contentType', 'overLimit', 'oddQuery', 'oddId', 'oddMethod'] as const;
type Klass = (typeof CLASSES)[number];
// Mostly the credential the endpoint takes: authentication runs before the body is read, so a request
// refused with 401/403 never reaches the parser or the validator.
const CREDENTIALS = ['proper', 'proper', 'proper', 'proper', 'proper', 'proper', 'admin', 'otherOwner', 'fuzzToken', 'controlToken', 'bogus', 'none', 'malformed'] as const;
type Credential = (typeof CREDENTIALS)[number];
/** Bodies that no endpoint accepts: what CONTROL gets whenever the credential could change it. */
const POISONS = ['malformed', 'deep', 'overLimit', 'contentType', 'wrongType'] as const;
type Poison = (typeof POISONS)[number];

const HUGE_NUMBERS = ['1e309', '-1e309', '1E400', '1e-400', '-0', '123456789012345678901234567890', '9007199254740993', '1.7976931348623157e308', '0.0000000000000000000000001', '4.2e1'];
const ODD_IDS = ['0', '-1', '+42', '9007199254740992', '9007199254740993', '99999999999999999999', '1'.repeat(101), '0x2A', '0xC351', '1e3', '4.2e1', '42.0', '%2042', '42abc', '%ZZ', '%', '%00', '%C3%28', '%FF', 'null', 'NaN', 'Infinity', '042', ''];
const BAD_BYTES = [[0x00], [0xff], [0xfe, 0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0xe2, 0x82], [0x00, 0x00, 0x00, 0x00]];
const CONTENT_TYPES = ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=utf-16', 'application/jsonp', 'APPLICATION/JSON', 'application/json;', 'application/*', 'application/merge-patch+json', 'json', ''];
const QUERY_PIECES = ['limit=', 'limit=0', 'limit=1001', 'limit=0x10', 'limit=1e2', 'limit=%ZZ', 'limit=5&limit=6', 'minutes=', 'minutes=0', 'minutes=1441', 'minutes=0x10', 'minutes=1e3', 'minutes=%2B5', 'minutes=5&minutes=6', 'minutes=%00', 'status=', 'status=sleeping', 'status=active&status=idle', 'status=%C3%28', 'cursor=', 'cursor=garbage', 'cursor=eyJwIjpbIngiXX0', 'cursor=%FF%FE', `cursor=${'A'.repeat(300)}`, '%', '%Z', '%ZZ=%ZZ', '=', '&&', '=&=', 'a[b]=c', 'a[]=1&a[]=2', '__proto__=x', 'constructor=y', 'unknown=1', `x=${'y'.repeat(2000)}`, '+', 'limit', 'minutes'];

interface Plan {
  endpoint: Endpoint;
  klass: Klass;
  credential: Credential;
  target: 'fuzz' | 'control' | 'sink' | 'fresh';
  fresh: number;
  poison: Poison;
  pick: number;
  pick2: number;
  size: number;
  body: Record<string, unknown>;
  extra: unknown;
  query: string[];
}

const int = (min: number, max: number) => fc.integer({ min, max });
const nullable = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: null, freq: 5 });
const metrics = fc.record(
  {
    utilization_percent: nullable(fc.double({ min: 0, max: 100, noNaN: true })),
    memory_used_mb: nullable(int(0, 80_000)),
    memory_total_mb: nullable(int(0, 80_000)),
    temperature_celsius: nullable(int(-20, 110)),
    power_watts: nullable(fc.double({ min: 0, max: 900, noNaN: true })),
  },
  { requiredKeys: [] },
);
const text = (max: number) => fc.string({ maxLength: max });

const heartbeatBody = fc.record(
  {
    hostname: fc.string({ minLength: 1, maxLength: 40 }),
    gpu_metrics: metrics,
    process_count: nullable(int(0, 50)),
    active_users: nullable(int(0, 5)),
    agent_version: nullable(text(10)),
    gpus: fc.array(fc.tuple(int(0, 7), metrics, nullable(text(20))).map(([index, m, name]) => ({ index, name, ...m })), { maxLength: 4 }),
    command_results: fc.array(fc.record({ id: fc.string({ minLength: 1, maxLength: 12 }), status: fc.constantFrom('succeeded', 'failed'), detail: nullable(text(40)) }), { maxLength: 2 }),
    collector_errors: fc.array(fc.record({ collector: fc.string({ minLength: 1, maxLength: 10 }), message: text(60) }), { maxLength: 2 }),
    running_commands: fc.array(fc.string({ minLength: 1, maxLength: 12 }), { maxLength: 2 }),
  },
  { requiredKeys: ['hostname'] },
);
const patchBody = fc.record(
  { enabled: fc.boolean(), threshold_minutes: fc.double({ min: 0.01, max: 10_080, noNaN: true }), ignore_gpu_processes: fc.boolean() },
  { requiredKeys: [] },
);
const commandBody = fc.record(
  { type: fc.constantFrom('snapshot', 'update', 'restart', 'hibernate'), args: fc.dictionary(text(8), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }) },
  { requiredKeys: ['type'] },
);
const registerBody = fc.record({ hostname: fc.string({ minLength: 1, maxLength: 30 }) }, { requiredKeys: [] });
const instancePatchBody = fc.record(
  {
    provider: fc.constantFrom('none', 'vast', 'aws', 'NONE', ''),
    provider_instance_id: fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('C.123', '..', '../admin', 'a/b', 'x'.repeat(129))),
    price_per_hour: fc.oneof(fc.double({ min: -5, max: 20_000, noNaN: true }), fc.constant(0)),
  },
  { requiredKeys: [] },
);
const SAVINGS_QUERIES = ['', '?from=2026-01-01T00:00:00Z', '?from=2026-03-01T00:00:00Z&to=2026-02-01T00:00:00Z', '?to=yesterday', '?from=2026-13-01T00:00:00Z', '?from=&to='];

const plans: fc.Arbitrary<Plan> = fc.record({
  endpoint: fc.constantFrom(...ENDPOINT_WEIGHTS),
  klass: fc.constantFrom(...CLASSES),
  credential: fc.constantFrom(...CREDENTIALS),
  target: fc.constantFrom('fuzz', 'fuzz', 'fuzz', 'control', 'control', 'sink', 'fresh'),
  fresh: int(1, 2 ** 40),
  poison: fc.constantFrom(...POISONS),
  pick: fc.nat(),
  pick2: fc.nat(),
  size: int(33, 9000),
  body: fc.oneof(heartbeatBody, patchBody, commandBody, registerBody, instancePatchBody) as fc.Arbitrary<Record<string, unknown>>,
  // Up to 40 KB of junk, within the body limit: a generated string would stay short at fast-check's sizes.
  extra: fc.oneof(fc.jsonValue({ maxDepth: 3 }), int(0, 40_000).map((n) => 'j'.repeat(n))),
  query: fc.array(fc.constantFrom(...QUERY_PIECES), { maxLength: 4 }),
});

interface Wire {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

interface World {
  adminKey: string;
  otherKey: string;
  fuzzToken: string;
  controlToken: string;
}

const MUTATING: ReadonlySet<Endpoint> = new Set(['heartbeat', 'register', 'keepAlive', 'patch', 'createCommand', 'patchInstance', 'wake']);

/** Turns a generated plan into bytes on the wire. `seq` keeps valid heartbeats newer than the last. */
function build(plan: Plan, seq: number, world: World): Wire {
  const { endpoint, pick, pick2 } = plan;
  const choose = <T>(list: readonly T[], n = pick): T => list[n % list.length]!;
  const idNumber = { fuzz: FUZZ, control: CONTROL, sink: SINK, fresh: plan.fresh }[plan.target];
  let klass: Klass = plan.klass;
  const credential: Exclude<Credential, 'proper'> =
    plan.credential !== 'proper' ? plan.credential : endpoint !== 'heartbeat' ? 'admin' : plan.target === 'control' ? 'controlToken' : 'fuzzToken';
  // CONTROL must come out unchanged: whenever the credential could change it, the request is one that
  // has to fail, whatever the fuzz drew. Reading it, or trying with a credential that cannot, is fine.
  const mayChangeControl =
    MUTATING.has(endpoint) &&
    ((endpoint === 'heartbeat' && credential === 'controlToken') || (endpoint !== 'heartbeat' && plan.target === 'control' && credential === 'admin'));
  if (mayChangeControl) klass = endpoint === 'keepAlive' ? 'oddQuery' : plan.poison;
  // The fuzz instance's commands would be repeated in every one of its heartbeat answers; valid ones
  // mostly go to SINK, which never beats.
  const commandTarget = endpoint === 'createCommand' && plan.target === 'fuzz' && pick % 8 !== 0 ? SINK : idNumber;
  const id = klass === 'oddId' ? choose(ODD_IDS, pick2) : String(endpoint === 'createCommand' ? commandTarget : idNumber);

  const headers: Record<string, string> = {};
  const secret = { admin: world.adminKey, otherOwner: world.otherKey, fuzzToken: world.fuzzToken, controlToken: world.controlToken, bogus: `dmk_${pick.toString(36)}`, none: '', malformed: '' }[credential];
  if (credential === 'malformed') headers.authorization = choose(['Bearer', 'Basic abc', 'Bearer a b', `bearer ${world.adminKey}x`, 'Bearer \t'], pick2);
  else if (secret) headers.authorization = `Bearer ${secret}`;

  if (endpoint === 'createCommand' && pick2 % 3 === 0) {
    headers['idempotency-key'] = choose(['k1', 'k2', 'k3', '', ' ', 'x'.repeat(129), 'tab\there', '%00'], pick2 >> 2);
  }

  let method = 'GET';
  let path = '/';
  let body: Record<string, unknown> | undefined;
  const base = `/api/v1/agent/instances/${id}`;
  switch (endpoint) {
    case 'heartbeat':
      method = 'POST';
      path = '/api/v1/agent/status';
      // instance_id first: the poison `wrongType` spoils the first field.
      body = { instance_id: Number(id) || id, ...plan.body, hostname: plan.body.hostname ?? 'gpu-fuzz', timestamp: new Date(T0 - 120_000 + seq).toISOString() };
      break;
    case 'register':
      method = 'POST';
      path = '/api/v1/agent/instances';
      // Registering FUZZ again would rotate its token and end the valid heartbeats.
      body = { instance_id: plan.target === 'fuzz' && klass !== 'oddId' ? plan.fresh : Number(id) || id, ...(typeof plan.body.hostname === 'string' ? { hostname: plan.body.hostname } : {}) };
      break;
    case 'patch':
      method = 'PATCH';
      path = `${base}/hibernation`;
      body = Object.keys(plan.body).length > 0 && 'enabled' in plan.body ? plan.body : { enabled: pick % 2 === 0 };
      break;
    case 'createCommand':
      method = 'POST';
      path = `${base}/commands`;
      body = typeof plan.body.type === 'string' && ['snapshot', 'update', 'restart', 'hibernate'].includes(plan.body.type) ? plan.body : { type: 'snapshot' };
      break;
    case 'keepAlive':
      method = 'POST';
      path = `${base}/keep-alive?minutes=${1 + (pick % 1440)}`;
      break;
    case 'list':
      path = `/api/v1/agent/instances?limit=${1 + (pick % 1000)}`;
      break;
    case 'detail':
      path = base;
      break;
    case 'listCommands':
      path = `${base}/commands`;
      break;
    case 'events':
      path = `${base}/events?limit=${1 + (pick % 1000)}`;
      break;
    case 'patchInstance':
      method = 'PATCH';
      path = base;
      // `provider` first: no value the poison `wrongType` puts there names a configured provider.
      body = { provider: 'none', ...(['provider', 'provider_instance_id', 'price_per_hour'].some((k) => k in plan.body) ? plan.body : { price_per_hour: pick % 100 }) };
      break;
    case 'wake':
      method = 'POST';
      path = `${base}/wake`;
      break;
    case 'savings':
      path = `/api/v1/agent/savings${choose(SAVINGS_QUERIES, pick2)}`;
      break;
    case 'healthz':
      path = '/healthz';
      break;
    case 'openapi':
      path = '/openapi.json';
      break;
    case 'junkRoute':
      path = choose(['/api/v1/agent', '/api/v1/agent/instances/1/nothing', '/api/v2/agent/status', '//api//v1', '/api/v1/agent/status/', '/%2e%2e/etc', '/api/v1/agent/instances/1/keep-alive/'], pick2);
      break;
  }

  if (klass === 'oddQuery') {
    const pieces = plan.query.length > 0 ? plan.query : [choose(QUERY_PIECES, pick2)];
    // On CONTROL's keep-alive the default (30 minutes) would apply without a bad `minutes`.
    if (mayChangeControl) pieces.push(choose(['minutes=0x10', 'minutes=1e3', 'minutes=', 'minutes=0', 'minutes=5&minutes=6', 'minutes=%2B5'], pick2));
    path = `${path.split('?')[0]}?${pieces.join('&')}`;
  }
  if (klass === 'oddMethod') method = choose(['PUT', 'DELETE', 'OPTIONS', 'PATCH', 'POST', 'GET'], pick2);

  let payload: Buffer | undefined;
  // Bodiless endpoints get a body too when the class is about bodies.
  if (body !== undefined || klass === 'overLimit' || klass === 'contentType') {
    payload = bodyBytes(body ?? {}, klass, plan, mayChangeControl);
    headers['content-type'] = 'application/json';
    if (klass === 'contentType') {
      const type = mayChangeControl ? 'text/plain' : choose(CONTENT_TYPES, pick2);
      if (type === '') delete headers['content-type'];
      else headers['content-type'] = type;
    }
  }
  return { method, path, headers, body: payload };
}

/** The JSON text of a valid body, spoiled the way the class says; raw bytes for the byte classes. */
function bodyBytes(body: Record<string, unknown>, klass: Klass, plan: Plan, poisoned: boolean): Buffer {
  const { pick, pick2 } = plan;
  const keys = Object.keys(body);
  const key = keys.length > 0 ? keys[pick % keys.length]! : 'x';
  // Stands for a value that JSON.stringify cannot write (raw number text, deep nesting) until replaced.
  const placeholder = '"__fuzz_placeholder__"';
  const withValue = (raw: string) => JSON.stringify({ ...body, [key]: '__fuzz_placeholder__' }).replace(placeholder, raw);
  const textOf = JSON.stringify(body);
  switch (klass) {
    case 'malformed': {
      // A proper prefix of an object's text is never JSON. A stray character usually breaks it too, but
      // not always (`\` before `n` in a string is an escape), so a poison is always a prefix.
      const cut = 1 + (pick % Math.max(1, textOf.length - 1));
      if (poisoned || pick2 % 2 === 0) return Buffer.from(textOf.slice(0, cut));
      const stray = ['{', '}', '[', ']', '"', ',', ':', '\\', "'", 'NaN', 'undefined', '\n}'][pick2 % 12]!;
      return Buffer.from(`${textOf.slice(0, cut)}${stray}${textOf.slice(cut)}`);
    }
    case 'wrongType': {
      // None of these is a valid instance_id, `enabled`, command `type` or `provider`, the first field of each
      // body: a poison spoils that one, so it is always a 400.
      const wrong = ['"85"', '{"x":1}', '[]', '{}', '-1', '0', '1.5', '"2026-13-01T00:00:00Z"', '[{"index":"0"}]', '"yes"'][pick2 % 10]!;
      const spoilt = poisoned ? keys[0] : key;
      return Buffer.from(spoilt === undefined ? '[]' : JSON.stringify({ ...body, [spoilt]: '__fuzz_placeholder__' }).replace(placeholder, wrong));
    }
    case 'hugeNumber':
      return Buffer.from(withValue(HUGE_NUMBERS[pick2 % HUGE_NUMBERS.length]!));
    case 'deep': {
      const levels = plan.size;
      const open = pick2 % 2 === 0 ? '['.repeat(levels) : '{"a":'.repeat(levels);
      const close = pick2 % 2 === 0 ? ']'.repeat(levels) : '}'.repeat(levels);
      const inner = pick2 % 2 === 0 ? '' : '1';
      return Buffer.from(withValue(`${open}${inner}${close}`));
    }
    case 'bytes': {
      if (pick2 % 3 === 0) return Buffer.from(withValue('"nul\\u0000here"'));
      const raw = Buffer.from(textOf);
      const at = pick % (raw.length + 1);
      return Buffer.concat([raw.subarray(0, at), Buffer.from(BAD_BYTES[pick2 % BAD_BYTES.length]!), raw.subarray(at)]);
    }
    case 'extra': {
      const where = pick2 % 3;
      if (where === 0) return Buffer.from(JSON.stringify({ ...body, [`unknown_${pick % 7}`]: plan.extra }));
      if (where === 1) return Buffer.from(JSON.stringify({ ...body, gpu_metrics: { utilization_percent: 1, junk: plan.extra } }));
      return Buffer.from(JSON.stringify({ ...body, gpus: [{ index: 0, junk: plan.extra }] }));
    }
    case 'duplicate': {
      // `{"a":1,"a":2}`: JSON.parse keeps the last; the text is sent as is.
      const dup = `"${key}":${JSON.stringify(plan.extra)}`;
      return Buffer.from(pick2 % 2 === 0 ? textOf.replace(/^\{/, `{${dup}${keys.length > 0 ? ',' : ''}`) : textOf.replace(/\}$/, `${keys.length > 0 ? ',' : ''}${dup}}`));
    }
    case 'overLimit': {
      const pad = BODY_LIMIT_BYTES + 1 + (pick % 8192);
      return Buffer.from(`{"hostname":"${'x'.repeat(pad)}"}`);
    }
    default:
      return Buffer.from(textOf);
  }
}

interface Answer {
  status: number;
  text: string;
}

/** One request on a keep-alive agent; `reset` when the connection failed before a whole answer came. */
function send(base: URL, agent: http.Agent, wire: Wire): Promise<Answer | { reset: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (value: Answer | { reset: string }) => {
      if (!settled) resolve(value);
      settled = true;
    };
    const request = http.request(
      { host: base.hostname, port: base.port, method: wire.method, path: wire.path, headers: wire.headers, agent },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => finish({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        response.on('error', (error) => finish({ reset: error.message }));
      },
    );
    request.on('error', (error) => finish({ reset: (error as NodeJS.ErrnoException).code ?? error.message }));
    // Explicit: node frames a GET's body by neither length nor chunks, and the server would read the
    // body as the next request.
    if (wire.body !== undefined) request.setHeader('content-length', wire.body.length);
    request.end(wire.body);
  });
}

/** What an answer must look like: JSON, never 5xx, errors in the catalogue's shape, a 400 naming its field. */
function problemWith(answer: Answer, method: string): string | null {
  if (answer.status >= 500) return `status ${answer.status}`;
  if (method === 'HEAD' || method === 'OPTIONS' || answer.status === 204) return null;
  let json: { error?: unknown; message?: unknown; field?: unknown };
  try {
    json = JSON.parse(answer.text);
  } catch {
    return `not JSON: ${answer.text.slice(0, 80)}`;
  }
  if (answer.status < 400) return null;
  if (typeof json.error !== 'string' || !(json.error in ERRORS)) return `unknown error code ${String(json.error)}`;
  if (typeof json.message !== 'string') return 'no message';
  if (ERRORS[json.error as keyof typeof ERRORS].status !== answer.status) return `${json.error} with status ${answer.status}`;
  if (answer.status === 400 && typeof json.field !== 'string') return '400 without a field';
  return null;
}

async function pool<T>(items: readonly T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function fuzz(backend: TestBackend, requests: number) {
  // SQLite in memory: a file would fsync each write while holding the event loop, and the fuzz is about
  // what reaches the store, not about durability (crash-safety.adversarial.test.ts is).
  const db = backend.name === 'sqlite' ? { store: await SqliteStore.open(':memory:'), dispose: async () => {} } : await backend.open();
  // The failed-authentication guard would answer 429 to most of the fuzz after its first bogus keys.
  const t = await new TestServer(async () => db.store, { DUMONT_AUTH_FAILURES_PER_MINUTE: '0' }).start();
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  try {
    const world: World = {
      adminKey: t.adminKey,
      otherKey: await createApiKey(t.server.store, 'team-b', false, T0),
      fuzzToken: await t.register(FUZZ),
      controlToken: await t.register(CONTROL),
    };
    await t.register(SINK);
    const first = { hostname: 'gpu-control', timestamp: new Date(T0 - 150_000).toISOString(), gpu_metrics: { utilization_percent: 40 }, process_count: 2 };
    expect((await t.request('POST', '/api/v1/agent/status', { token: world.controlToken, body: { instance_id: CONTROL, ...first } })).status).toBe(200);
    expect((await t.request('POST', '/api/v1/agent/status', { token: world.fuzzToken, body: { instance_id: FUZZ, ...first } })).status).toBe(200);
    const controlView = async () => {
      const paths = [`/api/v1/agent/instances/${CONTROL}`, `/api/v1/agent/instances/${CONTROL}/events?limit=1000`, `/api/v1/agent/instances/${CONTROL}/commands`];
      return (await Promise.all(paths.map(async (p) => (await t.request('GET', p)).text))).join('\n');
    };
    const before = await controlView();

    const seed = Number(process.env.DUMONT_FUZZ_SEED ?? Date.now() % 2 ** 31);
    const base = new URL(t.url);
    const problems: string[] = [];
    const statuses = new Map<number, number>();
    let sent = 0;
    let fiveHundreds = 0;
    let resets = 0;
    const started = performance.now();

    for (let chunk = 0; sent < requests; chunk++) {
      const batch = fc.sample(plans, { numRuns: Math.min(CHUNK, requests - sent), seed: seed + chunk });
      const wires = batch.map((plan, i) => ({ plan, wire: build(plan, sent + i, world) }));
      await pool(wires, CONCURRENCY, async ({ plan, wire }) => {
        const answer = await send(base, agent, wire);
        sent++;
        if ('reset' in answer) {
          resets++;
          if (problems.length < 20) problems.push(`reset (${answer.reset}): ${wire.method} ${wire.path} [${plan.endpoint}/${plan.klass}]`);
          return;
        }
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        if (answer.status >= 500) fiveHundreds++;
        const problem = problemWith(answer, wire.method);
        if (problem && problems.length < 20) {
          problems.push(`${problem}: ${wire.method} ${wire.path} [${plan.endpoint}/${plan.klass}] ${wire.body?.subarray(0, 200).toString('latin1') ?? ''} → ${answer.text.slice(0, 200)}`);
        }
      });
    }
    const seconds = (performance.now() - started) / 1000;
    const after = await controlView();
    const identical = after === before;
    const healthy = (await t.request('GET', '/healthz', { token: null })).status === 200;

    const note = `${backend.name}; seed ${seed}; ${CONCURRENCY} keep-alive connections; statuses ${[...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(' ')}`;
    recordFigure({ suite: SUITE, figure: `requests sent (${backend.name})`, value: sent, note });
    recordFigure({ suite: SUITE, figure: `5xx answers (${backend.name})`, value: fiveHundreds, note });
    recordFigure({ suite: SUITE, figure: `connection resets (${backend.name})`, value: resets, note });
    recordFigure({ suite: SUITE, figure: `control instance byte-identical (${backend.name})`, value: identical ? 'yes' : 'no', note });
    recordFigure({ suite: SUITE, figure: `requests/s (${backend.name})`, value: Math.round(sent / seconds), note });
    return { sent, fiveHundreds, resets, before, after, healthy, problems, seed };
  } finally {
    agent.destroy();
    await t.close();
    await db.dispose();
  }
}

for (const backend of await testBackends()) {
  const requests = backend.name === 'postgres' ? REQUESTS_POSTGRES : REQUESTS;
  describe.skipIf(backend.skipReason !== null)(`fuzz over HTTP (${backend.name})`, () => {
    it(`${requests} generated requests: no 5xx, no connection reset, the control instance byte-identical`, { timeout: Math.max(120_000, requests * 20) }, async () => {
      const result = await fuzz(backend, requests);
      expect(result.sent).toBe(requests);
      expect(result.problems, `seed ${result.seed} (replay with DUMONT_FUZZ_SEED)`).toEqual([]);
      expect(result.fiveHundreds).toBe(0);
      expect(result.resets).toBe(0);
      expect(result.after).toBe(result.before);
      expect(result.healthy).toBe(true);
    });
  });
}
