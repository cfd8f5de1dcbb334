import { describe, expect, it } from 'vitest';
import type { CommandResult, DeliveredCommand, HeartbeatRequest } from '@dumont/protocol';
import { createLogger } from '../log.js';
import { HibernationNotice } from './hibernation-notice.js';
import { HeartbeatLoop, type Clock, type CommandSink, type Delivery } from './loop.js';
import type { SendOutcome } from './sender.js';

const T0 = Date.parse('2024-12-20T15:30:00Z');

/** Time travel: sleeping moves the clock at once, and an aborted sleep does not move it. */
class FakeClock implements Clock {
  t = T0;
  slept: number[] = [];
  now = () => this.t;
  sleep = async (ms: number, signal: AbortSignal) => {
    this.slept.push(signal.aborted ? 0 : ms);
    if (!signal.aborted) this.t += ms;
  };
}

const ok = (over: Partial<{ next_heartbeat_in: number; hibernate_in_seconds: number | null; commands: DeliveredCommand[] }> = {}): SendOutcome => ({
  kind: 'ok',
  response: { success: true, commands: [], hibernate_in_seconds: null, next_heartbeat_in: 30, ...over },
});
const down: SendOutcome = { kind: 'unreachable', message: 'ECONNREFUSED' };

/** The command side reduced to what the loop sees (the real queue has its own tests). */
class RecordingSink implements CommandSink {
  results: CommandResult[] = [];
  acked: string[] = [];
  accepted: string[] = [];
  deliveries: Delivery[] = [];
  running: string[] = [];
  pendingResults() {
    return this.results.filter((r) => !this.acked.includes(r.id));
  }
  runningCommands() {
    return [...this.running];
  }
  acknowledge(ids: readonly string[]) {
    this.acked.push(...ids);
  }
  accept(commands: readonly DeliveredCommand[], delivery: Delivery) {
    this.accepted.push(...commands.map((c) => c.id));
    if (commands.length > 0) this.deliveries.push(delivery);
  }
}

function harness(script: Array<SendOutcome | (() => SendOutcome)>, opts: { random?: () => number; collectThrowsAt?: number[]; maxBackoffMs?: number } = {}) {
  const clock = new FakeClock();
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger({ write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>), now: clock.now, level: 'debug' });
  const bodies: HeartbeatRequest[] = [];
  const hibernations: number[] = [];
  const sink = new RecordingSink();
  let beat = 0;
  let collects = 0;
  const loop: HeartbeatLoop = new HeartbeatLoop({
    clock,
    random: opts.random ?? (() => 0.5),
    collect: async (results, running) => {
      collects += 1;
      if (collects > 10_000) loop.stop(); // a broken loop fails the test instead of eating the memory
      if (opts.collectThrowsAt?.includes(collects - 1)) throw new Error('collector bug');
      const body = { instance_id: 1, hostname: 'h', timestamp: new Date(clock.now()).toISOString(), command_results: results, running_commands: running };
      return { body, activity: { lastActivity: clock.now() - 60_000, source: 'test', mark: collects, activeUsers: 0, reasons: [] } };
    },
    send: async (body) => {
      bodies.push(body);
      const step = script[beat++];
      if (beat >= script.length) loop.stop();
      return typeof step === 'function' ? step() : (step ?? ok());
    },
    commands: sink,
    hibernation: new HibernationNotice(log, ({ secondsLeft }) => hibernations.push(secondsLeft)),
    log,
    intervalMs: 30_000,
    maxBackoffMs: opts.maxBackoffMs ?? 300_000,
  });
  return { loop, clock, logs, bodies, sink, hibernations };
}

