import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { hashSecret } from '../secrets.js';
import { testBackends, type TestBackend } from '../test-support/backends.js';
import { recordFigure } from '../test-support/reliability.js';
import { startServerProcess, type ServerProcess } from '../test-support/server-process.js';

/**
 * Who may call what, checked cell by cell against the real server process: every operator route and
 * the heartbeat, with every kind of credential (and of broken header). Then no API key or agent token
 * may be found in clear anywhere it could leak: the database, the server's debug logs, the answers.
 */

const SUITE = 'Auth matrix';
const ALICE_INSTANCE = 7001;
const BOB_INSTANCE = 7002;
/** Alice's, re-registered by the register row (its token rotates; the other rows keep theirs). */
const REGISTER_TARGET = 7003;
const ROTATED_INSTANCE = 7004;

const ERROR_OF: Record<number, string> = { 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 409: 'instance_not_hibernated' };
const errorOf = (status: number) => ERROR_OF[status] ?? `status ${status}`;

type Credential =
  | 'no header'
  | '`Bearer`'
  | '`Basic x`'
  | 'two tokens'
  | 'two spaces before the key'
  | '10 KB token'
  | 'unknown key'
  | "other owner's key"
  | 'agent token'
  | "owner's key"
  | 'admin key'
  | 'admin key (environment)'
  | "owner's session"
  | "owner's session, no CSRF token"
  | "owner's session, another site's Origin"
  | "owner's session, another session's CSRF token"
  | "other owner's session"
  | 'logged-out session';

const CREDENTIALS: Credential[] = [
  'no header',
  '`Bearer`',
  '`Basic x`',
  'two tokens',
  'two spaces before the key',
  '10 KB token',
  'unknown key',
  "other owner's key",
  'agent token',
  "owner's key",
  'admin key',
  'admin key (environment)',
  "owner's session",
  "owner's session, no CSRF token",
  "owner's session, another site's Origin",
  "owner's session, another session's CSRF token",
  "other owner's session",
  'logged-out session',
];

interface OperatorRoute {
  name: string;
  method: string;
  path: string;
  body?: unknown;
  /** What the owner (and an admin) gets. */
  ok: number;
  /** What another owner's key gets: the list shows it only its own; everything else is 404. */
  other: number;
}

const ROUTES: OperatorRoute[] = [
  { name: 'GET /instances', method: 'GET', path: '/api/v1/agent/instances', ok: 200, other: 200 },
  { name: 'POST /instances', method: 'POST', path: '/api/v1/agent/instances', body: { instance_id: REGISTER_TARGET }, ok: 200, other: 404 },
  { name: 'GET /instances/{id}', method: 'GET', path: `/api/v1/agent/instances/${ALICE_INSTANCE}`, ok: 200, other: 404 },
  { name: 'POST /instances/{id}/keep-alive', method: 'POST', path: `/api/v1/agent/instances/${ALICE_INSTANCE}/keep-alive?minutes=5`, ok: 200, other: 404 },
  { name: 'PATCH /instances/{id}/hibernation', method: 'PATCH', path: `/api/v1/agent/instances/${ALICE_INSTANCE}/hibernation`, body: { threshold_minutes: 45 }, ok: 200, other: 404 },
  { name: 'POST /instances/{id}/commands', method: 'POST', path: `/api/v1/agent/instances/${ALICE_INSTANCE}/commands`, body: { type: 'snapshot' }, ok: 201, other: 404 },
  { name: 'GET /instances/{id}/commands', method: 'GET', path: `/api/v1/agent/instances/${ALICE_INSTANCE}/commands`, ok: 200, other: 404 },
  { name: 'GET /instances/{id}/events', method: 'GET', path: `/api/v1/agent/instances/${ALICE_INSTANCE}/events`, ok: 200, other: 404 },
  { name: 'PATCH /instances/{id}', method: 'PATCH', path: `/api/v1/agent/instances/${ALICE_INSTANCE}`, body: { price_per_hour: 1.5 }, ok: 200, other: 404 },
  // Alice's instance is running: her key reaches the status check (409), another owner's never does.
  { name: 'POST /instances/{id}/wake', method: 'POST', path: `/api/v1/agent/instances/${ALICE_INSTANCE}/wake`, ok: 409, other: 404 },
  // Owner-scoped, not per instance: every owner may ask, and sees only its own.
  { name: 'GET /savings', method: 'GET', path: '/api/v1/agent/savings', ok: 200, other: 200 },
];

