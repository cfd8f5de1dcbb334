import type { CollectorError, GpuSample } from '@dumont/protocol';
import type { AgentSpec, GpuSpec } from './fleet-plan.js';
import { Rng } from './prng.js';

/** What one agent reads off its host at one beat. */
export interface HostSample {
  gpus: GpuSample[];
  processCount: number | null;
  activeUsers: number | null;
  /** Epoch ms of the last sign of a person or a job, or null when the agent cannot tell. */
  lastActivityMs: number | null;
  collectorErrors: CollectorError[];
}

/** The moving part of an agent's behaviour; one per agent, advanced once per beat. */
export interface BehaviourState {
  rng: Rng;
  beats: number;
  /** bursty: beats left in the current burst or lull. */
  phaseLeft: number;
  bursting: boolean;
  lastActivityMs: number;
}

export interface BehaviourSettings {
  /** Length of the compressed day of the diurnal profile, seconds. */
  daySeconds: number;
}

export function initialState(spec: AgentSpec, startMs: number): BehaviourState {
  const rng = new Rng(spec.metricSeed);
  // Idle hosts were last touched well before the run; everyone else just now.
  const lastActivityMs = spec.profile === 'idle' ? startMs - 2 * 3_600_000 : startMs;
  return { rng, beats: 0, phaseLeft: rng.int(5, 40), bursting: false, lastActivityMs };
}

const round = (n: number) => Math.round(n);

function busyGpu(g: GpuSpec, rng: Rng, load: number): GpuSample {
  const utilization = Math.min(100, round(load * rng.between(0.85, 1.0) * 100));
  return {
    index: g.index,
    uuid: g.uuid,
    name: g.name,
    utilization_percent: utilization,
    memory_used_mb: round(g.memoryTotalMb * rng.between(0.6, 0.95)),
    memory_total_mb: g.memoryTotalMb,
    temperature_celsius: round(rng.between(58, 84)),
    power_watts: round(g.idlePowerWatts + (g.maxPowerWatts - g.idlePowerWatts) * load * rng.between(0.7, 1.0)),
  };
}

function idleGpu(g: GpuSpec, rng: Rng): GpuSample {
  return {
    index: g.index,
    uuid: g.uuid,
    name: g.name,
    // Below the default 5 % idle threshold: an idle GPU still shows a blip of driver activity.
    utilization_percent: rng.chance(0.8) ? 0 : rng.int(1, 2),
    memory_used_mb: rng.int(0, 600),
    memory_total_mb: g.memoryTotalMb,
    temperature_celsius: round(rng.between(28, 42)),
    power_watts: round(g.idlePowerWatts * rng.between(0.8, 1.3)),
  };
}

function busy(spec: AgentSpec, state: BehaviourState, nowMs: number, load: number): HostSample {
  const { rng } = state;
  state.lastActivityMs = nowMs - rng.int(0, 120) * 1000;
  return {
    gpus: spec.gpus.map((g) => busyGpu(g, rng, load)),
    processCount: rng.int(1, Math.max(1, Math.ceil(spec.gpus.length / 2) + 1)),
    activeUsers: rng.int(0, 2),
    lastActivityMs: state.lastActivityMs,
    collectorErrors: [],
  };
}

function idle(spec: AgentSpec, state: BehaviourState): HostSample {
  return {
    gpus: spec.gpus.map((g) => idleGpu(g, state.rng)),
    processCount: 0,
    activeUsers: 0,
    lastActivityMs: state.lastActivityMs,
    collectorErrors: [],
  };
}

/** A driver that answers only sometimes: unknown values must read as "not idle" on the server. */
function flaky(spec: AgentSpec, state: BehaviourState, nowMs: number): HostSample {
  const { rng } = state;
  const sample = busy(spec, state, nowMs, rng.between(0.2, 0.7));
  let broken = false;
  for (const g of sample.gpus) {
    if (rng.chance(0.3)) {
      g.utilization_percent = null;
      broken = true;
    }
    if (rng.chance(0.15)) g.memory_used_mb = null;
    if (rng.chance(0.15)) g.temperature_celsius = null;
    if (rng.chance(0.2)) g.power_watts = null;
  }
  if (!broken) {
    // At least one unknown per beat keeps the host "not idle" whatever its numbers say.
    sample.gpus[rng.int(0, sample.gpus.length - 1)]!.utilization_percent = null;
  }
  if (rng.chance(0.2)) sample.processCount = null;
  if (rng.chance(0.5)) sample.collectorErrors = [{ collector: 'nvidia-smi', message: 'NVML: Unknown Error (GPU is lost)' }];
  return sample;
}

/**
 * One beat's sample. `elapsedSeconds` is run time since start (it drives the compressed day); the
 * agent's own random stream advances once per call, so a seed replays the same sequence of samples.
 */
export function sampleHost(
  spec: AgentSpec,
  state: BehaviourState,
  nowMs: number,
  elapsedSeconds: number,
  settings: BehaviourSettings,
): HostSample {
  state.beats += 1;
  switch (spec.profile) {
    case 'busy':
      return busy(spec, state, nowMs, state.rng.between(0.8, 1.0));
    case 'idle':
      return idle(spec, state);
    case 'bursty': {
      if (state.phaseLeft <= 0) {
        state.bursting = !state.bursting;
        state.phaseLeft = state.bursting ? state.rng.int(3, 15) : state.rng.int(5, 40);
      }
      state.phaseLeft -= 1;
      if (state.bursting) return busy(spec, state, nowMs, state.rng.between(0.6, 1.0));
      return idle(spec, state);
    }
    case 'diurnal': {
      const dayFraction = (elapsedSeconds / settings.daySeconds + spec.dayPhase) % 1;
      // Working hours 08:00–20:00 of the compressed day, strongest at 14:00.
      if (dayFraction >= 8 / 24 && dayFraction < 20 / 24) {
        const load = 0.55 + 0.45 * Math.sin(((dayFraction - 8 / 24) / (12 / 24)) * Math.PI);
        return busy(spec, state, nowMs, load);
      }
      return idle(spec, state);
    }
    case 'goes-offline':
      return busy(spec, state, nowMs, state.rng.between(0.3, 0.9));
    case 'flaky':
      return flaky(spec, state, nowMs);
  }
}

/**
 * goes-offline hosts fall silent (network cut, host crashed) for 8–15 beat intervals: first after a
 * planned number of beats, then now and then. Returns the intervals to stay silent, or 0.
 */
export function silenceAfterBeat(spec: AgentSpec, state: BehaviourState): number {
  if (spec.profile !== 'goes-offline') return 0;
  const due = state.beats === spec.beatsBeforeSilence || (state.beats > spec.beatsBeforeSilence && state.rng.chance(1 / 30));
  return due ? state.rng.int(8, 15) : 0;
}
