import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HeartbeatRequest, MAX_COMMAND_ARGS_BYTES } from '@dumont/protocol';
import { SqliteStore } from '../store/sqlite-store.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';
import { MAX_JSON_DEPTH, nestsDeeperThan, validatorCompiler } from './validation.js';

/**
 * Items 5, 6 (validation side) and 8 of the "trustworthy hibernation" issue: input the API used to
 * answer with a 500, store as it came, or read its own way. Each test here failed on the code before.
 */

const nested = (levels: number) => '['.repeat(levels) + ']'.repeat(levels);

/** Every observable of one instance, as text: an invalid request must leave all of it as it was. */
async function snapshot(t: TestServer, id: number): Promise<string> {
  const parts = await Promise.all(
    [`/api/v1/agent/instances/${id}`, `/api/v1/agent/instances/${id}/events`, `/api/v1/agent/instances/${id}/commands`].map(
      async (path) => (await t.request('GET', path)).text,
    ),
  );
  return parts.join('\n');
}

describe('strict input (sqlite)', () => {
  let t: TestServer;
  let token: string;
  const beatText = (rest: string) => `{"instance_id":42,"hostname":"gpu-42","timestamp":"${new Date(t.clock.now()).toISOString()}"${rest}}`;

  beforeAll(async () => {
    t = await new TestServer(() => SqliteStore.open(':memory:')).start();
    token = await t.register(42);
    expect((await t.beat(token, { instance_id: 42 })).status).toBe(200);
  });
  afterAll(() => t.close());

  describe('nesting depth (item 5)', () => {
    // About 48 KB: under the 64 KiB body limit. The old code parsed it, then overflowed the stack.
    const deep = nested(8000);
    const cases: [string, string, string, () => string, string?][] = [
      ['PATCH …/hibernation', 'PATCH', '/api/v1/agent/instances/42/hibernation', () => `{"enabled":true,"x":${deep}}`],
      ['POST …/commands args', 'POST', '/api/v1/agent/instances/42/commands', () => `{"type":"snapshot","args":{"a":${deep}}}`],
      ['heartbeat gpus[]', 'POST', '/api/v1/agent/status', () => beatText(`,"gpus":[{"index":0,"x":${deep}}]`), 'agent'],
      ['heartbeat collector_errors[]', 'POST', '/api/v1/agent/status', () => beatText(`,"collector_errors":[{"collector":"c","message":"m","x":${deep}}]`), 'agent'],
    ];
    for (const [name, method, path, body, who] of cases) {
      it(`8,000 levels in ${name} → 400 field body, nothing changed`, async () => {
        const before = await snapshot(t, 42);
        const res = await t.request(method, path, { body: body(), token: who === 'agent' ? token : undefined });
        expect(res.status).toBe(400);
        expect(res.json).toEqual({ error: 'invalid_request', message: `body: nested deeper than ${MAX_JSON_DEPTH} levels`, field: 'body' });
        expect(await snapshot(t, 42)).toBe(before);
      });
    }

    it(`${MAX_JSON_DEPTH} levels are accepted, ${MAX_JSON_DEPTH + 1} are not`, async () => {
      // The body is level 1 and `args` level 2, so `a` holds the remaining levels.
      const at = (total: number) => `{"type":"snapshot","args":{"a":${nested(total - 2)}}}`;
      const ok = await t.request('POST', '/api/v1/agent/instances/42/commands', { body: at(MAX_JSON_DEPTH) });
      expect(ok.status).toBe(201);
      const over = await t.request('POST', '/api/v1/agent/instances/42/commands', { body: at(MAX_JSON_DEPTH + 1) });
      expect(over.status).toBe(400);
      expect(over.json.field).toBe('body');
    });

    it('brackets inside strings, escaped quotes included, do not count', async () => {
      const text = JSON.stringify({ type: 'snapshot', args: { a: `\\"${'[{'.repeat(500)}\\\\"${'['.repeat(500)}` } });
      expect((await t.request('POST', '/api/v1/agent/instances/42/commands', { body: text })).status).toBe(201);
    });
  });

  describe('unknown fields (item 5)', () => {
    it('a heartbeat drops unknown fields at every level and stores none of them', async () => {
      const junk = 'j'.repeat(60_000);
      // A beat is applied only when it is newer than the last one.
      t.clock.advance(1000);
      const res = await t.request('POST', '/api/v1/agent/status', {
        token,
        body: beatText(
          `,"extra":1,"gpu_metrics":{"utilization_percent":5,"extra":2},"gpus":[{"index":0,"utilization_percent":5,"junk":"${junk}"}],` +
            `"collector_errors":[{"collector":"c","message":"m","extra":3}],"command_results":[{"id":"nope","status":"failed","extra":4}]`,
        ),
      });
      expect(res.status).toBe(200);
      const row = await t.server.store.getInstance(42);
      expect(row!.readings.gpus).toEqual([{ index: 0, utilization_percent: 5 }]);
      expect(row!.readings.collectorErrors).toEqual([{ collector: 'c', message: 'm' }]);
      const everything = await snapshot(t, 42);
      expect(everything).not.toContain('jjjj');
      expect(everything).not.toContain('extra');
    });

    const refused: [string, string, string, unknown, string][] = [
      ['PATCH …/hibernation', 'PATCH', '/api/v1/agent/instances/42/hibernation', { enabled: false, treshold_minutes: 5 }, 'treshold_minutes'],
      ['POST …/commands', 'POST', '/api/v1/agent/instances/42/commands', { type: 'snapshot', arg: { a: 1 } }, 'arg'],
      ['POST /agent/instances', 'POST', '/api/v1/agent/instances', { instance_id: 77, hostnme: 'gpu-77' }, 'hostnme'],
    ];
    for (const [name, method, path, body, field] of refused) {
      it(`${name} with an unknown field → 400 naming it, nothing changed`, async () => {
        const before = await snapshot(t, 42);
        const res = await t.request(method, path, { body });
        expect(res.status).toBe(400);
        expect(res.json).toEqual({ error: 'invalid_request', message: `${field}: unknown field`, field });
        expect(await snapshot(t, 42)).toBe(before);
        expect((await t.request('GET', '/api/v1/agent/instances/77')).status).toBe(404);
      });
    }

    it("a command's args stay a free record, within their own size bound", async () => {
      const free = await t.request('POST', '/api/v1/agent/instances/42/commands', { body: { type: 'update', args: { version: '1.2.0', any: { thing: [1, 'x'] } } } });
      expect(free.status).toBe(201);
      expect(free.json.args).toEqual({ version: '1.2.0', any: { thing: [1, 'x'] } });
      const big = await t.request('POST', '/api/v1/agent/instances/42/commands', { body: { type: 'update', args: { blob: 'b'.repeat(MAX_COMMAND_ARGS_BYTES) } } });
      expect(big.status).toBe(400);
      expect(big.json).toMatchObject({ error: 'invalid_request', field: 'args' });
    });
  });

  describe('strict integers in query strings and paths (item 8)', () => {
    it.each(['0x10', '1e3', '+5', '-5', ' 5', '5 ', '5.0', '5.5', '', '0b11', 'Infinity', '%35'])('keep-alive?minutes=%j → 400 field minutes', async (minutes) => {
      const before = await snapshot(t, 42);
      const res = await t.request('POST', `/api/v1/agent/instances/42/keep-alive?minutes=${encodeURIComponent(minutes)}`);
      expect(res.status).toBe(400);
      expect(res.json).toMatchObject({ error: 'invalid_request', field: 'minutes' });
      expect(await snapshot(t, 42)).toBe(before);
    });

    it('plain decimal digits still work', async () => {
      const res = await t.request('POST', '/api/v1/agent/instances/42/keep-alive?minutes=16');
      expect(res.json.message).toBe('Hibernation postponed by 16 minutes');
      expect((await t.request('GET', '/api/v1/agent/instances/042')).json.instance_id).toBe(42);
    });

    it('/instances/0xC351 is not instance 50001; ids past 2^53 are refused', async () => {
      await t.register(50001);
      for (const id of ['0xC351', '50001.0', '5.0001e4', '+50001']) {
        const res = await t.request('GET', `/api/v1/agent/instances/${id}`);
        expect(res.status, id).toBe(400);
        expect(res.json).toMatchObject({ error: 'invalid_request', field: 'instance_id' });
      }
      for (const id of ['9007199254740992', '9007199254740993', '1'.repeat(60)]) {
        expect((await t.request('GET', `/api/v1/agent/instances/${id}`)).json).toMatchObject({ error: 'invalid_request', field: 'instance_id' });
      }
    });

    it('limit of the list and of the events follows the same rule', async () => {
      for (const path of ['/api/v1/agent/instances?limit=0x10', '/api/v1/agent/instances?limit=1e2', '/api/v1/agent/instances/42/events?limit=2.0']) {
        expect((await t.request('GET', path)).json, path).toMatchObject({ error: 'invalid_request', field: 'limit' });
      }
    });

    it('a path the router cannot decode, or one too long for it, answers in the API error shape', async () => {
      const bad = await t.request('GET', '/api/v1/agent/instances/%ZZ');
      expect(bad.status).toBe(400);
      expect(bad.json).toEqual({ error: 'invalid_request', message: 'url: the path is not valid percent-encoding', field: 'url' });
      const long = await t.request('GET', `/api/v1/agent/instances/${'9'.repeat(200)}`);
      expect(long.status).toBe(400);
      expect(long.json).toMatchObject({ error: 'invalid_request', field: 'url' });
    });
  });

  describe('timestamps (item 6, validation side)', () => {
    // ajv-formats accepted all three; parseTimestamp, which the services use, reads none of them.
    it.each(['2026-03-01T12:00:00+0100', '2026-03-01T12:00:00+01', '2026-03-01T12:00:00.1234567890Z'])('%s → 400', async (ts) => {
      for (const field of ['timestamp', 'last_activity']) {
        const body = { instance_id: 42, hostname: 'gpu-42', timestamp: new Date(t.clock.now()).toISOString(), [field]: ts };
        const res = await t.request('POST', '/api/v1/agent/status', { token, body });
        expect(res.status, field).toBe(400);
        expect(res.json).toMatchObject({ error: 'invalid_request', field });
      }
    });

    it('the schema accepts no string that parseTimestamp refuses', async () => {
      const { parseTimestamp } = await import('@dumont/protocol');
      const validate = validatorCompiler({ schema: HeartbeatRequest, httpPart: 'body', method: 'POST', url: '/api/v1/agent/status' }) as (b: unknown) => boolean;
      const stamp = fc.oneof(
        fc.string({ maxLength: 40 }),
        fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
        fc
          .tuple(fc.integer({ min: 0, max: 9999 }), fc.integer({ min: 0, max: 13 }), fc.integer({ min: 0, max: 32 }), fc.integer({ min: 0, max: 25 }), fc.integer({ min: 0, max: 61 }), fc.constantFrom('Z', 'z', '+01:00', '+0100', '-23:59', '+24:00', ''), fc.constantFrom('', '.5', '.123456789', '.1234567890'))
          .map(([y, mo, d, h, s, zone, frac]) => `${String(y).padStart(4, '0')}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}T${String(h).padStart(2, '0')}:00:${String(s).padStart(2, '0')}${frac}${zone}`),
      );
      fc.assert(
        fc.property(stamp, (ts) => {
          if (validate({ instance_id: 1, hostname: 'h', timestamp: ts })) expect(parseTimestamp(ts)).not.toBeNull();
        }),
        { numRuns: 2000 },
      );
    });
  });
});