function expectedOperator(route: OperatorRoute, credential: Credential): number {
  const change = route.method !== 'GET';
  switch (credential) {
    case "other owner's key":
    case "other owner's session":
      return route.other;
    case "owner's session":
      return route.ok;
    // Reads need only the cookie; a change made with it needs its CSRF token and this server's origin.
    case "owner's session, no CSRF token":
    case "owner's session, another site's Origin":
    case "owner's session, another session's CSRF token":
      return change ? 403 : route.ok;
    case 'agent token':
      return 403;
    case "owner's key":
    case 'admin key':
    case 'admin key (environment)':
    // RFC 7235: `credentials = auth-scheme [ 1*SP token68 ]`; more than one space is still one key.
    case 'two spaces before the key':
      return route.ok;
    default:
      return 401;
  }
}

type BeatCredential = 'no header' | 'unknown token' | "other instance's token" | 'rotated (old) token' | 'operator key' | 'right token';
const BEAT_EXPECTED: Record<BeatCredential, number> = {
  'no header': 401,
  'unknown token': 401,
  "other instance's token": 403,
  'rotated (old) token': 401,
  'operator key': 401,
  'right token': 200,
};

interface Answer {
  label: string;
  status: number;
  text: string;
  /** The token this answer hands out (registration), the one secret it may contain. */
  handsOut?: string;
}

