import { HeartbeatRequest } from '@dumont/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import { TestServer } from '../test-support/test-server.js';
import { validatorCompiler } from './validation.js';

/**
 * `activity_signals` on the wire: a beat carrying the agent's signal hook results is taken, and one whose
 * report the schema refuses is a 400 naming the field (the agent refuses such keys at startup, so this
 * is a broken or hostile client, not a configuration mistake that could take an instance offline).
 */

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`activity_signals on POST /api/v1/agent/status (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    let token: string;
    beforeEach(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      t = await new TestServer(async () => db.store).start();
      token = await t.register(31);
    });
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    it('accepts a beat with activity_signals', async () => {
      const res = await t.beat(token, {
        instance_id: 31,
        activity_signals: [
          { key: 'slurm', state: 'active', detail: '2 jobs running' },
          { key: 'jupyter-hub.v2', state: 'idle' },
          { key: 'backup_job', state: 'unavailable', detail: 'timed out after 5 s' },
        ],
      });
      expect(res.status, res.text).toBe(200);
      expect(res.json.success).toBe(true);
      expect((await t.request('GET', '/api/v1/agent/instances/31')).json.heartbeat_count).toBe(1);
    });

    it('refuses a report with a bad key: 400 naming the field, the beat not applied', async () => {
      const cases: [unknown, string][] = [
        [[{ key: 'Slurm', state: 'active' }], 'activity_signals.0.key'],
        [[{ key: 'ok', state: 'idle' }, { key: '-lead', state: 'idle' }], 'activity_signals.1.key'],
        [[{ key: 'ok', state: 'busy' }], 'activity_signals.0.state'],
        [[{ key: 'ok', state: 'idle', detail: 'x'.repeat(257) }], 'activity_signals.0.detail'],
      ];
      for (const [signals, field] of cases) {
        const res = await t.beat(token, { instance_id: 31, activity_signals: signals });
        expect(res.status, `${field}: ${res.text}`).toBe(400);
        expect(res.json).toMatchObject({ error: 'invalid_request', field });
      }
      expect((await t.request('GET', '/api/v1/agent/instances/31')).json.heartbeat_count).toBe(0);
    });
  });
}

describe('activity_signals under the heartbeat validator', () => {
  const validate = validatorCompiler({ schema: HeartbeatRequest, httpPart: 'body', method: 'POST', url: '/api/v1/agent/status' }) as (b: unknown) => boolean;

  it('drops fields a report does not define, as for the rest of a heartbeat', () => {
    const body = {
      instance_id: 1,
      hostname: 'h',
      timestamp: '2026-03-01T12:00:00Z',
      activity_signals: [{ key: 'slurm', state: 'active', detail: 'busy', pid: 42, nested: { a: 1 } }],
    };
    expect(validate(body)).toBe(true);
    expect(body.activity_signals).toEqual([{ key: 'slurm', state: 'active', detail: 'busy' }]);
  });

  it('takes at most 16 reports', () => {
    const reports = (n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${i}`, state: 'idle' }));
    const beat = (n: number) => ({ instance_id: 1, hostname: 'h', timestamp: '2026-03-01T12:00:00Z', activity_signals: reports(n) });
    expect(validate(beat(16))).toBe(true);
    expect(validate(beat(17))).toBe(false);
  });
});