describe('HeartbeatLoop', () => {
  it('sleeps what the server says, with a little jitter', async () => {
    let r = 0;
    const randoms = [0, 0.5, 0.999];
    const h = harness([ok({ next_heartbeat_in: 30 }), ok({ next_heartbeat_in: 10 }), ok({ next_heartbeat_in: 60 }), ok()], { random: () => randoms[r++ % 3]! });
    await h.loop.run();
    expect(h.clock.slept.slice(0, 3).map(Math.round)).toEqual([27_000, 10_000, 65_988]);
    expect(h.bodies).toHaveLength(4);
  });

  it('backs off exponentially with full jitter while the API is down, then resumes its interval', async () => {
    const h = harness([down, down, down, down, down, ok(), ok()], { random: () => 0.5 });
    await h.loop.run();
    expect(h.clock.slept.map(Math.round)).toEqual([500, 1000, 2000, 4000, 8000, 30_000]);
    expect(h.logs.filter((l) => l.level === 'warn').map((l) => l.attempt)).toEqual([1, 2, 3, 4, 5]);
    expect(h.logs.find((l) => l.msg === 'heartbeat delivered again')).toMatchObject({ after_failures: 5 });
  });

  it('caps the backoff and keeps going forever', async () => {
    const h = harness([...Array.from({ length: 300 }, () => down), ok()], { random: () => 0.999, maxBackoffMs: 300_000 });
    await h.loop.run();
    expect(h.bodies).toHaveLength(301);
    expect(Math.max(...h.clock.slept)).toBeLessThan(300_000);
    expect(h.clock.slept.at(-2)).toBeCloseTo(299_700);
  });

  it('honors Retry-After on 429', async () => {
    const limited: SendOutcome = { kind: 'rejected', status: 429, error: 'rate_limited', message: 'slow down', field: null, retryAfterMs: 20_000 };
    const h = harness([limited, ok()], { random: () => 0 });
    await h.loop.run();
    expect(h.clock.slept[0]).toBe(20_000);
    expect(h.logs[0]).toMatchObject({ level: 'warn', retry_after_ms: 20_000 });
  });

  it('a collector that throws is one failed beat, not a dead agent', async () => {
    const h = harness([ok(), ok(), ok()], { collectThrowsAt: [0] });
    await h.loop.run();
    expect(h.logs[0]!.msg).toMatch(/heartbeat failed: server unreachable: beat failed: collector bug/);
  });

  it('resends results until a beat carrying them is accepted', async () => {
    const h = harness([down, ok(), ok()]);
    h.sink.results.push({ id: 'c1', status: 'succeeded', detail: 'done' });
    await h.loop.run();
    expect(h.bodies.map((b) => b.command_results?.map((r) => r.id))).toEqual([['c1'], ['c1'], []]);
    expect(h.sink.acked).toEqual(['c1']);
  });

  it('hands delivered commands to the command side, and the countdown to the notice', async () => {
    const cmd = { id: 'h1', type: 'hibernate' as const, args: {}, issued_at: '2024-12-20T15:30:00Z' };
    const h = harness([ok({ hibernate_in_seconds: 60 }), ok({ hibernate_in_seconds: 0, commands: [cmd] }), ok({ hibernate_in_seconds: 0, commands: [cmd] })]);
    await h.loop.run();
    expect(h.sink.accepted).toEqual(['h1', 'h1']);
    expect(h.hibernations).toEqual([60]);
  });

  it('names the running commands in each beat, and hands each delivery the activity of the beat it answered', async () => {
    const cmd = { id: 'h1', type: 'hibernate' as const, args: {}, issued_at: '2024-12-20T15:30:00Z' };
    let sink: RecordingSink | null = null;
    const h = harness([ok({ commands: [cmd] }), () => ((sink!.running = []), ok()), ok()]);
    sink = h.sink;
    h.sink.running = ['h1'];
    await h.loop.run();
    expect(h.bodies.map((b) => b.running_commands)).toEqual([['h1'], ['h1'], []]);
    // The first beat was the first collection: the guard counts activity from its mark.
    expect(h.sink.deliveries.map((d) => d.activity.mark)).toEqual([1]);
  });

  it('goes quiet once the server has the hibernate command\'s success, then beats again', async () => {
    const hibernate = { id: 'h1', type: 'hibernate' as const, args: {}, issued_at: '2024-12-20T15:30:00Z' };
    const snapshot = { id: 's1', type: 'snapshot' as const, args: {}, issued_at: '2024-12-20T15:30:00Z' };
    let sink: RecordingSink | null = null;
    const h = harness(
      [
        () => {
          // Delivered now; the runner finishes both before the next beat.
          sink!.results.push({ id: 's1', status: 'succeeded', detail: '' }, { id: 'h1', status: 'succeeded', detail: 'saved' });
          return ok({ commands: [hibernate, snapshot] });
        },
        ok(),
        ok(),
        ok(),
      ],
      { random: () => 0.5 },
    );
    sink = h.sink;
    await h.loop.run();
    expect(h.bodies[1]!.command_results?.map((r) => r.id)).toEqual(['s1', 'h1']);
    expect(h.clock.slept.slice(0, 3)).toEqual([30_000, 15 * 60_000, 30_000]);
    expect(h.logs.some((l) => l.msg === 'hibernation confirmed by the server: no beats while the machine is stopped')).toBe(true);
  });

  it('a failed hibernate hook does not make it quiet', async () => {
    const hibernate = { id: 'h1', type: 'hibernate' as const, args: {}, issued_at: '2024-12-20T15:30:00Z' };
    let sink: RecordingSink | null = null;
    const h = harness(
      [
        () => {
          sink!.results.push({ id: 'h1', status: 'failed', detail: 'disk full' });
          return ok({ commands: [hibernate] });
        },
        ok(),
        ok(),
      ],
      { random: () => 0.5 },
    );
    sink = h.sink;
    await h.loop.run();
    expect(h.clock.slept.slice(0, 2)).toEqual([30_000, 30_000]);
  });

  it('a finished command wakes it early, but not while the server is failing', async () => {
    let loop: HeartbeatLoop | null = null;
    const h = harness([
      () => { loop!.wakeUp(); return ok(); }, // result ready during a good beat: next beat at once
      down,
      () => { loop!.wakeUp(); return down; }, // during failures: keep backing off
      ok(),
    ]);
    loop = h.loop;
    await h.loop.run();
    expect(h.clock.slept.map(Math.round)).toEqual([0, 500, 1000]);
  });
});
