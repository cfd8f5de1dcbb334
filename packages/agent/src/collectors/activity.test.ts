import { describe, expect, it } from 'vitest';
import { ActivityTracker, type ActivityInputs } from './activity.js';
import type { JupyterServer } from './jupyter.js';
import type { Session } from './utmp.js';

const T0 = Date.parse('2024-12-20T15:00:00Z');
const session = (user: string, lastInputAt: number | null): Session => ({ user, line: 'pts/0', host: null, pid: 1, lastInputAt, source: 'utmp' });
const server = (over: Partial<JupyterServer>): JupyterServer => ({
  pid: 42, url: 'http://127.0.0.1:8888/', owner: 'root', lastActivity: null, kernels: 0, busyKernels: 0, connections: 0, ...over,
});
const base = (now: number, over: Partial<ActivityInputs> = {}): ActivityInputs => ({
  now, sessions: [], jupyter: { servers: [], errors: [] }, ...over,
});

describe('ActivityTracker', () => {
  it('GPU utilization and GPU processes are not activity: the server judges GPUs by its own rule', () => {
    // A GPU at 7 % under a server rule of 10 % used to read as "activity now" (agent threshold 5 %)
    // on every beat, so the instance never went idle. The inputs have no GPU fields any more; what an
    // old caller passed (a threshold, busy GPUs, a MIG slice with a process) changes nothing.
    const t = new ActivityTracker();
    const withGpus = {
      ...base(T0),
      idleUtilizationPercent: 5,
      gpus: [{ index: 0, uuid: 'GPU-0', utilization_percent: 90 }, { index: 1, uuid: 'GPU-1', utilization_percent: null }],
      processes: [{ pid: 9, used_memory_mb: 100, gpu_uuid: 'GPU-1' }],
    };
    expect(t.observe(withGpus as ActivityInputs)).toMatchObject({ lastActivity: null, source: null, mark: 0, reasons: [] });
  });

  it('takes the newest terminal input, a future tty time counting as now', () => {
    const t = new ActivityTracker();
    expect(t.observe(base(T0, { sessions: [session('a', T0 - 60_000), session('b', T0 - 5_000)] })).lastActivity).toBe(T0 - 5_000);
    expect(t.observe(base(T0 + 1000, { sessions: [session('a', T0 + 99_000)] })).lastActivity).toBe(T0 + 1000);
  });

  it('uses Jupyter’s last_activity, and a busy kernel as now on every beat', () => {
    const t = new ActivityTracker();
    expect(t.observe(base(T0, { jupyter: { servers: [server({ lastActivity: T0 - 30_000 })], errors: [] } })).lastActivity).toBe(T0 - 30_000);
    const busy = { servers: [server({ lastActivity: T0 - 30_000, busyKernels: 1 })], errors: [] };
    expect(t.observe(base(T0 + 60_000, { jupyter: busy })).lastActivity).toBe(T0 + 60_000);
    expect(t.observe(base(T0 + 120_000, { jupyter: busy })).lastActivity).toBe(T0 + 120_000);
  });

  it('never moves backwards when the newest source disappears', () => {
    const t = new ActivityTracker();
    t.observe(base(T0, { sessions: [session('a', T0 - 1000)] }));
    expect(t.observe(base(T0 + 600_000, { sessions: [session('b', T0 - 60_000)] })).lastActivity).toBe(T0 - 1000);
    expect(t.observe(base(T0 + 660_000, { sessions: null })).lastActivity).toBe(T0 - 1000);
  });

  it('says what set last_activity, and counts each move forward (the hibernate guard compares counts)', () => {
    const t = new ActivityTracker();
    const first = t.observe(base(T0, { sessions: [session('alice', T0 - 5000)] }));
    expect(first).toMatchObject({ lastActivity: T0 - 5000, source: "input on alice's terminal pts/0", mark: 1 });
    expect(t.observe(base(T0 + 30_000, { sessions: [session('alice', T0 - 5000)] })).mark).toBe(1); // nothing new
    const busy = { servers: [server({ pid: 77, busyKernels: 2 })], errors: [] };
    expect(t.observe(base(T0 + 60_000, { jupyter: busy }))).toMatchObject({ lastActivity: T0 + 60_000, source: 'jupyter pid 77: 2 busy kernel(s)', mark: 2 });
  });

  it('a clock set back keeps the age of the last activity instead of leaving it in the future', () => {
    // The server reads a last_activity ahead of the beat's own timestamp as "active now", so a clock
    // set back a day would have kept the instance awake for a day.
    const t = new ActivityTracker();
    t.observe(base(T0, { sessions: [session('a', T0 - 60_000)] }));
    const DAY = 86_400_000;
    const back = t.observe(base(T0 - DAY, { sessions: [session('a', T0 - 60_000)] })); // the tty still carries the old stamp
    expect(back.lastActivity).toBe(T0 - DAY - 60_000);
    expect(back.mark).toBe(1); // not new activity
    // Input after the step is stamped on the new timeline and counts.
    const typed = t.observe(base(T0 - DAY + 30_000, { sessions: [session('a', T0 - DAY + 20_000)] }));
    expect(typed).toMatchObject({ lastActivity: T0 - DAY + 20_000, mark: 2 });
    // A clock set forwards only makes the activity look older; nothing is invented.
    expect(t.observe(base(T0 + DAY, { sessions: [session('a', T0 - DAY + 20_000)] }))).toMatchObject({ lastActivity: T0 - DAY + 20_000, mark: 2 });
  });

  it('counts distinct users across sessions and Jupyter servers with an open notebook', () => {
    const t = new ActivityTracker();
    const jupyter = { servers: [server({ owner: 'alice', connections: 2 }), server({ owner: 'carol', connections: 0 }), server({ owner: 'dave', connections: 1 })], errors: [] };
    const report = t.observe(base(T0, { sessions: [session('alice', null), session('alice', null), session('bob', null)], jupyter }));
    expect(report.activeUsers).toBe(3); // alice, bob, dave
  });

  it('reports users as unknown, not 0, when sessions could not be read', () => {
    expect(new ActivityTracker().observe(base(T0, { sessions: null })).activeUsers).toBeNull();
    expect(new ActivityTracker().observe(base(T0, { sessions: [] })).activeUsers).toBe(0);
  });
});
