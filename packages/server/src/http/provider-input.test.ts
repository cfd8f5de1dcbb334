import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { loadConfig } from '../config.js';
import { Providers } from '../providers/registry.js';
import { startServer } from '../server.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { testBackends, type TestBackend } from '../test-support/backends.js';
import { HttpRecorder } from '../test-support/http-recorder.js';
import { T0, TestServer } from '../test-support/test-server.js';

/**
 * "Bad input gets a clear 4xx JSON error naming the field, never a 5xx, never a changed state", for the
 * provider fields (register, PATCH), dry_run, wake and savings; then that a provider instance id able to
 * change the provider's URL path never reaches the provider, that no configured secret is ever answered,
 * and that bad provider configuration stops the start-up with a message naming the variable.
 */

const S = 1000;
const SAFE_ID = /^[A-Za-z0-9_.-]{1,128}$/;
const idle = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 0, memory_used_mb: 10, memory_total_mb: 100 }, process_count: 0 });

type Opened = Awaited<ReturnType<TestBackend['open']>>;
type Body = Record<string, unknown>;

/** One bad value: the body fragment (or raw JSON text), the field the 400 must name, and what its message must say. */
interface BadCase {
  name: string;
  fields: Body | string;
  field: string;
  message?: RegExp;
}

/** Refused by register and PATCH alike. */
const BAD_PROVIDER_FIELDS: BadCase[] = [
  { name: 'provider unknown ("aws")', fields: { provider: 'aws' }, field: 'provider', message: /^provider: aws is unknown provider \(none, vast, webhook or command\)/ },
  { name: 'provider "vast" without DUMONT_VAST_API_KEY', fields: { provider: 'vast' }, field: 'provider', message: /^provider: vast is not configured \(set DUMONT_VAST_API_KEY\)/ },
  { name: 'provider "webhook" unconfigured', fields: { provider: 'webhook' }, field: 'provider', message: /set DUMONT_WEBHOOK_URL and DUMONT_WEBHOOK_SECRET/ },
  { name: 'provider "command" unconfigured', fields: { provider: 'command' }, field: 'provider', message: /set DUMONT_PROVIDER_STOP_COMMAND/ },
  { name: 'provider a number', fields: { provider: 3 }, field: 'provider', message: /^provider: must be string/ },
  { name: 'provider uppercase', fields: { provider: 'Vast' }, field: 'provider', message: /^provider: must match pattern/ },
  { name: 'provider 33 characters', fields: { provider: 'a'.repeat(33) }, field: 'provider', message: /^provider: must match pattern/ },
  { name: 'provider empty', fields: { provider: '' }, field: 'provider' },
  { name: 'provider null', fields: { provider: null }, field: 'provider' },
  { name: 'provider_instance_id "../x"', fields: { provider_instance_id: '../x' }, field: 'provider_instance_id', message: /^provider_instance_id: must match pattern/ },
  { name: 'provider_instance_id "a/b"', fields: { provider_instance_id: 'a/b' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id ""', fields: { provider_instance_id: '' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id 129 characters', fields: { provider_instance_id: 'a'.repeat(129) }, field: 'provider_instance_id' },
  { name: 'provider_instance_id "%2e%2e"', fields: { provider_instance_id: '%2e%2e' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id "a b"', fields: { provider_instance_id: 'a b' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id "gpu-é"', fields: { provider_instance_id: 'gpu-é' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id full-width digits', fields: { provider_instance_id: '１２３' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id with a trailing newline', fields: { provider_instance_id: 'abc\n' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id with NUL', fields: { provider_instance_id: 'ab\u0000' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id "x?y=1"', fields: { provider_instance_id: 'x?y=1' }, field: 'provider_instance_id' },
  { name: 'provider_instance_id a number', fields: { provider_instance_id: 12345 }, field: 'provider_instance_id', message: /^provider_instance_id: must be string/ },
  { name: 'provider_instance_id null', fields: { provider_instance_id: null }, field: 'provider_instance_id' },
  { name: 'provider_instance_id an array', fields: { provider_instance_id: ['a'] }, field: 'provider_instance_id' },
  { name: 'price_per_hour -1', fields: { price_per_hour: -1 }, field: 'price_per_hour', message: /^price_per_hour: must be >= 0/ },
  { name: 'price_per_hour "3" (text)', fields: { price_per_hour: '3' }, field: 'price_per_hour', message: /^price_per_hour: must be number/ },
  { name: 'price_per_hour 1e9', fields: { price_per_hour: 1e9 }, field: 'price_per_hour', message: /^price_per_hour: must be <= 10000/ },
  { name: 'price_per_hour 10000.01', fields: { price_per_hour: 10000.01 }, field: 'price_per_hour' },
  { name: 'price_per_hour "NaN"', fields: { price_per_hour: 'NaN' }, field: 'price_per_hour' },
  { name: 'price_per_hour "Infinity"', fields: { price_per_hour: 'Infinity' }, field: 'price_per_hour' },
  { name: 'price_per_hour "1e3"', fields: { price_per_hour: '1e3' }, field: 'price_per_hour' },
  { name: 'price_per_hour null', fields: { price_per_hour: null }, field: 'price_per_hour' },
  { name: 'price_per_hour true', fields: { price_per_hour: true }, field: 'price_per_hour' },
  { name: 'price_per_hour bare NaN (not JSON)', fields: '"price_per_hour": NaN', field: 'body', message: /^body: not valid JSON/ },
  { name: 'price_per_hour bare Infinity (not JSON)', fields: '"price_per_hour": Infinity', field: 'body' },
  { name: 'an unknown field', fields: { providr: 'none' }, field: 'providr', message: /^providr: unknown field/ },
  // One good field next to a bad one: the good one must not be stored either.
  { name: 'a good provider_instance_id with a bad price', fields: { provider_instance_id: 'fine-id', price_per_hour: -1 }, field: 'price_per_hour' },
  { name: 'a good price with an unconfigured provider', fields: { price_per_hour: 2, provider: 'vast' }, field: 'provider' },
];

/** PATCH only: bodies that are not a change. */
const BAD_PATCH_BODIES: BadCase[] = [
  { name: 'an empty object (nothing to change)', fields: {}, field: 'body' },
  { name: 'hostname (not patchable)', fields: { hostname: 'x' }, field: 'hostname', message: /unknown field/ },
  { name: 'owner (not patchable: no change of hands)', fields: { owner: 'team-b' }, field: 'owner', message: /unknown field/ },
  { name: 'instance_id (not patchable)', fields: { instance_id: 1 }, field: 'instance_id' },
];

const bodyText = (fields: Body | string, extra: Body = {}) => {
  if (typeof fields !== 'string') return JSON.stringify({ ...extra, ...fields });
  const head = JSON.stringify(extra).slice(1, -1);
  return `{${head ? `${head},` : ''}${fields}}`;
};

function expectRefused(res: { status: number; json: any; text: string }, field: string, message?: RegExp) {
  expect(res.status, res.text).toBe(400);
  expect(Object.keys(res.json).sort()).toEqual(['error', 'field', 'message']);
  expect(res.json.error).toBe('invalid_request');
  expect(res.json.field).toBe(field);
  expect(typeof res.json.message).toBe('string');
  if (message) expect(res.json.message).toMatch(message);
}

/** Every observable of some instances, as text: a refused request must leave all of it as it was. */
async function snapshot(t: TestServer, ids: number[]): Promise<string> {
  const parts: string[] = [(await t.request('GET', '/api/v1/agent/instances?limit=1000')).text];
  for (const id of ids) {
    for (const path of [`/api/v1/agent/instances/${id}`, `/api/v1/agent/instances/${id}/events?limit=1000`, `/api/v1/agent/instances/${id}/commands`]) {
      parts.push((await t.request('GET', path)).text);
    }
    parts.push(JSON.stringify(await t.server.store.listOutbox(id)));
  }
  return parts.join('\n');
}

const backends = await testBackends();

for (const backend of backends) {
  describe.skipIf(backend.skipReason !== null)(`provider fields: refused input changes nothing (${backend.name})`, () => {
    let t: TestServer;
    let db: Opened;
    let teamB: string;
    let agentToken: string;
    /** Admin's instance, with provider fields set at registration. */
    const ID = 42;
    /** team-b's own instance. */
    const B_ID = 500;

    beforeAll(async () => {
      db = await backend.open();
      t = await new TestServer(async () => db.store).start();
      const reg = await t.request('POST', '/api/v1/agent/instances', {
        body: { instance_id: ID, hostname: 'gpu-42', provider: 'none', provider_instance_id: 'orig-42', price_per_hour: 1.5 },
      });
      expect(reg.status).toBe(201);
      agentToken = reg.json.agent_token;
      expect((await t.beat(agentToken, { instance_id: ID })).status).toBe(200);
      teamB = await createApiKey(t.server.store, 'team-b', false, T0);
      expect((await t.request('POST', '/api/v1/agent/instances', { token: teamB, body: { instance_id: B_ID } })).status).toBe(201);
    });
    afterAll(async () => {
      await t?.close();
      await db?.dispose();
    });

    it('register a new instance with a bad field: 400 naming it, and no instance, event or outbox row appears', async () => {
      const before = await snapshot(t, [ID, B_ID]);
      const NEW = 9001;
      for (const c of BAD_PROVIDER_FIELDS) {
        const res = await t.request('POST', '/api/v1/agent/instances', { body: bodyText(c.fields, { instance_id: NEW, hostname: 'new' }) });
        expectRefused(res, c.field, c.message);
        // Also refused with `owner`, the admin-only extra field of register.
        const owned = await t.request('POST', '/api/v1/agent/instances', { body: bodyText(c.fields, { instance_id: NEW, owner: 'team-b' }) });
        expectRefused(owned, c.field, c.message);
      }
      expect((await t.request('GET', `/api/v1/agent/instances/${NEW}`)).status).toBe(404);
      expect(await t.server.store.listOutbox(NEW)).toEqual([]);
      expect(await snapshot(t, [ID, B_ID])).toBe(before);
    });

    it('re-register with a bad field: 400, the token is not rotated and nothing about the instance changes', async () => {
      const before = await snapshot(t, [ID]);
      for (const c of BAD_PROVIDER_FIELDS) {
        expectRefused(await t.request('POST', '/api/v1/agent/instances', { body: bodyText(c.fields, { instance_id: ID }) }), c.field, c.message);
      }
      expect(await snapshot(t, [ID])).toBe(before);
      // The agent's token still works: no rotation happened behind a 400.
      t.clock.advance(S);
      expect((await t.beat(agentToken, { instance_id: ID })).status).toBe(200);
    });

    it('PATCH with a bad field or body: 400 naming it, detail, events and outbox unchanged', async () => {
      const before = await snapshot(t, [ID]);
      for (const c of [...BAD_PROVIDER_FIELDS, ...BAD_PATCH_BODIES]) {
        expectRefused(await t.request('PATCH', `/api/v1/agent/instances/${ID}`, { body: bodyText(c.fields) }), c.field, c.message);
      }
      const raw: [string, string, string?][] = [
        ['not JSON', '{"price_per_hour": 2', 'application/json'],
        ['no body at all', ''],
        ['null', 'null'],
        ['an array', '[{"price_per_hour": 2}]'],
        ['a string', '"price_per_hour"'],
        ['a number', '2'],
      ];
      for (const [, text] of raw) {
        const res = await t.request('PATCH', `/api/v1/agent/instances/${ID}`, text === '' ? {} : { body: text });
        expectRefused(res, 'body');
      }
      expect(await snapshot(t, [ID])).toBe(before);
    });

    it('PATCH of a missing instance and of another owner’s instance: the same 404, and nothing changes', async () => {
      const before = await snapshot(t, [ID, B_ID]);
      const good = { price_per_hour: 3 };
      const missing = await t.request('PATCH', '/api/v1/agent/instances/77777', { body: good });
      expect(missing.status).toBe(404);
      expect(missing.json).toEqual({ error: 'not_found', message: 'instance 77777 not found', field: 'instance_id' });
      // team-b's key on admin's instance: exactly the answer for an instance that does not exist.
      const other = await t.request('PATCH', `/api/v1/agent/instances/${ID}`, { token: teamB, body: good });
      expect(other.status).toBe(404);
      expect(other.json).toEqual({ error: 'not_found', message: `instance ${ID} not found`, field: 'instance_id' });
      const teamBMissing = await t.request('PATCH', '/api/v1/agent/instances/77777', { token: teamB, body: good });
      expect({ ...teamBMissing.json, message: teamBMissing.json.message.replace('77777', String(ID)) }).toEqual(other.json);
      // A bad body is a 400 before anyone looks for the instance: the same for a hidden and a missing one.
      const hiddenBad = await t.request('PATCH', `/api/v1/agent/instances/${ID}`, { token: teamB, body: { provider: 'aws' } });
      const missingBad = await t.request('PATCH', '/api/v1/agent/instances/77777', { token: teamB, body: { provider: 'aws' } });
      expectRefused(hiddenBad, 'provider');
      expect(hiddenBad.json).toEqual(missingBad.json);
      expectRefused(await t.request('PATCH', '/api/v1/agent/instances/abc', { body: good }), 'instance_id');
      expect(await t.server.store.listOutbox(77777)).toEqual([]);
      expect(await snapshot(t, [ID, B_ID])).toBe(before);
    });

    it('PATCH …/hibernation {dry_run: "yes"}: 400 naming dry_run; an accompanying good field is not stored', async () => {
      const before = await snapshot(t, [ID]);
      for (const body of [{ dry_run: 'yes' }, { dry_run: 1 }, { dry_run: null }, { enabled: false, dry_run: 'true' }]) {
        expectRefused(await t.request('PATCH', `/api/v1/agent/instances/${ID}/hibernation`, { body }), 'dry_run', /^dry_run: must be boolean/);
      }
      expect(await snapshot(t, [ID])).toBe(before);
      expect((await t.request('GET', `/api/v1/agent/instances/${ID}`)).json.hibernation).toMatchObject({ enabled: true, dry_run: false });
    });

    it('wake: 404 when not visible, 409 instance_not_hibernated when not hibernated, nothing changed either way', async () => {
      const before = await snapshot(t, [ID, B_ID]);
      const missing = await t.request('POST', '/api/v1/agent/instances/77777/wake');
      expect(missing.status).toBe(404);
      expect(missing.json).toEqual({ error: 'not_found', message: 'instance 77777 not found', field: 'instance_id' });
      const hidden = await t.request('POST', `/api/v1/agent/instances/${ID}/wake`, { token: teamB });
      expect(hidden.status).toBe(404);
      expect(hidden.json).toEqual({ error: 'not_found', message: `instance ${ID} not found`, field: 'instance_id' });
      const status = (await t.request('GET', `/api/v1/agent/instances/${ID}`)).json.status;
      expect(['active', 'idle']).toContain(status);
      const awake = await t.request('POST', `/api/v1/agent/instances/${ID}/wake`);
      expect(awake.status).toBe(409);
      expect(awake.json).toEqual({
        error: 'instance_not_hibernated',
        message: `instance ${ID} is ${status}; only a hibernated instance can be woken`,
      });
      // team-b's own, never-seen instance (offline) cannot be woken either.
      expect((await t.request('POST', `/api/v1/agent/instances/${B_ID}/wake`, { token: teamB })).json.error).toBe('instance_not_hibernated');
      expect(await snapshot(t, [ID, B_ID])).toBe(before);
    });

    it('wake treats a body as keep-alive does: any JSON (or text) is ignored, malformed JSON is a 400 naming body', async () => {
      // Neither route reads a body. Keep-alive answers 200 whatever JSON comes; wake then reaches its
      // status check (409 here, the instance is not hibernated) instead of refusing the body.
      const ignored: [string, { body: unknown; headers?: Record<string, string> }][] = [
        ['an object with junk', { body: { junk: 1, status: 'hibernated' } }],
        ['an array', { body: [1, 2] }],
        ['text/plain', { body: 'wake up', headers: { 'content-type': 'text/plain' } }],
      ];
      for (const [name, options] of ignored) {
        const keepAlive = await t.request('POST', `/api/v1/agent/instances/${B_ID}/keep-alive`, { token: teamB, ...options });
        expect(keepAlive.status, `keep-alive, ${name}`).toBe(200);
        const wake = await t.request('POST', `/api/v1/agent/instances/${B_ID}/wake`, { token: teamB, ...options });
        expect(wake.status, `wake, ${name}`).toBe(409);
        expect(wake.json.error).toBe('instance_not_hibernated');
      }
      const before = await snapshot(t, [B_ID]);
      for (const path of [`/api/v1/agent/instances/${B_ID}/keep-alive`, `/api/v1/agent/instances/${B_ID}/wake`]) {
        const res = await t.request('POST', path, { token: teamB, body: '{"junk": ' });
        expectRefused(res, 'body', /^body: not valid JSON/);
      }
      expect(await snapshot(t, [B_ID])).toBe(before);
    });

    it('savings: unreadable or empty ranges are a 400 naming from/to; no credential is a 401', async () => {
      const ok = await t.request('GET', '/api/v1/agent/savings?from=2026-02-01T00:00:00Z&to=2026-03-01T00:00:00Z');
      expect(ok.status).toBe(200);
      expect(ok.json).toMatchObject({ from: '2026-02-01T00:00:00.000Z', to: '2026-03-01T00:00:00.000Z' });
      const cases: [string, string, RegExp][] = [
        ['from=yesterday', 'from', /^from: must be an RFC 3339 date-time/],
        ['from=2026-13-01T00:00:00Z', 'from', /^from: /],
        ['from=2026-02-30T00:00:00Z&to=2026-03-01T00:00:00Z', 'from', /^from: /],
        ['from=2026-03-01', 'from', /^from: /],
        [`from=${'2'.repeat(65)}`, 'from', /^from: /],
        ['from=2026-02-01T00:00:00Z&from=2026-02-02T00:00:00Z', 'from', /^from: /],
        ['to=yesterday', 'to', /^to: must be an RFC 3339 date-time/],
        ['to=2026-13-01T00:00:00Z', 'to', /^to: /],
        ['from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z', 'to', /^to: must be after from/],
        ['from=2026-02-01T00:00:00Z&to=2026-02-01T00:00:00Z', 'to', /^to: must be after from/],
        // The same instant written two ways is still an empty range.
        ['from=2026-02-01T01:00:00%2B01:00&to=2026-02-01T00:00:00Z', 'to', /^to: must be after from/],
        // No `to`: it is now (2026-03-01T12:00Z), and a `from` after now is an empty range.
        ['from=2026-04-01T00:00:00Z', 'to', /^to: must be after from/],
      ];
      for (const [query, field, message] of cases) {
        expectRefused(await t.request('GET', `/api/v1/agent/savings?${query}`), field, message);
      }
      const anonymous = await t.request('GET', '/api/v1/agent/savings', { token: null });
      expect(anonymous.status).toBe(401);
      expect(anonymous.json.error).toBe('unauthorized');
      expect(anonymous.text).not.toContain('hibernated_hours');
    });

    it("another instance's provider id, set or implied, is refused at register and PATCH: one machine, one instance", async () => {
      const before = await snapshot(t, [ID, B_ID]);
      const cases: [string, string, Body][] = [
        ['PATCH', `/api/v1/agent/instances/${B_ID}`, { provider_instance_id: 'orig-42' }],
        ['PATCH', `/api/v1/agent/instances/${B_ID}`, { provider_instance_id: String(ID) === 'orig-42' ? 'x' : 'orig-42' }],
        ['POST', '/api/v1/agent/instances', { instance_id: B_ID, provider_instance_id: 'orig-42' }],
        ['POST', '/api/v1/agent/instances', { instance_id: 9_999_001, provider_instance_id: 'orig-42' }],
        // Instance B is known to the provider by its own id (none set): nobody else may take it.
        ['POST', '/api/v1/agent/instances', { instance_id: 9_999_002, provider_instance_id: String(B_ID) }],
      ];
      for (const [method, path, body] of cases) {
        const res = await t.request(method, path, { token: teamB, body });
        expect(res.status, `${method} ${path} ${res.text}`).toBe(400);
        expect(res.json.field).toBe('provider_instance_id');
        expect(res.json.message).toMatch(/already how the provider knows another instance/);
      }
      expect(await snapshot(t, [ID, B_ID])).toBe(before);
      expect((await t.request('GET', '/api/v1/agent/instances/9999001')).status).toBe(404);
      // A new instance whose own id is already another's explicit provider id is refused the same way.
      expect((await t.request('PATCH', `/api/v1/agent/instances/${B_ID}`, { token: teamB, body: { provider_instance_id: '9999003' } })).status).toBe(200);
      const implied = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 9_999_003 } });
      expect(implied.status).toBe(400);
      expect(implied.json.field).toBe('provider_instance_id');
      expect((await t.request('PATCH', `/api/v1/agent/instances/${B_ID}`, { token: teamB, body: { provider_instance_id: String(B_ID) } })).status).toBe(200);
    });

    it('a good PATCH after all that does change the instance (the snapshots above can see a change)', async () => {
      const before = await snapshot(t, [ID]);
      const res = await t.request('PATCH', `/api/v1/agent/instances/${ID}`, { body: { provider: 'none', provider_instance_id: 'gpu-42.b', price_per_hour: 2.5 } });
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ price_per_hour: 2.5, provider: { name: 'none', instance_id: 'gpu-42.b' } });
      expect(await snapshot(t, [ID])).not.toBe(before);
      expect((await t.eventTypes(ID)).at(-1)).toBe('instance_updated');
      // Registration stored its fields too: before this PATCH the instance had them.
      expect(before).toContain('"instance_id":"orig-42"');
      expect(before).toContain('"price_per_hour":1.5');
    });
  });
}

