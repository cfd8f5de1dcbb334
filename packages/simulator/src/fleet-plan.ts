import { GPU_COUNT_WEIGHTS, GPU_MODELS } from './gpu-models.js';
import { deriveSeed, Rng } from './prng.js';
import { DEFAULT_MIX, mixEntries, type ProfileMix, type ProfileName } from './profiles.js';

export interface GpuSpec {
  index: number;
  uuid: string;
  name: string;
  memoryTotalMb: number;
  maxPowerWatts: number;
  idlePowerWatts: number;
}

/** Everything fixed about one simulated host for the whole run. */
export interface AgentSpec {
  index: number;
  instanceId: number;
  hostname: string;
  profile: ProfileName;
  gpus: GpuSpec[];
  agentVersion: string;
  /** Seeds this agent's own stream of metric noise. */
  metricSeed: number;
  /** Where in the compressed day this host's working hours fall (diurnal), in [0, 1). */
  dayPhase: number;
  /** goes-offline: how many beats it sends before its first silence. */
  beatsBeforeSilence: number;
}

export interface PlanOptions {
  seed: number;
  agents: number;
  firstInstanceId: number;
  mix?: ProfileMix;
}

const AGENT_VERSIONS: ReadonlyArray<readonly [string, number]> = [
  ['1.2.0', 80],
  ['1.1.4', 15],
  ['1.0.9', 5],
];

function uuidFrom(rng: Rng): string {
  const h = rng.hex(32);
  return `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** The spec of agent `index` alone: the same for a seed whatever the size of the fleet. */
export function planAgent(seed: number, index: number, firstInstanceId: number, mix: ProfileMix = DEFAULT_MIX): AgentSpec {
  const rng = new Rng(deriveSeed(seed, index, 0));
  const profile = rng.weighted(mixEntries(mix));
  const count = rng.weighted(GPU_COUNT_WEIGHTS);
  // A host holds one model; mixed hosts are rare enough to leave out.
  const model = rng.pick(GPU_MODELS);
  const gpus: GpuSpec[] = [];
  for (let i = 0; i < count; i++) {
    gpus.push({
      index: i,
      uuid: uuidFrom(rng),
      name: model.name,
      memoryTotalMb: model.memoryTotalMb,
      maxPowerWatts: model.maxPowerWatts,
      idlePowerWatts: model.idlePowerWatts,
    });
  }
  const instanceId = firstInstanceId + index;
  return {
    index,
    instanceId,
    hostname: `sim-${instanceId}`,
    profile,
    gpus,
    agentVersion: rng.weighted(AGENT_VERSIONS),
    metricSeed: deriveSeed(seed, index, 1),
    dayPhase: rng.next(),
    beatsBeforeSilence: rng.int(3, 12),
  };
}

export function planFleet(options: PlanOptions): AgentSpec[] {
  if (!Number.isSafeInteger(options.agents) || options.agents < 0) throw new Error('agents must be a whole number ≥ 0');
  const last = options.firstInstanceId + options.agents - 1;
  if (!Number.isSafeInteger(options.firstInstanceId) || options.firstInstanceId < 1 || !Number.isSafeInteger(last)) {
    throw new Error('instance ids must be whole numbers ≥ 1 within the safe integer range');
  }
  const plan: AgentSpec[] = new Array(options.agents);
  for (let i = 0; i < options.agents; i++) plan[i] = planAgent(options.seed, i, options.firstInstanceId, options.mix);
  return plan;
}

export function profileCounts(plan: readonly AgentSpec[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of plan) counts[a.profile] = (counts[a.profile] ?? 0) + 1;
  return counts;
}
