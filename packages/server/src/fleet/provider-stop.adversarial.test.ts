import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { judgeIdle, idleFactsOf, type HeartbeatRequest } from '@dumont/protocol';
import { testBackends } from '../test-support/backends.js';
import { HttpRecorder, type Reply } from '../test-support/http-recorder.js';
import { recordFigure, scaled } from '../test-support/reliability.js';
import { TestServer } from '../test-support/test-server.js';

/**
 * The provider stop as an adversary sees it: random histories of idle and busy beats, results (first
 * and re-sent, with busy facts beside them), a Vast.ai API that answers 200, 5xx, 429, 4xx or
 * `success: false` at random, clock jumps, sweeps, wakes and server restarts. The promises:
 * - no stop reaches the provider after a busy beat was accepted, unless the agent confirmed a new
 *   hibernation since (a busy machine is never stopped);
 * - a stop goes out only after the agent confirmed a hibernation, and once the provider accepted one,
 *   no second stop is sent for that hibernation;
 * - a start goes out only after a wake was accepted;
 * - nothing answers 5xx.
 */

const S = 1000;
const THRESHOLD_MS = 20 * S;

type Outcome = 'ok' | 'server_error' | 'throttled' | 'refused' | 'vast_refused';

type Action =
  | { kind: 'beat'; dt: number; busy: 'no' | 'gpu' | 'process' | 'unknown' | 'activity' | 'torn' }
  | { kind: 'report'; status: 'succeeded' | 'failed'; resendBusy: boolean }
  | { kind: 'drain'; outcome: Outcome; dt: number }
  | { kind: 'wake' }
  | { kind: 'sweep'; dt: number }
  | { kind: 'restart' };

const idleRun = fc.array(fc.record({ kind: fc.constant('beat' as const), dt: fc.integer({ min: 2 * S, max: 10 * S }), busy: fc.constant('no' as const) }), {
  minLength: 3,
  maxLength: 8,
});
const anyBeat = fc.record({
  kind: fc.constant('beat' as const),
  dt: fc.integer({ min: 1 * S, max: 30 * S }),
  busy: fc.constantFrom('no' as const, 'gpu' as const, 'process' as const, 'unknown' as const, 'activity' as const, 'torn' as const),
});
/** Idle long enough for a hibernation, then the agent's report, often a drain: the path to a stop. */
const cycle = fc
  .record({
    status: fc.constantFrom('succeeded' as const, 'succeeded' as const, 'failed' as const),
    resendBusy: fc.boolean(),
    drain: fc.option(fc.constantFrom<Outcome>('ok', 'ok', 'server_error', 'vast_refused'), { nil: null }),
  })
  .map(({ status, resendBusy, drain }): Action[] => [
    ...Array.from({ length: 8 }, () => ({ kind: 'beat' as const, dt: 5 * S, busy: 'no' as const })),
    { kind: 'report', status, resendBusy },
    ...(drain === null ? [] : [{ kind: 'drain' as const, outcome: drain, dt: 0 }]),
  ]);
const outcome = fc.constantFrom<Outcome>('ok', 'ok', 'server_error', 'throttled', 'refused', 'vast_refused');
const action: fc.Arbitrary<Action[]> = fc.oneof(
  { weight: 4, arbitrary: idleRun },
  { weight: 5, arbitrary: cycle },
  { weight: 3, arbitrary: anyBeat.map((a) => [a]) },
  {
    weight: 3,
    arbitrary: fc
      .record({ kind: fc.constant('report' as const), status: fc.constantFrom('succeeded' as const, 'succeeded' as const, 'failed' as const), resendBusy: fc.boolean() })
      .map((a) => [a]),
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('drain' as const), outcome, dt: fc.integer({ min: 0, max: 15 * 60 * S }) }).map((a) => [a]) },
  { weight: 1, arbitrary: fc.constant<Action[]>([{ kind: 'wake' }]) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('sweep' as const), dt: fc.integer({ min: 0, max: 20 * 60 * S }) }).map((a) => [a]) },
  { weight: 1, arbitrary: fc.constant<Action[]>([{ kind: 'restart' }]) },
);
const history = fc.array(action, { minLength: 2, maxLength: 14 }).map((chunks) => chunks.flat());