const sqlite = backends.find((b) => b.name === 'sqlite')!;

describe('vast provider: ids that could change its URL path never reach it; secrets never answered (sqlite)', () => {
  const VAST_KEY = `vastkey_SENTINEL_${randomBytes(12).toString('hex')}`;
  const WEBHOOK_KEY_B64 = Buffer.from(`SENTINEL-webhook-${randomBytes(12).toString('hex')}`).toString('base64');
  const WEBHOOK_SECRET = `whsec_${WEBHOOK_KEY_B64}`;
  let t: TestServer;
  let db: Opened;
  let rec: HttpRecorder;
  const tokens = new Map<number, string>();

  beforeAll(async () => {
    db = await sqlite.open();
    rec = await HttpRecorder.start();
    t = await new TestServer(async () => db.store, {
      DUMONT_PROVIDER: 'vast',
      DUMONT_VAST_API_URL: rec.url,
      DUMONT_VAST_API_KEY: VAST_KEY,
      DUMONT_WEBHOOK_URL: `${rec.url}/hook`,
      DUMONT_WEBHOOK_SECRET: WEBHOOK_SECRET,
      DUMONT_IDLE_THRESHOLD_MINUTES: '0.05',
      DUMONT_HIBERNATION_WARNING_SECONDS: '0',
    }).start();
    t.clock.advance(90 * S); // past the restart grace
  });
  afterAll(async () => {
    await t?.close();
    await rec?.close();
    await db?.dispose();
  });

  const register = async (id: number, extra: Body = {}) => {
    const res = await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: id, ...extra } });
    expect(res.status, res.text).toBe(201);
    tokens.set(id, res.json.agent_token);
  };
  /** Idle beats until the hibernate command comes, the agent's confirmation, then the outbox is drained. */
  const hibernate = async (id: number) => {
    const token = tokens.get(id)!;
    let command: { id: string } | undefined;
    for (let i = 0; i < 6 && !command; i++) {
      command = (await t.beat(token, idle(id))).json.commands[0];
      t.clock.advance(S);
    }
    expect(command, `instance ${id}: no hibernate command`).toBeDefined();
    await t.beat(token, { ...idle(id), command_results: [{ id: command!.id, status: 'succeeded' }] });
    await t.drainOutbox();
  };
  const detail = async (id: number) => (await t.request('GET', `/api/v1/agent/instances/${id}`)).json;

  it('path-changing ids are refused at register and PATCH; the Vast API sees only the well-formed id, for stop and start', async () => {
    await register(601, { provider_instance_id: '12345' });
    const before = await snapshot(t, [601]);
    const attacks = ['../../admin', '../x', '..%2fadmin', '%2e%2e', '%2E%2E%2F', 'a/b', '/', '\\..\\admin', '12345/../../admin', '..;/admin', 'x?y=1', 'x#frag', ' 12345', '12345 ', '..\u2215admin', '．．'];
    for (const id of attacks) {
      expectRefused(await t.request('PATCH', '/api/v1/agent/instances/601', { body: { provider_instance_id: id } }), 'provider_instance_id');
      expectRefused(await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 601, provider_instance_id: id } }), 'provider_instance_id');
      expectRefused(await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 602, provider_instance_id: id } }), 'provider_instance_id');
    }
    expect(await snapshot(t, [601])).toBe(before);
    expect((await t.request('GET', '/api/v1/agent/instances/602')).status).toBe(404);

    rec.requests.length = 0;
    await hibernate(601);
    expect(await detail(601)).toMatchObject({ status: 'hibernated', provider: { name: 'vast', instance_id: '12345', state: 'stopped' } });
    // The wake body is ignored (as keep-alive's): junk in it changes nothing about what is started.
    const wake = await t.request('POST', '/api/v1/agent/instances/601/wake', { body: { provider_instance_id: '../../admin', junk: true } });
    expect(wake.status).toBe(202);
    expect(wake.json).toEqual({ success: true, instance_id: 601, status: 'waking' });
    await t.drainOutbox();
    expect(rec.requests.map((r) => `${r.method} ${r.path} ${r.body}`)).toEqual([
      'PUT /api/v0/instances/12345/ {"state":"stopped"}',
      'PUT /api/v0/instances/12345/ {"state":"running"}',
    ]);
    // A second wake of a waking instance is a 409 that queues nothing.
    const again = await t.request('POST', '/api/v1/agent/instances/601/wake');
    expect(again.status).toBe(409);
    expect(again.json.error).toBe('instance_not_hibernated');
    await t.drainOutbox();
    expect(rec.requests).toHaveLength(2);
  });

  it('"." and ".." are refused at the API like "../x" (they pass the character pattern, but are a path segment)', async () => {
    await register(603, { provider_instance_id: '12346' });
    for (const id of ['.', '..']) {
      expectRefused(await t.request('PATCH', '/api/v1/agent/instances/603', { body: { provider_instance_id: id } }), 'provider_instance_id');
      expectRefused(await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 604, provider_instance_id: id } }), 'provider_instance_id');
    }
    expect((await detail(603)).provider.instance_id).toBe('12346');
  });

  it('a ".." already in the database never reaches the Vast API: the stop fails at once, without a request', async () => {
    await register(605);
    // Stored directly, as an older server (or a hand edit) could have: the provider is the last line of defence.
    await db.store.transaction(async (repo) => {
      const row = (await repo.getInstance(605, { forUpdate: true }))!;
      expect(await repo.updateInstance(605, row.version, { settings: { providerInstanceId: '..' } })).toBe(true);
    });
    rec.requests.length = 0;
    await hibernate(605);
    expect(rec.requests).toEqual([]);
    const d = await detail(605);
    expect(d.provider).toMatchObject({ instance_id: '..', state: 'stop_failed' });
    expect(d.provider.last_error).toMatch(/not a plain Vast\.ai instance id/);
    expect(d.status).not.toBe('hibernated');
    expect(await t.eventTypes(605)).toEqual(expect.arrayContaining(['provider_stop_failed', 'hibernation_failed']));
  });

  it('property: any string as provider_instance_id via PATCH is 200 and stored as sent when safe, else 400 naming it; never a 5xx', async () => {
    await register(610, { provider_instance_id: 'start' });
    let current = 'start';
    const seen = { accepted: 0, refused: 0 };
    const idArbitrary = fc.oneof(
      fc.string({ maxLength: 140 }),
      fc.string({ unit: 'binary', maxLength: 24 }),
      fc.string({ unit: fc.constantFrom(...'aZ09_.-/\\%?#;: \n\t\u0000é．'.split('')), minLength: 0, maxLength: 10 }),
      fc.stringMatching(/^[A-Za-z0-9_.-]{1,128}$/),
      fc.stringMatching(/^[A-Za-z0-9_.-]{129,140}$/),
      fc.constantFrom('../../admin', '%2e%2e', '..%2f', 'a/b', '12345', 'C.12345', '-', '_'),
    );
    await fc.assert(
      fc.asyncProperty(idArbitrary, async (id) => {
        const res = await t.request('PATCH', '/api/v1/agent/instances/610', { body: { provider_instance_id: id } });
        expect(res.status, `${JSON.stringify(id)}: ${res.text}`).toBeLessThan(500);
        if (res.status === 200) {
          expect(id).toMatch(SAFE_ID);
          expect(res.json.provider.instance_id).toBe(id);
          current = id;
          seen.accepted++;
        } else {
          expectRefused(res, 'provider_instance_id');
          // An id the pattern allows is refused only when the provider knows another instance by it.
          if (!/already how the provider knows another instance/.test(res.json.message)) {
            expect(SAFE_ID.test(id) && id !== '.' && id !== '..', JSON.stringify(id)).toBe(false);
          }
          seen.refused++;
        }
        expect((await detail(610)).provider.instance_id).toBe(current);
      }),
      { numRuns: 200 },
    );
    expect(seen.accepted).toBeGreaterThan(20);
    expect(seen.refused).toBeGreaterThan(20);
  });

  it('secrets are never answered: detail, events, list, savings, errors and /openapi.json hold neither the Vast key nor the webhook secret', async () => {
    await register(620, { provider_instance_id: '777', price_per_hour: 1 });
    await register(621, { provider: 'webhook', provider_instance_id: 'hook-621' });
    // The Vast API refuses and echoes our Authorization header back; the webhook endpoint echoes its headers.
    rec.reply((r) =>
      r.path.startsWith('/api/v0/')
        ? { status: 403, body: `forbidden for Authorization: ${r.headers.authorization}` }
        : { status: 400, body: `bad: ${JSON.stringify(r.headers)}` },
    );
    rec.requests.length = 0;
    await hibernate(620);
    await hibernate(621);
    expect(rec.requests.map((r) => r.path)).toEqual(['/api/v0/instances/777/', '/hook']);
    // The key was really sent (and echoed), so the answers below had a chance to leak it.
    expect(rec.requests[0]!.headers.authorization).toBe(`Bearer ${VAST_KEY}`);
    expect((await detail(620)).provider.last_error).toContain('[redacted]');

    const texts: string[] = [];
    const get = async (path: string, token?: string | null) => {
      const res = await t.request('GET', path, { token });
      texts.push(res.text);
      return res;
    };
    for (const id of [620, 621]) {
      await get(`/api/v1/agent/instances/${id}`);
      await get(`/api/v1/agent/instances/${id}/events?limit=1000`);
      await get(`/api/v1/agent/instances/${id}/commands`);
    }
    await get('/api/v1/agent/instances?limit=1000');
    await get('/api/v1/agent/savings');
    const openapi = await get('/openapi.json', null);
    expect(openapi.status).toBe(200);
    expect(openapi.text).toContain('provider_instance_id');
    texts.push((await t.request('PATCH', '/api/v1/agent/instances/620', { body: { provider: 'aws' } })).text);
    texts.push((await t.request('POST', '/api/v1/agent/instances', { body: { instance_id: 622, provider: 'command' } })).text);
    const all = texts.join('\n');
    expect(all).toContain('provider_stop_failed');
    expect(all).toContain('HTTP 403');
    expect(all).not.toContain(VAST_KEY);
    expect(all).not.toContain(WEBHOOK_SECRET);
    expect(all).not.toContain(WEBHOOK_KEY_B64);
    expect(all).not.toContain('SENTINEL');
  });
});

