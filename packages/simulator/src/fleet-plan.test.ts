import { describe, expect, it } from 'vitest';
import { planAgent, planFleet, profileCounts } from './fleet-plan.js';
import { DEFAULT_MIX, parseMix, PROFILES } from './profiles.js';

describe('planFleet', () => {
  it('is the same for the same seed, and different for another seed', () => {
    const a = planFleet({ seed: 42, agents: 300, firstInstanceId: 1000 });
    expect(planFleet({ seed: 42, agents: 300, firstInstanceId: 1000 })).toEqual(a);
    const b = planFleet({ seed: 43, agents: 300, firstInstanceId: 1000 });
    expect(b.map((s) => s.profile)).not.toEqual(a.map((s) => s.profile));
  });

  it('gives agent i the same host whatever the size of the fleet', () => {
    const small = planFleet({ seed: 5, agents: 10, firstInstanceId: 1 });
    const large = planFleet({ seed: 5, agents: 2000, firstInstanceId: 1 });
    expect(large.slice(0, 10)).toEqual(small);
    expect(planAgent(5, 1500, 1)).toEqual(large[1500]);
  });

  it('numbers instances from the first id, with 1–8 GPUs of one model and unique UUIDs', () => {
    const plan = planFleet({ seed: 9, agents: 5000, firstInstanceId: 700_000 });
    expect(plan[0]!.instanceId).toBe(700_000);
    expect(plan[4999]!.instanceId).toBe(704_999);
    expect(new Set(plan.map((a) => a.hostname)).size).toBe(5000);
    const counts = new Set<number>();
    const uuids = new Set<string>();
    for (const agent of plan) {
      expect(agent.gpus.length).toBeGreaterThanOrEqual(1);
      expect(agent.gpus.length).toBeLessThanOrEqual(8);
      counts.add(agent.gpus.length);
      expect(new Set(agent.gpus.map((g) => g.name)).size).toBe(1);
      agent.gpus.forEach((g, i) => expect(g.index).toBe(i));
      for (const g of agent.gpus) uuids.add(g.uuid);
    }
    expect([...counts].sort()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(uuids.size).toBe(plan.reduce((n, a) => n + a.gpus.length, 0));
  });

  it('follows the profile mix: every default profile appears, in about its share', () => {
    const plan = planFleet({ seed: 11, agents: 20_000, firstInstanceId: 1 });
    const counts = profileCounts(plan);
    const total = Object.values(DEFAULT_MIX).reduce((a, b) => a + b, 0);
    for (const p of PROFILES) {
      const share = (counts[p] ?? 0) / plan.length;
      expect(Math.abs(share - DEFAULT_MIX[p] / total)).toBeLessThan(0.02);
    }
    const onlyIdle = planFleet({ seed: 11, agents: 500, firstInstanceId: 1, mix: parseMix('idle=1') });
    expect(profileCounts(onlyIdle)).toEqual({ idle: 500 });
  });

  it('rejects unknown profiles, negative weights and an all-zero mix', () => {
    expect(() => parseMix('lazy=1')).toThrow(/unknown profile "lazy"/);
    expect(() => parseMix('busy=-1')).toThrow(/weight/);
    expect(() => parseMix('busy=0')).toThrow(/above 0/);
    expect(parseMix('busy=2,idle')).toMatchObject({ busy: 2, idle: 1, flaky: 0 });
  });

  it('refuses ids outside the safe integer range', () => {
    expect(() => planFleet({ seed: 1, agents: 10, firstInstanceId: 0 })).toThrow(/instance ids/);
    expect(() => planFleet({ seed: 1, agents: 10, firstInstanceId: Number.MAX_SAFE_INTEGER })).toThrow(/instance ids/);
  });
});
