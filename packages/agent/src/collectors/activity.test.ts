import { describe, expect, it } from 'vitest';
import type { GpuSample } from '@dumont/protocol';
import { ActivityTracker, type ActivityInputs } from './activity.js';
import type { JupyterServer } from './jupyter.js';
import type { Session } from './utmp.js';

const T0 = Date.parse('2024-12-20T15:00:00Z');
const gpu = (index: number, util: number | null, uuid = `GPU-${index}`): GpuSample => ({ index, uuid, utilization_percent: util });
const session = (user: string, lastInputAt: number | null): Session => ({ user, line: 'pts/0', host: null, pid: 1, lastInputAt, source: 'utmp' });
const server = (over: Partial<JupyterServer>): JupyterServer => ({
  pid: 42, url: 'http://127.0.0.1:8888/', owner: 'root', lastActivity: null, kernels: 0, busyKernels: 0, connections: 0, ...over,
});
const base = (now: number, over: Partial<ActivityInputs> = {}): ActivityInputs => ({
  now, idleUtilizationPercent: 5, gpus: [], processes: [], sessions: [], jupyter: { servers: [], errors: [] }, ...over,
});

describe('ActivityTracker', () => {
  it('a GPU at or above the threshold is activity now; below it is not', () => {
    const t = new ActivityTracker();
    expect(t.observe(base(T0, { gpus: [gpu(0, 4.9)] })).lastActivity).toBeNull();
    expect(t.observe(base(T0 + 1000, { gpus: [gpu(0, 0), gpu(1, 5)] })).lastActivity).toBe(T0 + 1000);
  });

  it('one busy GPU among eight idle ones is activity', () => {
    const gpus = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => gpu(i, i === 6 ? 90 : 0));
    expect(new ActivityTracker().observe(base(T0, { gpus })).lastActivity).toBe(T0);
  });

  it('follows a configured threshold', () => {
    const t = new ActivityTracker();
    expect(t.observe(base(T0, { gpus: [gpu(0, 15)], idleUtilizationPercent: 20 })).lastActivity).toBeNull();
    expect(t.observe(base(T0, { gpus: [gpu(0, 20)], idleUtilizationPercent: 20 })).lastActivity).toBe(T0);
  });

  it('a MIG GPU (utilization unknown) counts through its compute processes', () => {
    const t = new ActivityTracker();
    const mig = gpu(0, null, 'GPU-mig');
    expect(t.observe(base(T0, { gpus: [mig], processes: [] })).lastActivity).toBeNull();
    expect(t.observe(base(T0, { gpus: [mig], processes: [{ pid: 9, used_memory_mb: 100, gpu_uuid: 'GPU-other' }] })).lastActivity).toBeNull();
    const report = t.observe(base(T0 + 5000, { gpus: [mig], processes: [{ pid: 9, used_memory_mb: 100, gpu_uuid: 'GPU-mig' }] }));
    expect(report.lastActivity).toBe(T0 + 5000);
    expect(report.reasons).toEqual(['gpu 0 (utilization unknown) has compute processes']);
  });

  it('a process holding memory on a GPU with known low utilization is not activity', () => {
    const processes = [{ pid: 9, used_memory_mb: 30_000, gpu_uuid: 'GPU-0' }];
    expect(new ActivityTracker().observe(base(T0, { gpus: [gpu(0, 0)], processes })).lastActivity).toBeNull();
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
    t.observe(base(T0, { gpus: [gpu(0, 80)] }));
    expect(t.observe(base(T0 + 600_000, { gpus: [gpu(0, 0)], sessions: [session('a', T0 - 1000)] })).lastActivity).toBe(T0);
  });

  it('an unknown GPU reading is not activity and does not erase earlier activity', () => {
    const t = new ActivityTracker();
    t.observe(base(T0, { gpus: [gpu(0, 50)] }));
    expect(t.observe(base(T0 + 30_000, { gpus: null, processes: null })).lastActivity).toBe(T0);
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