/** All text of every table of the database, one string a row, and where it came from. */
async function databaseRows(backend: TestBackend['name'], databaseUrl: string): Promise<{ rows: string[]; tables: number; raw: Buffer[] }> {
  if (backend === 'sqlite') {
    const file = databaseUrl.slice('sqlite:'.length);
    const db = new Database(file, { readonly: true });
    try {
      const tables = (db.prepare("select name from sqlite_master where type = 'table'").all() as { name: string }[]).map((t) => t.name);
      const rows = tables.flatMap((t) => db.prepare(`select * from "${t}"`).all().map((r) => JSON.stringify(r)));
      // The pages themselves too: a secret in a freed page or the WAL would not show in a query.
      const raw = [file, `${file}-wal`].filter((f) => existsSync(f)).map((f) => readFileSync(f));
      return { rows, tables: tables.length, raw };
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows: tables } = await client.query<{ table_name: string }>(
      "select table_name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE'",
    );
    const rows: string[] = [];
    for (const { table_name } of tables) {
      const result = await client.query<{ row: string }>(`select row_to_json(t)::text as row from "${table_name}" t`);
      rows.push(...result.rows.map((r) => r.row));
    }
    return { rows, tables: tables.length, raw: [] };
  } finally {
    await client.end();
  }
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`auth matrix (${backend.name})`, () => {
    let db: Awaited<ReturnType<TestBackend['open']>>;
    let server: ServerProcess;
    const keys = { alice: '', bob: '', root: '' };
    /** Dashboard sessions: the cookie as a browser sends it back, and the CSRF token the login answered. */
    const sessions = { alice: { cookie: '', csrf: '' }, bob: { cookie: '', csrf: '' }, gone: { cookie: '', csrf: '' } };
    const tokens = { alice: '', bob: '', rotatedOld: '', rotatedNew: '' };
    /** Every API key and agent token that exists or existed. */
    const secrets = new Set<string>();
    const answers: Answer[] = [];
    let cells = 0;

    beforeAll(async () => {
      db = await backend.open();
      keys.alice = await createApiKey(db.store, 'alice', false, Date.now());
      keys.bob = await createApiKey(db.store, 'bob', false, Date.now());
      keys.root = await createApiKey(db.store, 'root', true, Date.now());
      await db.store.close();
      server = await startServerProcess({
        env: {
          DUMONT_DATABASE_URL: db.databaseUrl,
          // Request lines are logged at debug: the logs to search must hold every request.
          DUMONT_LOG_LEVEL: 'debug',
          // The failure limit is checked in auth-rate-limit.test.ts; here every cell must reach authentication.
          DUMONT_AUTH_FAILURES_PER_MINUTE: '0',
        },
      });
      for (const key of [...Object.values(keys), server.adminKey]) secrets.add(key);

      const register = async (key: string, instanceId: number) => {
        const res = await call(`setup: register ${instanceId}`, 'POST', '/api/v1/agent/instances', `Bearer ${key}`, { instance_id: instanceId });
        expect(res.status, res.text).toBeLessThan(300);
        return res.json.agent_token as string;
      };
      const login = async (key: string) => {
        const res = await fetch(`${server.url}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: key }) });
        expect(res.status).toBe(200);
        const cookie = res.headers.getSetCookie().find((c) => c.startsWith('dumont_session='))!.split(';')[0]!;
        secrets.add(cookie.slice('dumont_session='.length));
        return { cookie, csrf: ((await res.json()) as { csrf_token: string }).csrf_token };
      };
      sessions.alice = await login(keys.alice);
      sessions.bob = await login(keys.bob);
      sessions.gone = await login(keys.alice);
      const logout = await call('setup: logout', 'DELETE', '/api/v1/session', { cookie: sessions.gone.cookie, 'x-csrf-token': sessions.gone.csrf });
      expect(logout.status).toBe(204);
      tokens.alice = await register(keys.alice, ALICE_INSTANCE);
      tokens.bob = await register(keys.bob, BOB_INSTANCE);
      await register(keys.alice, REGISTER_TARGET);
      tokens.rotatedOld = await register(keys.alice, ROTATED_INSTANCE);
      tokens.rotatedNew = await register(keys.alice, ROTATED_INSTANCE);
      expect((await beat(tokens.alice, ALICE_INSTANCE, 'setup: first beat')).status).toBe(200);
    }, 60_000);

    afterAll(async () => {
      await server?.stop();
      await db?.dispose();
    });

    async function call(label: string, method: string, path: string, authorization: string | null | Record<string, string>, body?: unknown) {
      const headers: Record<string, string> = typeof authorization === 'object' && authorization !== null ? { ...authorization } : {};
      if (typeof authorization === 'string') headers.authorization = authorization;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const response = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await response.text();
      const json = text ? JSON.parse(text) : undefined;
      const answer: Answer = { label, status: response.status, text };
      if (typeof json?.agent_token === 'string') {
        answer.handsOut = json.agent_token;
        secrets.add(json.agent_token);
      }
      answers.push(answer);
      return { status: response.status, json, text };
    }

    function beat(token: string | null, instanceId: number, label: string) {
      const body = { instance_id: instanceId, hostname: `gpu-${instanceId}`, timestamp: new Date().toISOString(), gpu_metrics: { utilization_percent: 80 } };
      return call(label, 'POST', '/api/v1/agent/status', token === null ? null : `Bearer ${token}`, body);
    }

    function header(credential: Credential): string | null | Record<string, string> {
      const cookie = (session: { cookie: string }) => ({ cookie: session.cookie });
      switch (credential) {
        case "owner's session":
          return { ...cookie(sessions.alice), 'x-csrf-token': sessions.alice.csrf, origin: server.url };
        case "owner's session, no CSRF token":
          return cookie(sessions.alice);
        case "owner's session, another site's Origin":
          return { ...cookie(sessions.alice), 'x-csrf-token': sessions.alice.csrf, origin: 'https://attacker.example' };
        case "owner's session, another session's CSRF token":
          return { ...cookie(sessions.alice), 'x-csrf-token': sessions.bob.csrf };
        case "other owner's session":
          return { ...cookie(sessions.bob), 'x-csrf-token': sessions.bob.csrf };
        case 'logged-out session':
          return { ...cookie(sessions.gone), 'x-csrf-token': sessions.gone.csrf };
        case 'no header':
          return null;
        case '`Bearer`':
          return 'Bearer';
        case '`Basic x`':
          return 'Basic x';
        case 'two tokens':
          return `Bearer ${keys.alice} ${keys.alice}`;
        case 'two spaces before the key':
          return `Bearer  ${keys.alice}`;
        case '10 KB token':
          return `Bearer ${'k'.repeat(10 * 1024)}`;
        case 'unknown key':
          return `Bearer dmk_${randomBytes(32).toString('base64url')}`;
        case "other owner's key":
          return `Bearer ${keys.bob}`;
        case 'agent token':
          return `Bearer ${tokens.alice}`;
        case "owner's key":
          return `Bearer ${keys.alice}`;
        case 'admin key':
          return `Bearer ${keys.root}`;
        case 'admin key (environment)':
          return `Bearer ${server.adminKey}`;
      }
    }

    it('every operator route × every credential, and the heartbeat × every token, answer as the table says', async () => {
      const expected: Record<string, Record<string, number>> = {};
      const actual: Record<string, Record<string, number>> = {};
      /** Refusals whose body is not the catalogue's code for their status. */
      const badBodies: string[] = [];
      for (const route of ROUTES) {
        expected[route.name] = {};
        actual[route.name] = {};
        for (const credential of CREDENTIALS) {
          const res = await call(`${route.name} × ${credential}`, route.method, route.path, header(credential), route.body);
          expected[route.name]![credential] = expectedOperator(route, credential);
          actual[route.name]![credential] = res.status;
          if (res.status >= 400 && (res.json?.error !== errorOf(res.status) || typeof res.json?.message !== 'string')) {
            badBodies.push(`${route.name} × ${credential}: ${res.status} ${res.text}`);
          }
          cells += 1;
        }
      }

      const beatToken: Record<BeatCredential, [string | null, number]> = {
        'no header': [null, ALICE_INSTANCE],
        'unknown token': [`dmt_${randomBytes(32).toString('base64url')}`, ALICE_INSTANCE],
        "other instance's token": [tokens.bob, ALICE_INSTANCE],
        'rotated (old) token': [tokens.rotatedOld, ROTATED_INSTANCE],
        'operator key': [keys.alice, ALICE_INSTANCE],
        'right token': [tokens.alice, ALICE_INSTANCE],
      };
      expected['POST /agent/status'] = {};
      actual['POST /agent/status'] = {};
      for (const [credential, [token, instanceId]] of Object.entries(beatToken) as [BeatCredential, [string | null, number]][]) {
        const res = await beat(token, instanceId, `POST /agent/status × ${credential}`);
        expected['POST /agent/status']![credential] = BEAT_EXPECTED[credential];
        actual['POST /agent/status']![credential] = res.status;
        if (res.status >= 400 && res.json?.error !== errorOf(res.status)) badBodies.push(`POST /agent/status × ${credential}: ${res.status} ${res.text}`);
        cells += 1;
      }
      expect(actual).toEqual(expected);
      expect(badBodies).toEqual([]);

      // The register row re-registered Alice's instance with admin keys too: it is still hers.
      const mine = await call('check: owner kept', 'GET', `/api/v1/agent/instances/${REGISTER_TARGET}`, `Bearer ${keys.alice}`);
      expect(mine.status).toBe(200);
      expect((await call('check: other owner', 'GET', `/api/v1/agent/instances/${REGISTER_TARGET}`, `Bearer ${keys.bob}`)).status).toBe(404);
      expect(cells).toBe(ROUTES.length * CREDENTIALS.length + Object.keys(BEAT_EXPECTED).length);
      recordFigure({ suite: SUITE, figure: 'route × credential cells checked', value: cells, note: `${ROUTES.length} operator routes × ${CREDENTIALS.length} credentials + heartbeat × ${Object.keys(BEAT_EXPECTED).length}; ${backend.name}` });
    });

    it('no API key, agent token or session token is stored in clear: every column of every table', async () => {
      expect(secrets.size).toBeGreaterThanOrEqual(4 + 6 + 3);
      const { rows, tables, raw } = await databaseRows(backend.name, db.databaseUrl);
      expect(tables).toBeGreaterThanOrEqual(4);
      expect(rows.length).toBeGreaterThan(20);
      const found = [...secrets].filter((secret) => rows.some((row) => row.includes(secret)) || raw.some((file) => file.includes(secret)));
      // The scan sees what is stored (the hashes), so it would see a secret stored beside them.
      expect(rows.some((row) => row.includes(hashSecret(keys.alice)))).toBe(true);
      expect(rows.some((row) => row.includes(hashSecret(tokens.alice)))).toBe(true);
      expect(rows.some((row) => row.includes(hashSecret(sessions.alice.cookie.slice('dumont_session='.length))))).toBe(true);
      expect(found).toEqual([]);
      recordFigure({ suite: SUITE, figure: 'secrets found in clear in the database', value: found.length, note: `${secrets.size} secrets, ${tables} tables, ${rows.length} rows; ${backend.name}` });
    });

    it('no API key, agent token or session token in the debug logs, nor in any answer but the one that hands a token out', async () => {
      const inAnswers = answers.flatMap((a) => [...secrets].filter((s) => s !== a.handsOut && a.text.includes(s)).map(() => a.label));
      expect(inAnswers).toEqual([]);
      await server.stop();
      const logs = server.output();
      // Request lines were on: every request of the matrix is in the log.
      expect(logs.match(/"msg":"incoming request"/g)?.length ?? 0).toBeGreaterThanOrEqual(cells);
      const inLogs = [...secrets].filter((s) => logs.includes(s));
      expect(inLogs).toEqual([]);
      recordFigure({ suite: SUITE, figure: 'secrets found in clear in logs and answers', value: inLogs.length + inAnswers.length, note: `${answers.length} answers, ${logs.length} bytes of debug log; ${backend.name}` });
    });
  });
}