function replyFor(outcome: Outcome): Reply {
  switch (outcome) {
    case 'ok':
      return { status: 200, headers: { 'content-type': 'application/json' }, body: '{"success": true}' };
    case 'server_error':
      return { status: 503, body: 'maintenance' };
    case 'throttled':
      return { status: 429, headers: { 'retry-after': '30' }, body: 'slow down' };
    case 'refused':
      return { destroy: true };
    case 'vast_refused':
      return { status: 200, headers: { 'content-type': 'application/json' }, body: '{"success": false, "msg": "no such instance"}' };
  }
}

function beatBody(busy: Extract<Action, { kind: 'beat' }>['busy'], now: number): Partial<HeartbeatRequest> {
  return {
    gpus: [
      { index: 0, utilization_percent: busy === 'gpu' ? 80 : 1 },
      { index: 1, utilization_percent: busy === 'unknown' ? null : 0 },
    ],
    process_count: busy === 'process' ? 1 : 0,
    last_activity: busy === 'activity' ? new Date(now).toISOString() : null,
    collector_errors: busy === 'torn' ? [{ collector: 'nvidia-smi', message: 'unexpected line' }] : [],
  };
}

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`provider stops under random histories (${backend.name})`, () => {
    let t: TestServer;
    let vast: HttpRecorder;
    let dispose: () => Promise<void>;
    beforeAll(async () => {
      vast = await HttpRecorder.start();
      const db = await backend.open();
      dispose = db.dispose;
      let first = true;
      t = await new TestServer(async () => (first ? ((first = false), db.store) : db.reopen()), {
        DUMONT_PROVIDER: 'vast',
        DUMONT_VAST_API_URL: vast.url,
        DUMONT_VAST_API_KEY: 'adversarial-key',
        DUMONT_IDLE_THRESHOLD_MINUTES: String(THRESHOLD_MS / 60_000),
        DUMONT_HIBERNATION_WARNING_SECONDS: '5',
        DUMONT_PROVIDER_RETRY_HOURS: '1',
        DUMONT_WAKE_TIMEOUT_SECONDS: '600',
        DUMONT_MASS_OFFLINE_MIN_INSTANCES: '1000000',
      }).start();
    });
    afterAll(async () => {
      await t.close();
      await vast.close();
      await dispose();
    });

    it('never stops a machine after a busy beat, never stops twice, never starts unasked', async () => {
      const runs = backend.name === 'sqlite' ? scaled(40, 600) : scaled(15, 200);
      let nextId = 1;
      let stopsSent = 0;
      let stopsAccepted = 0;
      let busyWithdrawals = 0;
      const started = performance.now();
      await fc.assert(
        fc.asyncProperty(history, async (actions) => {
          const id = nextId++;
          const token = await t.register(id);
          const path = `/api/v0/instances/p-${id}/`;
          expect((await t.request('PATCH', `/api/v1/agent/instances/${id}`, { body: { provider_instance_id: `p-${id}` } })).status).toBe(200);
          t.clock.advance(90 * S);
          /** The agent's view: what the last accepted beat said, and the hibernations it confirmed. */
          /** A hibernation was confirmed and no busy beat was accepted since: only then may a stop go out. */
          let armed = false;
          let held: string | null = null;
          let confirmations = 0;
          let stopAcceptedFor = -1;
          let wakes = 0;
          const mine = () => vast.requests.filter((r) => r.path === path);

          const send = async (body: Partial<HeartbeatRequest>, busy: boolean) => {
            const res = await t.beat(token, { instance_id: id, ...body });
            expect(res.status, res.text).toBe(200);
            if (busy) armed = false;
            const hibernate = (res.json.commands as { id: string; type: string }[]).find((c) => c.type === 'hibernate');
            if (hibernate) held = hibernate.id;
          };

          for (const a of actions) {
            switch (a.kind) {
              case 'beat': {
                t.clock.advance(a.dt);
                const body = beatBody(a.busy, t.clock.now());
                const busy =
                  !judgeIdle(idleFactsOf(body as HeartbeatRequest), { idleUtilizationPercent: 5, ignoreGpuProcesses: false }).idle || a.busy === 'activity';
                await send(body, busy);
                break;
              }
              case 'report': {
                if (held === null) break;
                t.clock.advance(S);
                const result = { id: held, status: a.status, detail: 'hook' };
                const status = (await t.request('GET', `/api/v1/agent/instances/${id}`)).json.status;
                // The first report describes the machine while its hook ran (idle here).
                await send({ ...beatBody('no', t.clock.now()), command_results: [result] }, false);
                if (a.status === 'succeeded' && status === 'hibernating') {
                  confirmations += 1;
                  armed = true;
                }
                if (a.resendBusy) {
                  // The answer was lost: the agent re-sends the result, and someone is on the GPU now.
                  t.clock.advance(S);
                  await send({ ...beatBody('gpu', t.clock.now()), command_results: [result] }, true);
                }
                held = null;
                break;
              }
              case 'drain': {
                t.clock.advance(a.dt);
                vast.reply(replyFor(a.outcome));
                const before = mine();
                await t.drainOutbox();
                const sent = mine().slice(before.length);
                const stops = sent.filter((r) => r.body.includes('stopped'));
                const starts = sent.filter((r) => r.body.includes('running'));
                stopsSent += stops.length;
                if (stops.length > 0) {
                  expect(armed, 'a stop reached the provider after a busy beat (or with no confirmed hibernation)').toBe(true);
                  expect(confirmations, 'a stop without a confirmed hibernation').toBeGreaterThan(0);
                  expect(stopAcceptedFor, 'a second stop for a hibernation the provider already accepted').not.toBe(confirmations);
                  if (a.outcome === 'ok') {
                    stopAcceptedFor = confirmations;
                    stopsAccepted += 1;
                    expect((await t.request('GET', `/api/v1/agent/instances/${id}`)).json.status).toBe('hibernated');
                  }
                }
                if (starts.length > 0) expect(wakes, 'a start nobody asked for').toBeGreaterThan(0);
                break;
              }
              case 'wake': {
                const res = await t.request('POST', `/api/v1/agent/instances/${id}/wake`);
                expect([202, 409]).toContain(res.status);
                if (res.status === 202) wakes += 1;
                break;
              }
              case 'sweep':
                t.clock.advance(a.dt);
                await t.sweep();
                break;
              case 'restart':
                await t.restart();
                break;
            }
          }
          const events = await t.eventTypes(id);
          busyWithdrawals += events.filter((e) => e === 'hibernation_cancelled').length;
        }),
        { numRuns: runs },
      );
      const seconds = (performance.now() - started) / 1000;
      expect(stopsSent).toBeGreaterThan(0);
      recordFigure({ suite: 'Provider stops under random histories', figure: `random histories (${backend.name})`, value: runs });
      recordFigure({ suite: 'Provider stops under random histories', figure: `stop requests sent (${backend.name})`, value: stopsSent });
      recordFigure({ suite: 'Provider stops under random histories', figure: `stops accepted by the provider (${backend.name})`, value: stopsAccepted });
      recordFigure({ suite: 'Provider stops under random histories', figure: `hibernations withdrawn (${backend.name})`, value: busyWithdrawals });
      recordFigure({ suite: 'Provider stops under random histories', figure: `busy machines stopped (${backend.name})`, value: 0 });
      recordFigure({ suite: 'Provider stops under random histories', figure: `seconds (${backend.name})`, value: seconds.toFixed(1) });
    });
  });
}
