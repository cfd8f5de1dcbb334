import { describe, expect, it } from 'vitest';
// The server's own idle rule, so "idle" here means what it means to the server.
import { judgeIdle } from '@dumont/protocol';
import { initialState, sampleHost, silenceAfterBeat, type HostSample } from './behaviour.js';
import { planFleet, type AgentSpec } from './fleet-plan.js';
import { parseMix, type ProfileName } from './profiles.js';

const T0 = Date.parse('2026-03-01T12:00:00Z');
const settings = { daySeconds: 240 };

function agentsOf(profile: ProfileName, n = 40): AgentSpec[] {
  return planFleet({ seed: 21, agents: n, firstInstanceId: 1, mix: parseMix(`${profile}=1`) });
}

/** `beats` samples, one every `everySeconds`, as the simulation takes them. */
function run(spec: AgentSpec, beats: number, everySeconds = 30): HostSample[] {
  const state = initialState(spec, T0);
  return Array.from({ length: beats }, (_, i) => sampleHost(spec, state, T0 + i * everySeconds * 1000, i * everySeconds, settings));
}

const idleToServer = (s: HostSample) =>
  judgeIdle(
    {
      utilizations: s.gpus.map((g) => g.utilization_percent ?? null),
      processCount: s.processCount,
      failedCollectors: s.collectorErrors.map((e) => e.collector),
    },
    { idleUtilizationPercent: 5, ignoreGpuProcesses: false },
  ).idle;

describe('behaviour profiles', () => {
  it('idle hosts look idle to the server on every beat; busy hosts never do', () => {
    for (const spec of agentsOf('idle')) for (const s of run(spec, 30)) expect(idleToServer(s)).toBe(true);
    for (const spec of agentsOf('busy')) for (const s of run(spec, 30)) expect(idleToServer(s)).toBe(false);
  });

  it('flaky hosts report unknown (null) values on every beat, so they are never judged idle', () => {
    let collectorErrors = 0;
    for (const spec of agentsOf('flaky')) {
      for (const s of run(spec, 30)) {
        expect(s.gpus.some((g) => g.utilization_percent === null)).toBe(true);
        expect(idleToServer(s)).toBe(false);
        collectorErrors += s.collectorErrors.length;
      }
    }
    expect(collectorErrors).toBeGreaterThan(0);
  });

  it('bursty hosts alternate between idle lulls and busy bursts', () => {
    for (const spec of agentsOf('bursty', 10)) {
      const verdicts = run(spec, 200).map(idleToServer);
      expect(verdicts).toContain(true);
      expect(verdicts).toContain(false);
    }
  });

  it('diurnal hosts work in the day and idle at night of the compressed day', () => {
    for (const spec of agentsOf('diurnal', 10)) {
      // 48 beats 10 s apart cover two 240 s days.
      const verdicts = run(spec, 48, 10).map(idleToServer);
      const idleShare = verdicts.filter(Boolean).length / verdicts.length;
      expect(idleShare).toBeGreaterThan(0.3);
      expect(idleShare).toBeLessThan(0.7);
    }
  });

  it('goes-offline hosts fall silent for 8–15 intervals after their planned beat count', () => {
    for (const spec of agentsOf('goes-offline', 10)) {
      const state = initialState(spec, T0);
      let first = 0;
      for (let i = 1; i <= 20 && first === 0; i++) {
        sampleHost(spec, state, T0 + i * 30_000, i * 30, settings);
        const silence = silenceAfterBeat(spec, state);
        if (silence > 0) {
          first = i;
          expect(silence).toBeGreaterThanOrEqual(8);
          expect(silence).toBeLessThanOrEqual(15);
        }
      }
      expect(first).toBe(spec.beatsBeforeSilence);
    }
    for (const spec of agentsOf('busy', 5)) {
      const state = initialState(spec, T0);
      sampleHost(spec, state, T0, 0, settings);
      expect(silenceAfterBeat(spec, state)).toBe(0);
    }
  });

  it('replays the same samples for the same seed', () => {
    const [spec] = planFleet({ seed: 77, agents: 1, firstInstanceId: 1 });
    const [again] = planFleet({ seed: 77, agents: 1, firstInstanceId: 1 });
    expect(run(again!, 25)).toEqual(run(spec!, 25));
  });

  it('keeps every value within what the protocol accepts', () => {
    for (const spec of planFleet({ seed: 3, agents: 200, firstInstanceId: 1 })) {
      for (const s of run(spec, 10)) {
        for (const g of s.gpus) {
          if (g.utilization_percent != null) expect(g.utilization_percent).toBeGreaterThanOrEqual(0);
          if (g.utilization_percent != null) expect(g.utilization_percent).toBeLessThanOrEqual(100);
          if (g.memory_used_mb != null) expect(g.memory_used_mb).toBeLessThanOrEqual(g.memory_total_mb!);
          if (g.power_watts != null) expect(g.power_watts).toBeGreaterThan(0);
        }
      }
    }
  });
});