describe('nestsDeeperThan', () => {
  const depthOf = (v: unknown): number =>
    v !== null && typeof v === 'object' ? 1 + Math.max(0, ...Object.values(v as object).map(depthOf)) : 0;

  it('agrees with the depth of the parsed value, whatever the strings hold', () => {
    // Strings full of brackets, quotes and backslashes are the case a naive count gets wrong.
    const tricky = fc.string({ unit: fc.constantFrom('[', ']', '{', '}', '"', '\\', 'a', ' ') });
    const value = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small', withCrossShrink: true }, tricky, fc.integer(), fc.constant(null), fc.array(tie('node'), { maxLength: 3 }), fc.dictionary(tricky, tie('node'), { maxKeys: 3 })),
    })).node;
    fc.assert(
      fc.property(value, fc.integer({ min: 0, max: 8 }), (v, limit) => {
        expect(nestsDeeperThan(JSON.stringify(v, null, limit % 2 ? 1 : undefined), limit)).toBe(depthOf(v) > limit);
      }),
      { numRuns: 3000 },
    );
  });
});

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`U+0000 in strings (${backend.name})`, () => {
    let t: TestServer;
    let db: Awaited<ReturnType<typeof backend.open>>;
    beforeAll(async () => {
      db = await backend.open();
      t = await new TestServer(async () => db.store).start();
    });
    afterAll(async () => {
      await t.close();
      await db.dispose();
    });

    // PostgreSQL's text cannot hold U+0000: these were 500s there, and stored as sent on SQLite.
    it('an operator request with U+0000 in a string → 400 naming the field, nothing stored', async () => {
      const host = await t.request('POST', '/api/v1/agent/instances', { body: '{"instance_id":7,"hostname":"gpu\\u0000-7"}' });
      expect(host.status).toBe(400);
      expect(host.json).toMatchObject({ error: 'invalid_request', field: 'hostname' });
      const owner = await t.request('POST', '/api/v1/agent/instances', { body: '{"instance_id":7,"owner":"team\\u0000"}' });
      expect(owner.json).toMatchObject({ error: 'invalid_request', field: 'owner' });
      expect((await t.request('GET', '/api/v1/agent/instances/7')).status).toBe(404);
    });

    it('a heartbeat keeps its text with U+FFFD in place of U+0000, so a binary hook output cannot wedge the instance', async () => {
      const token = await t.register(8);
      const issued = await t.request('POST', '/api/v1/agent/instances/8/commands', { body: { type: 'snapshot' } });
      expect((await t.beat(token, { instance_id: 8 })).json.commands).toHaveLength(1);
      t.clock.advance(1000);
      const res = await t.beat(token, {
        instance_id: 8,
        hostname: 'gpu\u0000-8',
        agent_version: '1.0\u0000',
        command_results: [{ id: issued.json.id, status: 'failed', detail: 'hook wrote \u0000\u0001 to stderr' }],
      });
      expect(res.status).toBe(200);
      const detail = (await t.request('GET', '/api/v1/agent/instances/8')).json;
      expect(detail.hostname).toBe('gpu\uFFFD-8');
      expect(detail.agent_version).toBe('1.0\uFFFD');
      const command = (await t.request('GET', '/api/v1/agent/instances/8/commands')).json.commands[0];
      expect(command).toMatchObject({ state: 'failed', detail: 'hook wrote \uFFFD\u0001 to stderr' });
    });
  });
}