describe('start-up refuses bad provider configuration, naming the variable, never echoing a secret', () => {
  const base = { DUMONT_PORT: '0', DUMONT_ADMIN_KEY: 'dmk_test_startup', DUMONT_LOG_LEVEL: 'warn' };
  const refusal = (env: Record<string, string>): string => {
    try {
      Providers.fromConfig(loadConfig({ ...base, ...env }));
    } catch (error) {
      return (error as Error).message;
    }
    throw new Error(`accepted: ${JSON.stringify(env)}`);
  };
  const loadRefusal = (env: Record<string, string>): string => {
    try {
      loadConfig({ ...base, ...env });
    } catch (error) {
      return (error as Error).message;
    }
    throw new Error(`accepted: ${JSON.stringify(env)}`);
  };

  it('a well-formed configuration is accepted (the refusals below are about the value, not the variable)', () => {
    const providers = Providers.fromConfig(
      loadConfig({
        ...base,
        DUMONT_PROVIDER: 'vast',
        DUMONT_VAST_API_KEY: 'k',
        DUMONT_WEBHOOK_URL: 'https://hooks.example/x',
        DUMONT_WEBHOOK_SECRET: `whsec_${Buffer.alloc(32, 7).toString('base64')}`,
        DUMONT_PROVIDER_STOP_COMMAND: '["/bin/true"]',
        DUMONT_PROVIDER_START_COMMAND: '/bin/true',
      }),
    );
    expect(providers.names().sort()).toEqual(['command', 'none', 'vast', 'webhook']);
  });

  it('Providers.fromConfig names what is missing or malformed', () => {
    expect(refusal({ DUMONT_PROVIDER: 'vast' })).toBe('DUMONT_PROVIDER=vast: not configured (set DUMONT_VAST_API_KEY)');
    expect(refusal({ DUMONT_PROVIDER: 'bogus' })).toBe('DUMONT_PROVIDER=bogus: unknown provider (none, vast, webhook or command)');
    expect(refusal({ DUMONT_PROVIDER: 'webhook' })).toMatch(/^DUMONT_PROVIDER=webhook: .*DUMONT_WEBHOOK_URL and DUMONT_WEBHOOK_SECRET/);
    expect(refusal({ DUMONT_PROVIDER: 'command' })).toMatch(/^DUMONT_PROVIDER=command: .*DUMONT_PROVIDER_STOP_COMMAND/);
    expect(refusal({ DUMONT_WEBHOOK_URL: 'https://hooks.example/x' })).toMatch(/DUMONT_WEBHOOK_SECRET/);
    const secretAlone = `whsec_${Buffer.from('SENTINEL-alone-0123456789abcdef').toString('base64')}`;
    const alone = refusal({ DUMONT_WEBHOOK_SECRET: secretAlone });
    expect(alone).toMatch(/DUMONT_WEBHOOK_URL/);
    expect(alone).not.toContain(secretAlone.slice(6));
    expect(refusal({ DUMONT_PROVIDER_START_COMMAND: '/bin/true' })).toMatch(/^DUMONT_PROVIDER_START_COMMAND: set DUMONT_PROVIDER_STOP_COMMAND/);
  });

  it('a malformed DUMONT_WEBHOOK_SECRET is named and never repeated', () => {
    const malformed = [
      'SENTINELnoprefix0123456789abcdefghij', // no whsec_
      'whsec_SENTINEL*not*base64!!', // not base64
      `whsec_${Buffer.from('SENTINEL').toString('base64')}`, // an 8-byte key
      `whsec_${Buffer.from('SENTINEL-urlsafe-????>>>>0123456789').toString('base64url')}`, // URL-safe alphabet
      'whsec_', // nothing after the prefix
    ];
    for (const secret of malformed) {
      const message = refusal({ DUMONT_WEBHOOK_URL: 'https://hooks.example/x', DUMONT_WEBHOOK_SECRET: secret });
      expect(message, secret).toMatch(/^DUMONT_WEBHOOK_SECRET /);
      const body = secret.replace(/^whsec_/, '');
      if (body) expect(message, secret).not.toContain(body);
      expect(message).not.toContain('SENTINEL');
    }
  });

  it('loadConfig refuses bad values of the new variables, naming them (and never echoing a URL’s credentials)', () => {
    expect(loadRefusal({ DUMONT_NOTIFY_FORMAT: 'xml' })).toBe('DUMONT_NOTIFY_FORMAT=xml: must be standard or slack');
    expect(loadRefusal({ DUMONT_DRY_RUN: 'maybe' })).toBe('DUMONT_DRY_RUN=maybe: must be 1 or 0');
    expect(loadRefusal({ DUMONT_WEBHOOK_URL: 'ftp://x' })).toBe('DUMONT_WEBHOOK_URL: must be an http or https URL');
    const withToken = loadRefusal({ DUMONT_WEBHOOK_URL: 'ftp://user:SENTINELTOKEN@hooks.example/x' });
    expect(withToken).toMatch(/^DUMONT_WEBHOOK_URL: /);
    expect(withToken).not.toContain('SENTINEL');
    expect(loadRefusal({ DUMONT_WEBHOOK_URL: 'not a url SENTINEL' })).toBe('DUMONT_WEBHOOK_URL: not a URL');
    expect(loadRefusal({ DUMONT_VAST_API_URL: 'ftp://x' })).toMatch(/^DUMONT_VAST_API_URL: /);
    expect(loadRefusal({ DUMONT_NOTIFY_URL: 'javascript:alert(1)' })).toMatch(/^DUMONT_NOTIFY_URL: /);
    expect(loadRefusal({ DUMONT_PROVIDER_TIMEOUT_SECONDS: '0' })).toMatch(/^DUMONT_PROVIDER_TIMEOUT_SECONDS=0: /);
    expect(loadRefusal({ DUMONT_PROVIDER_RETRY_HOURS: '-1' })).toMatch(/^DUMONT_PROVIDER_RETRY_HOURS=-1: /);
    expect(loadRefusal({ DUMONT_WAKE_TIMEOUT_SECONDS: 'soon' })).toMatch(/^DUMONT_WAKE_TIMEOUT_SECONDS=soon: /);
    expect(loadRefusal({ DUMONT_OUTBOX_POLL_MS: '5' })).toMatch(/^DUMONT_OUTBOX_POLL_MS=5: /);
  });

  it('startServer stops before serving on a bad provider or notification secret, naming the variable', async () => {
    const store = await SqliteStore.open(':memory:');
    try {
      const start = (env: Record<string, string>) => startServer(loadConfig({ ...base, ...env }), { store, logger: false, sweep: false });
      await expect(start({ DUMONT_PROVIDER: 'vast' })).rejects.toThrow(/^DUMONT_PROVIDER=vast: not configured \(set DUMONT_VAST_API_KEY\)$/);
      const notifySecret = 'SENTINEL-not-a-whsec-secret';
      const error = await start({ DUMONT_NOTIFY_URL: 'https://hooks.example/n', DUMONT_NOTIFY_SECRET: notifySecret }).catch((e: Error) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toMatch(/^DUMONT_NOTIFY_SECRET /);
      expect((error as Error).message).not.toContain('SENTINEL');
    } finally {
      await store.close();
    }
  });
});
