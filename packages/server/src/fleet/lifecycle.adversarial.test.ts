import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { judgeIdle, idleFactsOf, type HeartbeatRequest } from '@dumont/protocol';
import { testBackends } from '../test-support/backends.js';
import { recordFigure, scaled } from '../test-support/reliability.js';
import { TestServer } from '../test-support/test-server.js';

/**
 * The lifecycle's promises as an agent and an operator see them over HTTP, on a real server and store,
 * across random histories with server restarts: an answer to a busy, unknown or torn beat never
 * carries a hibernate command; a command whose result was acknowledged is never handed out again; a
 * re-sent result never wakes a hibernated instance; a policy hibernation comes only after its
 * countdown was announced for the full warning and never inside a keep-alive; nothing answers 5xx.
 */

const S = 1000;
const THRESHOLD_MS = 30 * S;
const WARNING_S = 10;

type Action =
  | { kind: 'beat'; dt: number; util: (number | null)[]; processes: number | null; activity: 'none' | 'now' | 'old'; tornCollector: boolean; hookRunning: boolean; clockStep: number }
  | { kind: 'report'; dt: number; status: 'succeeded' | 'failed'; resend: boolean }
  | { kind: 'keep_alive'; minutes: number }
  | { kind: 'hibernate_now' }
  | { kind: 'patch'; enabled: boolean }
  | { kind: 'silence'; dt: number }
  | { kind: 'sweep' }
  | { kind: 'restart' };

