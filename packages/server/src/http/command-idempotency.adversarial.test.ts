import { request as httpRequest } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { testBackends } from '../test-support/backends.js';
import { recordFigure, scaled } from '../test-support/reliability.js';
import { TestServer, T0 } from '../test-support/test-server.js';

const busy = (instance_id: number) => ({ instance_id, gpu_metrics: { utilization_percent: 85, memory_used_mb: 75, memory_total_mb: 100 }, process_count: 3 });

/** A raw request: fetch refuses some header values the server must still answer cleanly. */
function rawPost(url: string, path: string, headers: Record<string, string>, body: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`POST …/commands with Idempotency-Key (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      t = await new TestServer(async () => db.store).start();
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    const post = (id: number, body: unknown, key?: string, token?: string) =>
      t.request('POST', `/api/v1/agent/instances/${id}/commands`, { body, ...(token ? { token } : {}), ...(key === undefined ? {} : { headers: { 'idempotency-key': key } }) });
    const commandsOf = async (id: number) => (await t.request('GET', `/api/v1/agent/instances/${id}/commands`)).json.commands;

    it('the same key twice makes one command: 201, then 200 with the same command', async () => {
      await t.register(1);
      const first = await post(1, { type: 'update', args: { version: '1.3.0', channel: 'stable' } }, 'deploy-2026-03-01');
      expect(first.status).toBe(201);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      // Same request with its args in another order: the same request.
      const again = await post(1, { type: 'update', args: { channel: 'stable', version: '1.3.0' } }, 'deploy-2026-03-01');
      expect(again.status).toBe(200);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.json).toEqual(first.json);
      expect(await commandsOf(1)).toHaveLength(1);
      const issued = (await t.request('GET', '/api/v1/agent/instances/1/events')).json.events.filter((e: { type: string }) => e.type === 'command_issued');
      expect(issued).toHaveLength(1);

      // The replay answers the command as it is now.
      const token = await t.register(2);
      const queued = await post(2, { type: 'snapshot' }, 'k');
      await t.beat(token, busy(2));
      const replay = await post(2, { type: 'snapshot', args: {} }, 'k');
      expect(replay.status).toBe(200);
      expect(replay.json).toMatchObject({ id: queued.json.id, state: 'delivered' });
    });

    it('the same key with a different request is 422 idempotency_key_reused, and makes nothing', async () => {
      await t.register(1);
      const first = await post(1, { type: 'update', args: { version: '1.3.0' } }, 'k-1');
      for (const body of [{ type: 'update', args: { version: '1.4.0' } }, { type: 'snapshot' }, { type: 'hibernate' }]) {
        const res = await post(1, body, 'k-1');
        expect(res.status, JSON.stringify(body)).toBe(422);
        expect(res.json).toMatchObject({ error: 'idempotency_key_reused', field: 'idempotency-key' });
        expect(res.json.message).toMatch(/idempotency-key/);
      }
      expect((await commandsOf(1)).map((c: { id: string }) => c.id)).toEqual([first.json.id]);
      expect((await t.request('GET', '/api/v1/agent/instances/1')).json.status).toBe('offline');
    });

    it('keys are per instance; without a key every request makes a command', async () => {
      await t.register(1);
      await t.register(2);
      const a = await post(1, { type: 'snapshot' }, 'same');
      const b = await post(2, { type: 'snapshot' }, 'same');
      expect([a.status, b.status]).toEqual([201, 201]);
      expect(a.json.id).not.toBe(b.json.id);
      expect((await post(1, { type: 'snapshot' })).status).toBe(201);
      expect((await post(1, { type: 'snapshot' })).status).toBe(201);
      expect(await commandsOf(1)).toHaveLength(3);
    });

    it('a hibernate with a key: replayed while the instance is hibernating instead of 409', async () => {
      const token = await t.register(1);
      await t.beat(token, busy(1));
      const first = await post(1, { type: 'hibernate' }, 'stop-now');
      expect(first.status).toBe(201);
      expect((await t.request('GET', '/api/v1/agent/instances/1')).json.status).toBe('hibernating');
      const again = await post(1, { type: 'hibernate' }, 'stop-now');
      expect(again.status).toBe(200);
      expect(again.json.id).toBe(first.json.id);
      // Without the key (or with another) the request is a new one, and the instance is already hibernating.
      expect((await post(1, { type: 'hibernate' })).status).toBe(409);
      expect((await post(1, { type: 'hibernate' }, 'other')).status).toBe(409);
      expect((await commandsOf(1)).filter((c: { type: string }) => c.type === 'hibernate')).toHaveLength(1);
    });

    it('concurrent requests with the same key make one command (queued and hibernate)', async () => {
      const token = await t.register(1);
      await t.beat(token, busy(1));
      const racers = scaled(8, 64);
      for (const body of [{ type: 'snapshot' }, { type: 'hibernate' }]) {
        const answers = await Promise.all(Array.from({ length: racers }, () => post(1, body, `race-${body.type}`)));
        expect(answers.map((a) => a.status).sort(), body.type).toEqual([...Array<number>(racers - 1).fill(200), 201]);
        expect(new Set(answers.map((a) => a.json.id)).size).toBe(1);
      }
      const commands = await commandsOf(1);
      expect(commands.map((c: { type: string }) => c.type).sort()).toEqual(['hibernate', 'snapshot']);
      const suite = 'Idempotency';
      recordFigure({ suite, figure: `concurrent requests with one Idempotency-Key, snapshot and hibernate (${backend.name})`, value: 2 * racers });
      recordFigure({ suite, figure: `commands made per key (${backend.name})`, value: commands.length / 2 });
    });

    it('a malformed key is 400 naming idempotency-key, before anything is made', async () => {
      await t.register(1);
      for (const key of ['', 'x'.repeat(129)]) {
        const res = await post(1, { type: 'snapshot' }, key);
        expect(res.status, `length ${key.length}`).toBe(400);
        expect(res.json).toMatchObject({ error: 'invalid_request', field: 'idempotency-key' });
      }
      expect((await post(1, { type: 'snapshot' }, 'x'.repeat(128))).status).toBe(201);
      // Bytes outside printable ASCII (obs-text, which HTTP lets through).
      const latin1 = await rawPost(t.url, '/api/v1/agent/instances/1/commands', { authorization: `Bearer ${t.adminKey}`, 'idempotency-key': 'caf\u00e9' }, '{"type":"snapshot"}');
      expect(latin1.status).toBe(400);
      expect(latin1.json).toMatchObject({ error: 'invalid_request', field: 'idempotency-key' });
      expect(await commandsOf(1)).toHaveLength(1);
    });

    it("another owner's key with a used idempotency key learns nothing: 404", async () => {
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      const bobKey = await createApiKey(t.server.store, 'bob', false, T0);
      await t.register(1, 'a', aliceKey);
      expect((await post(1, { type: 'snapshot' }, 'k', aliceKey)).status).toBe(201);
      const res = await post(1, { type: 'snapshot' }, 'k', bobKey);
      expect(res.status).toBe(404);
      expect(res.json.error).toBe('not_found');
    });
  });
}
