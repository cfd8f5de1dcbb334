import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../admin-key.js';
import { testBackends } from '../test-support/backends.js';
import { TestServer, T0 } from '../test-support/test-server.js';

/**
 * Instance labels over real HTTP on both engines: set at registration and by PATCH (a merge patch),
 * shown by list and detail, selected by `label=` on the list and on savings; refused input is a 400
 * naming the field that leaves everything as it was.
 */

const LIST = '/api/v1/agent/instances';
const H = 3_600_000;
const ids = (body: { instances: { instance_id: number }[] }) => body.instances.map((i) => i.instance_id);

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`instance labels (${backend.name})`, () => {
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

    const register = (body: Record<string, unknown>, token?: string) => t.request('POST', LIST, { body, token });
    const patch = (id: number, body: unknown, token?: string) => t.request('PATCH', `${LIST}/${id}`, { body, token });
    const detail = async (id: number) => (await t.request('GET', `${LIST}/${id}`)).json;
    /** What a refused request must leave as it was: the list, and each instance's detail and events. */
    const snapshot = async (instanceIds: number[]) => {
      const parts = [(await t.request('GET', `${LIST}?limit=1000`)).text];
      for (const id of instanceIds) parts.push((await t.request('GET', `${LIST}/${id}`)).text, (await t.request('GET', `${LIST}/${id}/events`)).text);
      return parts.join('\n');
    };

    it('registration stores labels; re-registration without labels keeps them, with labels replaces them', async () => {
      expect((await register({ instance_id: 1, labels: { team: 'vision', kind: 'notebook' } })).status).toBe(201);
      expect((await register({ instance_id: 2 })).status).toBe(201);
      expect((await detail(1)).labels).toEqual({ kind: 'notebook', team: 'vision' });
      expect((await detail(2)).labels).toEqual({});
      const list = (await t.request('GET', LIST)).json;
      expect(list.instances.map((i: { labels: unknown }) => i.labels)).toEqual([{ kind: 'notebook', team: 'vision' }, {}]);

      expect((await register({ instance_id: 1, hostname: 'renamed' })).status).toBe(200);
      expect((await detail(1)).labels).toEqual({ kind: 'notebook', team: 'vision' });
      expect((await register({ instance_id: 1, labels: { team: 'nlp' } })).status).toBe(200);
      expect((await detail(1)).labels).toEqual({ team: 'nlp' });
      const events = (await t.request('GET', `${LIST}/1/events`)).json.events;
      expect(events[0]).toMatchObject({ type: 'instance_updated', data: { labels: { team: 'nlp' } } });
    });

    it('PATCH merges: null removes, others set, unnamed kept; recorded as an event naming who did it', async () => {
      await register({ instance_id: 5, labels: { team: 'vision', kind: 'notebook', tier: 'gold' } });
      const res = await patch(5, { labels: { kind: null, team: 'nlp', spot: '' } });
      expect(res.status, res.text).toBe(200);
      expect(res.json.labels).toEqual({ spot: '', team: 'nlp', tier: 'gold' });
      expect((await detail(5)).labels).toEqual({ spot: '', team: 'nlp', tier: 'gold' });
      const [event] = (await t.request('GET', `${LIST}/5/events`)).json.events;
      expect(event).toMatchObject({ type: 'instance_updated', reason: 'instance updated by admin', data: { labels: { kind: null, team: 'nlp', spot: '' } } });
      // Provider fields and labels in one PATCH.
      const both = await patch(5, { price_per_hour: 2, labels: { tier: null } });
      expect(both.json).toMatchObject({ price_per_hour: 2, labels: { spot: '', team: 'nlp' } });
    });

    it('refuses bad labels with a 400 naming the field, and nothing is stored', async () => {
      const full = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v']));
      await register({ instance_id: 7, labels: full });
      await register({ instance_id: 8, labels: { team: 'vision' } });
      const before = await snapshot([7, 8]);
      const cases: [string, () => ReturnType<typeof register>, string, string?][] = [
        ['upper-case key at registration', () => register({ instance_id: 9, labels: { Team: 'vision' } }), 'labels.Team', "labels.Team: a label key is lowercase letters, digits, '.', '_' or '-'"],
        ['bad value at registration', () => register({ instance_id: 9, labels: { team: 'a b' } }), 'labels.team', 'labels.team: a label value'],
        ['17 labels at registration', () => register({ instance_id: 9, labels: { ...full, extra: 'x' } }), 'labels', 'labels: at most 16 labels per instance; this would leave 17'],
        ['non-string value at registration', () => register({ instance_id: 9, labels: { team: 1 } }), 'labels.team'],
        ['labels not an object', () => register({ instance_id: 9, labels: ['team'] }), 'labels'],
        ['bad key re-registering', () => register({ instance_id: 8, labels: { 'te am': 'x' } }), 'labels.te am'],
        ['bad key in PATCH', () => patch(8, { labels: { '-x': 'y' } }), 'labels.-x'],
        ['bad value in PATCH', () => patch(8, { labels: { team: 'x/y' } }), 'labels.team'],
        ['a 17th label by PATCH', () => patch(7, { labels: { extra: 'x' } }), 'labels', 'labels: at most 16 labels per instance; this would leave 17'],
        ['a 17th label by PATCH beside a valid price', () => patch(7, { price_per_hour: 9, labels: { extra: 'x' } }), 'labels'],
      ];
      for (const [name, send, field, message] of cases) {
        const res = await send();
        expect(res.status, `${name}: ${res.text}`).toBe(400);
        expect(res.json, name).toMatchObject({ error: 'invalid_request', field });
        if (message) expect(res.json.message, name).toContain(message);
      }
      expect((await t.request('GET', `${LIST}/9`)).status).toBe(404);
      expect(await snapshot([7, 8])).toBe(before);
      // Swapping one label for another at the limit is fine.
      expect((await patch(7, { labels: { k0: null, extra: 'x' } })).status).toBe(200);
    });

    it("PATCH of another owner's instance answers 404 as a missing one and changes nothing", async () => {
      const alice = await createApiKey(t.server.store, 'alice', false, T0);
      const bob = await createApiKey(t.server.store, 'bob', false, T0);
      await register({ instance_id: 20, labels: { team: 'vision' } }, alice);
      const before = await snapshot([20]);
      const other = await patch(20, { labels: { team: 'stolen' } }, bob);
      expect(other.status).toBe(404);
      expect(other.json).toEqual({ error: 'not_found', message: 'instance 20 not found', field: 'instance_id' });
      expect(await snapshot([20])).toBe(before);
      expect((await patch(20, { labels: { team: 'audio' } }, alice)).json.labels).toEqual({ team: 'audio' });
      // The owner's list sees its labels; the selector never reaches another owner's instances.
      await register({ instance_id: 21, labels: { team: 'audio' } }, bob);
      expect(ids((await t.request('GET', `${LIST}?label=team=audio`, { token: alice })).json)).toEqual([20]);
      expect(ids((await t.request('GET', `${LIST}?label=team=audio`)).json)).toEqual([20, 21]);
    });

    it('lists by label selector: repeated terms all match, count follows, pages keep the selector', async () => {
      for (let id = 1; id <= 9; id++) {
        const labels: Record<string, string> = { team: id % 3 === 0 ? 'vision' : 'nlp' };
        if (id % 2 === 1) labels.kind = 'notebook';
        await register({ instance_id: id, labels });
      }
      const one = (await t.request('GET', `${LIST}?label=team=vision`)).json;
      expect(ids(one)).toEqual([3, 6, 9]);
      expect(one.count).toBe(3);
      // The status counters stay fleet-wide, as they do for `q`.
      expect(one.offline_count).toBe(9);
      const two = (await t.request('GET', `${LIST}?label=team=vision&label=kind=notebook`)).json;
      expect(ids(two)).toEqual([3, 9]);
      expect(two.count).toBe(2);
      expect(ids((await t.request('GET', `${LIST}?label=team!=vision&label=!kind`)).json)).toEqual([2, 4, 8]);
      expect(ids((await t.request('GET', `${LIST}?label=kind&sort=-instance_id`)).json)).toEqual([9, 7, 5, 3, 1]);

      const p1 = (await t.request('GET', `${LIST}?label=kind=notebook&limit=2`)).json;
      expect(ids(p1)).toEqual([1, 3]);
      expect(p1.count).toBe(5);
      const p2 = (await t.request('GET', `${LIST}?label=kind=notebook&limit=2&cursor=${p1.next_cursor}`)).json;
      expect(ids(p2)).toEqual([5, 7]);
      expect(p2.count).toBe(5);
      const p3 = (await t.request('GET', `${LIST}?label=kind=notebook&limit=2&cursor=${p2.next_cursor}`)).json;
      expect(ids(p3)).toEqual([9]);
      expect(p3.next_cursor).toBeNull();
    });

    it('refuses a bad selector term with a 400 naming `label` and quoting the term', async () => {
      for (const path of [LIST, '/api/v1/agent/savings']) {
        for (const term of ['Team=vision', '=x', 'team=a%20b', 'team==x']) {
          const res = await t.request('GET', `${path}?label=team=ok&label=${term}`);
          expect(res.status, `${path} ${term}: ${res.text}`).toBe(400);
          expect(res.json).toMatchObject({ error: 'invalid_request', field: 'label' });
          expect(res.json.message).toContain(JSON.stringify(decodeURIComponent(term)));
        }
        const many = Array.from({ length: 17 }, (_, i) => `label=k${i}`).join('&');
        expect((await t.request('GET', `${path}?${many}`)).json).toMatchObject({ error: 'invalid_request', field: 'label' });
      }
    });

    it('savings honour the selector', async () => {
      await register({ instance_id: 31, labels: { team: 'vision' } });
      await register({ instance_id: 32, labels: { team: 'nlp' } });
      await register({ instance_id: 33 });
      for (const id of [31, 32, 33]) {
        await t.server.store.insertSavings({ instance_id: id, owner: 'admin', kind: 'hibernated', started_at: T0 - 2 * H, ended_at: T0 - H, gpu_count: 2, price_per_hour: 1 });
      }
      const all = (await t.request('GET', '/api/v1/agent/savings')).json;
      expect(ids(all)).toEqual([31, 32, 33]);
      expect(all.gpu_hours_saved).toBe(6);
      const vision = (await t.request('GET', '/api/v1/agent/savings?label=team=vision')).json;
      expect(ids(vision)).toEqual([31]);
      expect(vision).toMatchObject({ hibernated_hours: 1, gpu_hours_saved: 2, usd_saved: 1 });
      expect(ids((await t.request('GET', '/api/v1/agent/savings?label=!team')).json)).toEqual([33]);
    });

    it('an instance moved to another owner loses its labels, and its old owner’s savings say nothing of the new owner’s', async () => {
      const aliceKey = await createApiKey(t.server.store, 'alice', false, T0);
      expect((await register({ instance_id: 41, labels: { customer: 'acme-private' } }, aliceKey)).status).toBe(201);
      await t.server.store.insertSavings({ instance_id: 41, owner: 'alice', kind: 'hibernated', started_at: T0 - 2 * H, ended_at: T0 - H, gpu_count: 1, price_per_hour: null });
      expect(ids((await t.request('GET', '/api/v1/agent/savings?label=customer=acme-private', { token: aliceKey })).json)).toEqual([41]);

      // The admin hands it to bob without naming labels: alice's do not go with it.
      expect((await register({ instance_id: 41, owner: 'bob' })).status).toBe(200);
      expect((await detail(41)).labels).toEqual({});
      expect((await t.request('GET', `${LIST}/41/events`)).json.events[0]).toMatchObject({ type: 'token_rotated', data: { owner: 'bob', labels_cleared: true } });
      const bobKey = await createApiKey(t.server.store, 'bob', false, T0);
      expect((await patch(41, { labels: { project: 'topsecret' } }, bobKey)).status).toBe(200);
      // Alice keeps her savings on it, but no selector about bob's labels matches them.
      expect(ids((await t.request('GET', '/api/v1/agent/savings', { token: aliceKey })).json)).toEqual([41]);
      for (const selector of ['project=topsecret', 'project', '!project', 'project!=other']) {
        expect(ids((await t.request('GET', `/api/v1/agent/savings?label=${selector}`, { token: aliceKey })).json), selector).toEqual([]);
      }
    });

    it('two first registrations of one id at once: one registers, the other re-registers, never a 5xx', async () => {
      for (let round = 0; round < 5; round++) {
        const id = 50 + round;
        const answers = await Promise.all([register({ instance_id: id }), register({ instance_id: id, hostname: 'x', labels: { team: 'a' } })]);
        expect(answers.map((a) => a.status).sort(), answers.map((a) => a.text).join(' | ')).toEqual([200, 201]);
        expect(answers.filter((a) => a.json.rotated).length).toBe(1);
      }
    });
  });
}