const quietBeat = fc.record({
  kind: fc.constant('beat' as const),
  dt: fc.integer({ min: 2 * S, max: 20 * S }),
  util: fc.constant<(number | null)[]>([0, 2]),
  processes: fc.constant(0),
  activity: fc.constant('none' as const),
  tornCollector: fc.constant(false),
  hookRunning: fc.boolean(),
  clockStep: fc.constant(0),
});
const anyBeat = fc.record({
  kind: fc.constant('beat' as const),
  dt: fc.integer({ min: 1 * S, max: 40 * S }),
  util: fc.array(fc.oneof(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 5, max: 100 }), fc.constant(null)), { minLength: 0, maxLength: 3 }),
  processes: fc.oneof(fc.constant(0), fc.constant(2), fc.constant(null)),
  activity: fc.constantFrom('none' as const, 'now' as const, 'old' as const),
  tornCollector: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 5, arbitrary: fc.constant(false) }),
  hookRunning: fc.boolean(),
  // The agent's clock stepped back (NTP): its beat looks older than the last one but is fresh.
  clockStep: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1 * S, max: 5 * 60 * S }) }),
});
const action: fc.Arbitrary<Action[]> = fc.oneof(
  { weight: 4, arbitrary: fc.array(quietBeat, { minLength: 3, maxLength: 10 }) },
  { weight: 4, arbitrary: anyBeat.map((a) => [a]) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('report' as const), dt: fc.integer({ min: 1 * S, max: 10 * S }), status: fc.constantFrom('succeeded' as const, 'failed' as const), resend: fc.boolean() }).map((a) => [a]) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('keep_alive' as const), minutes: fc.integer({ min: 1, max: 3 }) }).map((a) => [a]) },
  { weight: 1, arbitrary: fc.constant<Action[]>([{ kind: 'hibernate_now' }]) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('patch' as const), enabled: fc.boolean() }).map((a) => [a]) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('silence' as const), dt: fc.integer({ min: 30 * S, max: 10 * 60 * S }) }).map((a) => [a]) },
  { weight: 1, arbitrary: fc.constant<Action[]>([{ kind: 'sweep' }]) },
  { weight: 1, arbitrary: fc.constant<Action[]>([{ kind: 'restart' }]) },
);
const history = fc.array(action, { minLength: 1, maxLength: 12 }).map((chunks) => chunks.flat());

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`the lifecycle over HTTP, random histories with restarts (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    beforeAll(async () => {
      const db = await backend.open();
      dispose = db.dispose;
      let first = true;
      t = await new TestServer(async () => (first ? ((first = false), db.store) : db.reopen()), {
        DUMONT_IDLE_THRESHOLD_MINUTES: String(THRESHOLD_MS / 60_000),
        DUMONT_HIBERNATION_WARNING_SECONDS: String(WARNING_S),
        // Histories of earlier runs go silent by the hundred; this suite is about one instance's promises.
        DUMONT_MASS_OFFLINE_MIN_INSTANCES: '1000000',
      }).start();
    });
    afterAll(async () => {
      await t.close();
      await dispose();
    });

    it('keeps every promise an agent and an operator can observe', async () => {
      const runs = backend.name === 'sqlite' ? scaled(60, 1000) : scaled(25, 300);
      let nextId = 1;
      let requests = 0;
      let hibernations = 0;
      const started = performance.now();
      await fc.assert(
        fc.asyncProperty(history, async (actions) => {
          const id = nextId++;
          const token = await t.register(id);
          t.clock.advance(90 * S); // past any restart grace
          let announcedAt: number | null = null;
          let postponedUntil = -Infinity;
          let enabled = true;
          const acknowledged = new Set<string>();
          let held = null as { id: string } | null;
          let lastCommandId: string | null = null;
          const operatorIssued = new Set<string>();

          const send = async (body: Partial<HeartbeatRequest>) => {
            requests += 1;
            const res = await t.beat(token, { instance_id: id, ...body });
            expect(res.status, res.text).toBe(200);
            const answer = res.json as { commands: { id: string; type: string; issued_at: string }[]; hibernate_in_seconds: number | null };
            for (const c of answer.commands) {
              expect(acknowledged.has(c.id), 'a command handed out again after its result was acknowledged').toBe(false);
            }
            for (const r of body.command_results ?? []) acknowledged.add(r.id);
            const hibernate = answer.commands.find((c) => c.type === 'hibernate');
            const facts = idleFactsOf(body as HeartbeatRequest);
            const busy = !judgeIdle(facts, { idleUtilizationPercent: 5, ignoreGpuProcesses: false }).idle || (body.last_activity != null && body.last_activity === body.timestamp);
            if (busy) expect(hibernate, 'a hibernate command in the answer to a busy beat').toBeUndefined();
            // When the agent first heard of the countdown.
            if (answer.hibernate_in_seconds !== null && answer.hibernate_in_seconds > 0) announcedAt ??= t.clock.now();
            if (answer.hibernate_in_seconds === null) announcedAt = null;
            if (hibernate && hibernate.id !== lastCommandId) {
              lastCommandId = hibernate.id;
              const byPolicy = !operatorIssued.has(hibernate.id);
              if (byPolicy) {
                expect(announcedAt, 'a policy hibernation without a countdown').not.toBeNull();
                expect(Date.parse(hibernate.issued_at) - announcedAt!).toBeGreaterThanOrEqual(WARNING_S * S);
                expect(Date.parse(hibernate.issued_at)).toBeGreaterThanOrEqual(postponedUntil);
                expect(enabled).toBe(true);
              }
              held = { id: hibernate.id };
              hibernations += 1;
            }
            return answer;
          };
          for (const a of actions) {
            switch (a.kind) {
              case 'beat': {
                t.clock.advance(a.dt);
                const now = t.clock.now();
                await send({
                  timestamp: new Date(now - a.clockStep).toISOString(),
                  gpus: a.util.map((u, index) => ({ index, utilization_percent: u })),
                  process_count: a.processes,
                  last_activity: a.activity === 'none' ? null : new Date((a.activity === 'now' ? now : now - 86_400_000) - a.clockStep).toISOString(),
                  collector_errors: a.tornCollector ? [{ collector: 'nvidia-smi', message: 'unexpected line' }] : [],
                  running_commands: a.hookRunning && held ? [held.id] : [],
                });
                break;
              }
              case 'report': {
                if (!held) break;
                t.clock.advance(a.dt);
                const result = { id: held.id, status: a.status, detail: 'hook' };
                const before = (await t.request('GET', `/api/v1/agent/instances/${id}`)).json.status;
                await send({ gpus: [{ index: 0, utilization_percent: 0 }], process_count: 0, command_results: [result] });
                if (a.resend) {
                  t.clock.advance(1);
                  await send({ gpus: [{ index: 0, utilization_percent: 90 }], process_count: 1, command_results: [result] });
                }
                const after = (await t.request('GET', `/api/v1/agent/instances/${id}`)).json.status;
                if (before === 'hibernated') expect(after, 'a re-sent result woke a hibernated instance').toBe('hibernated');
                // The answer may already hand out the next command (an operator's): only this one is done.
                if (held?.id === result.id) held = null;
                break;
              }
              case 'keep_alive': {
                const res = await t.request('POST', `/api/v1/agent/instances/${id}/keep-alive?minutes=${a.minutes}`);
                expect([200, 409]).toContain(res.status);
                if (res.status === 200) {
                  postponedUntil = Date.parse(res.json.hibernation_postponed_until);
                  announcedAt = null;
                }
                break;
              }
              case 'hibernate_now': {
                const res = await t.request('POST', `/api/v1/agent/instances/${id}/commands`, { body: { type: 'hibernate' } });
                expect([201, 409]).toContain(res.status);
                if (res.status === 201) operatorIssued.add(res.json.id);
                break;
              }
              case 'patch': {
                const res = await t.request('PATCH', `/api/v1/agent/instances/${id}/hibernation`, { body: { enabled: a.enabled } });
                expect(res.status).toBe(200);
                enabled = a.enabled;
                if (!a.enabled) announcedAt = null;
                break;
              }
              case 'silence':
                t.clock.advance(a.dt);
                await t.sweep();
                break;
              case 'sweep':
                await t.sweep();
                break;
              case 'restart':
                await t.restart();
                break;
            }
          }
        }),
        { numRuns: runs },
      );
      const seconds = (performance.now() - started) / 1000;
      expect(hibernations).toBeGreaterThan(runs / 4);
      recordFigure({ suite: 'Properties of the lifecycle over HTTP', figure: `random histories (${backend.name})`, value: runs });
      recordFigure({ suite: 'Properties of the lifecycle over HTTP', figure: `heartbeats sent (${backend.name})`, value: requests });
      recordFigure({ suite: 'Properties of the lifecycle over HTTP', figure: `hibernate commands handed out (${backend.name})`, value: hibernations });
      recordFigure({ suite: 'Properties of the lifecycle over HTTP', figure: `promises broken (${backend.name})`, value: 0 });
      recordFigure({ suite: 'Properties of the lifecycle over HTTP', figure: `seconds (${backend.name})`, value: seconds.toFixed(1) });
    });
  });
}
