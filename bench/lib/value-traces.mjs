// Seeded week-long traces for the hibernation-value benchmark, and the oracle that knows them.
// One sample per 30 s step and instance: per-GPU utilization (or unknown), GPU process count (or
// unknown), whether a person did something, whether a collector failed. Besides what the agent
// observes, each step keeps the truth behind it (`demand`): a flaky driver can hide a busy GPU, and
// counting busy hibernations must not trust the very readings that were hidden.
import { deriveSeed, GPU_MODELS, Rng } from '../../packages/simulator/dist/index.js';

export const STEP_SECONDS = 30;
export const STEP_MS = STEP_SECONDS * 1000;
export const STEPS_PER_HOUR = 3600 / STEP_SECONDS;
export const STEPS_PER_DAY = 24 * STEPS_PER_HOUR;
/** A Monday, 00:00 UTC: the week's work days fall where a calendar puts them. */
export const WEEK_START_MS = Date.parse('2026-03-02T00:00:00Z');
export const UNKNOWN = 255;
/** The server's default idle rule: every GPU below this, no GPU process. */
export const IDLE_PERCENT = 5;

/** Instances per profile in a fleet of 32; other sizes keep the proportions. */
export const PROFILE_WEIGHTS = [
  ['busy', 5],
  ['idle', 4],
  ['bursty', 5],
  ['notebook', 8],
  ['training', 6],
  ['flaky', 4],
];

const GPU_COUNTS = [
  [1, 30],
  [2, 20],
  [4, 25],
  [8, 25],
];

/** Rough rental prices, USD per GPU-hour, by model name. */
const GPU_PRICE = {
  'NVIDIA H100 80GB HBM3': 2.49,
  'NVIDIA A100-SXM4-80GB': 1.79,
  'NVIDIA A100-PCIE-40GB': 1.29,
  'NVIDIA L40S': 0.99,
  'NVIDIA GeForce RTX 4090': 0.45,
  'NVIDIA GeForce RTX 3090': 0.25,
  'NVIDIA A10G': 0.75,
};

/** Profiles for `n` instances, in proportion to PROFILE_WEIGHTS (largest remainder), interleaved. */
export function profilesFor(n) {
  const total = PROFILE_WEIGHTS.reduce((s, [, w]) => s + w, 0);
  const counts = PROFILE_WEIGHTS.map(([name, w]) => ({ name, exact: (n * w) / total }));
  for (const c of counts) c.count = Math.floor(c.exact);
  let left = n - counts.reduce((s, c) => s + c.count, 0);
  for (const c of [...counts].sort((a, b) => b.exact - b.count - (a.exact - a.count))) {
    if (left-- <= 0) break;
    c.count += 1;
  }
  const out = [];
  for (let round = 0; out.length < n; round++) for (const c of counts) if (round < c.count) out.push(c.name);
  return out;
}

const logUniformInt = (rng, min, max) => Math.round(Math.exp(rng.between(Math.log(min), Math.log(max))));

/** One instance's week. */
export class Trace {
  constructor(steps, gpuCount) {
    this.steps = steps;
    this.gpuCount = gpuCount;
    this.util = new Uint8Array(steps * gpuCount);
    this.proc = new Int8Array(steps);
    this.act = new Uint8Array(steps);
    this.err = new Uint8Array(steps);
    this.demand = new Uint8Array(steps);
    /** Last step with activity at or before each step, −1 for none yet. */
    this.lastAct = new Int32Array(steps);
  }

  /** Busy GPUs: every GPU at `load` (a fraction), give or take; `gpus` limits it to the first few. */
  busy(k, rng, load, procs, gpus = this.gpuCount) {
    if (k < 0 || k >= this.steps) return;
    for (let j = 0; j < this.gpuCount; j++) {
      this.util[k * this.gpuCount + j] = j < gpus ? Math.max(IDLE_PERCENT, Math.min(100, Math.round(load * rng.between(0.85, 1) * 100))) : rng.chance(0.8) ? 0 : 1;
    }
    this.proc[k] = procs;
  }

  /** Quiet GPUs (driver blips below the threshold) with `procs` processes holding them. */
  quiet(k, rng, procs = 0, max = 2) {
    if (k < 0 || k >= this.steps) return;
    for (let j = 0; j < this.gpuCount; j++) this.util[k * this.gpuCount + j] = rng.chance(0.75) ? 0 : rng.int(1, max);
    this.proc[k] = procs;
  }

  touch(k) {
    if (k >= 0 && k < this.steps) this.act[k] = 1;
  }

  /** The truth per step, before masking, and the running last activity. */
  seal() {
    // Once: a flaky driver's mask, applied after, must not change the truth.
    if (this.sealed) return;
    this.sealed = true;
    let last = -1;
    for (let k = 0; k < this.steps; k++) {
      let busy = this.proc[k] > 0 || this.act[k] === 1;
      for (let j = 0; !busy && j < this.gpuCount; j++) busy = this.util[k * this.gpuCount + j] >= IDLE_PERCENT;
      this.demand[k] = busy ? 1 : 0;
      if (this.act[k]) last = k;
      this.lastAct[k] = last;
    }
  }

  /** Idle as the agent sees it: every GPU known and below the threshold, no process, no activity, no collector error. */
  observedIdle(k) {
    if (this.err[k] || this.act[k] || this.proc[k] !== 0) return false;
    for (let j = 0; j < this.gpuCount; j++) {
      const u = this.util[k * this.gpuCount + j];
      if (u === UNKNOWN || u >= IDLE_PERCENT) return false;
    }
    return true;
  }
}

function busyProfile(t, rng) {
  for (let k = 0; k < t.steps; k++) {
    // A checkpoint save: the GPUs rest a minute, the training process stays.
    if (rng.chance(1 / 240)) {
      const n = rng.int(1, 3);
      for (let i = 0; i < n && k < t.steps; i++, k++) t.quiet(k, rng, rng.int(1, t.gpuCount), 3);
      k -= 1;
      continue;
    }
    t.busy(k, rng, rng.between(0.7, 1), rng.int(1, t.gpuCount));
    if (rng.chance(0.03)) t.touch(k);
  }
}

/** Forgotten: rented and left alone, but for a rare look. */
function idleProfile(t, rng) {
  for (let k = 0; k < t.steps; k++) t.quiet(k, rng);
  const visits = rng.int(0, 2);
  for (let v = 0; v < visits; v++) {
    const start = rng.int(0, t.steps - 1);
    const len = rng.int(6, 60);
    for (let k = start; k < Math.min(t.steps, start + len); k++) {
      if (rng.chance(0.7)) t.touch(k);
      if (rng.chance(0.25)) t.busy(k, rng, rng.between(0.2, 1), 1, 1);
    }
  }
}

/** Bursts of work (5 min – 1 h) between lulls of 5 min – 4 h. */
function burstyProfile(t, rng) {
  let k = rng.int(0, 60);
  for (let j = 0; j < k; j++) t.quiet(j, rng);
  while (k < t.steps) {
    const burst = rng.int(10, 120);
    t.touch(k);
    for (let i = 0; i < burst && k < t.steps; i++, k++) {
      t.busy(k, rng, rng.between(0.5, 1), rng.int(1, t.gpuCount));
      if (rng.chance(0.1)) t.touch(k);
    }
    const lull = logUniformInt(rng, 10, 480);
    for (let i = 0; i < lull && k < t.steps; i++, k++) t.quiet(k, rng);
  }
}

/**
 * A notebook in someone's working hours (their time zone): cells run now and then, coffee breaks and
 * lunch, nights and weekends off. Some notebooks keep a CUDA context open all day (a GPU process the
 * whole session, sometimes left open overnight); others hold the GPU only while a cell runs.
 */
function notebookProfile(t, rng) {
  for (let k = 0; k < t.steps; k++) t.quiet(k, rng);
  const tz = rng.pick([-8, -5, 0, 1, 2, 5.5, 8, 9]);
  const holdsKernel = rng.chance(0.4);
  const stepAt = (localDay, hour) => Math.round((localDay * 24 + hour - tz) * STEPS_PER_HOUR);
  const sessions = [];
  for (let day = -1; day <= 7; day++) {
    const weekday = ((day % 7) + 7) % 7; // 0 = Monday (the week starts on one)
    if (weekday < 5) {
      if (rng.chance(0.08)) continue; // a day off
      sessions.push({ start: stepAt(day, rng.between(8, 10)), end: stepAt(day, rng.between(17, 19.5)), lunch: stepAt(day, rng.between(12, 13.5)) });
    } else if (rng.chance(0.2)) {
      const start = rng.between(11, 15);
      sessions.push({ start: stepAt(day, start), end: stepAt(day, start + rng.between(1.5, 4)), lunch: null });
    }
  }
  for (const [i, s] of sessions.entries()) {
    let k = s.start;
    let lunchDone = s.lunch === null;
    const kernel = holdsKernel ? 1 : 0;
    while (k < s.end) {
      // A stretch of work: typing most steps, a cell running now and then.
      const work = rng.int(40, 180);
      let cell = 0;
      for (let j = 0; j < work && k < s.end; j++, k++) {
        if (cell === 0 && rng.chance(0.08)) cell = rng.int(1, 20);
        if (cell > 0) {
          t.busy(k, rng, rng.between(0.3, 1), 1, rng.int(1, t.gpuCount));
          cell -= 1;
        } else t.quiet(k, rng, kernel, 4);
        if (rng.chance(0.6)) t.touch(k);
      }
      if (k >= s.end) break;
      const pause = !lunchDone && k >= s.lunch ? rng.int(70, 120) : rng.chance(0.5) ? rng.int(20, 50) : 0;
      if (!lunchDone && k >= s.lunch) lunchDone = true;
      for (let j = 0; j < pause && k < s.end; j++, k++) t.quiet(k, rng, kernel);
    }
    // Left open overnight: the kernel's process holds the GPU until the next session.
    if (holdsKernel && rng.chance(0.3)) {
      const until = sessions[i + 1]?.start ?? t.steps;
      for (let k2 = Math.max(0, s.end); k2 < Math.min(t.steps, until); k2++) t.quiet(k2, rng, 1);
    }
  }
}

/**
 * Training jobs (4–30 h) of busy epochs (10–45 min) with quiet data-loading phases (1–8 min, GPU
 * below 5 %); the job's process usually stays through them. Between jobs the box waits 20 min – 16 h
 * for the next one.
 */
function trainingProfile(t, rng) {
  let k = 0;
  const gap = rng.int(0, 600);
  for (; k < gap; k++) t.quiet(k, rng);
  while (k < t.steps) {
    const end = k + rng.int(4 * STEPS_PER_HOUR, 30 * STEPS_PER_HOUR);
    t.touch(k);
    const procs = rng.int(1, t.gpuCount);
    while (k < end && k < t.steps) {
      const epoch = rng.int(20, 90);
      for (let i = 0; i < epoch && k < end && k < t.steps; i++, k++) {
        t.busy(k, rng, rng.between(0.85, 1), procs);
        if (rng.chance(1 / 120)) t.touch(k);
      }
      const loading = rng.int(2, 16);
      const held = rng.chance(0.85) ? procs : 0;
      for (let i = 0; i < loading && k < end && k < t.steps; i++, k++) t.quiet(k, rng, held, 4);
    }
    const wait = logUniformInt(rng, 40, 16 * STEPS_PER_HOUR);
    for (let i = 0; i < wait && k < t.steps; i++, k++) t.quiet(k, rng);
  }
}

/**
 * A development box whose driver misbehaves: the work of a bursty box with long lulls, and beats
 * whose GPU reads [N/A] or whose nvidia-smi fails outright, sometimes in bad spells.
 */
function flakyProfile(t, rng) {
  let k = rng.int(0, 120);
  for (let j = 0; j < k; j++) t.quiet(j, rng);
  while (k < t.steps) {
    const burst = rng.int(10, 90);
    t.touch(k);
    for (let i = 0; i < burst && k < t.steps; i++, k++) t.busy(k, rng, rng.between(0.3, 0.9), rng.int(1, t.gpuCount));
    const lull = logUniformInt(rng, 60, 1440);
    for (let i = 0; i < lull && k < t.steps; i++, k++) t.quiet(k, rng);
  }
  t.seal();
  let spell = 0;
  for (let k2 = 0; k2 < t.steps; k2++) {
    if (spell === 0 && rng.chance(1 / 1500)) spell = rng.int(20, 120);
    const p = spell > 0 ? 0.4 : 0.005;
    if (spell > 0) spell -= 1;
    if (rng.chance(p)) {
      t.err[k2] = 1;
      t.proc[k2] = -1;
      for (let j = 0; j < t.gpuCount; j++) t.util[k2 * t.gpuCount + j] = UNKNOWN;
    } else if (rng.chance(p)) {
      t.util[k2 * t.gpuCount + rng.int(0, t.gpuCount - 1)] = UNKNOWN;
    }
  }
}

const PROFILE_FN = { busy: busyProfile, idle: idleProfile, bursty: burstyProfile, notebook: notebookProfile, training: trainingProfile, flaky: flakyProfile };

/**
 * The fleet and its traces for `seed`: the same for a seed whatever the threshold, so every
 * threshold's run replays the very same week.
 */
export function valueFleet({ seed, instances, days = 7, firstInstanceId = 700_000 }) {
  const steps = Math.round(days * STEPS_PER_DAY);
  return profilesFor(instances).map((profile, index) => {
    const rng = new Rng(deriveSeed(seed, index, 0));
    const gpuCount = rng.weighted(GPU_COUNTS);
    const model = rng.pick(GPU_MODELS);
    const instanceId = firstInstanceId + index;
    const gpus = Array.from({ length: gpuCount }, (_, i) => ({
      index: i,
      uuid: `GPU-${rng.hex(8)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(12)}`,
      name: model.name,
      memoryTotalMb: model.memoryTotalMb,
      maxPowerWatts: model.maxPowerWatts,
      idlePowerWatts: model.idlePowerWatts,
    }));
    const trace = new Trace(steps, gpuCount);
    const traceRng = new Rng(deriveSeed(seed, index, 1));
    PROFILE_FN[profile](trace, traceRng);
    trace.seal();
    const pricePerGpuHour = GPU_PRICE[model.name] ?? 1;
    return {
      spec: { index, instanceId, hostname: `value-${instanceId}`, profile, gpus, agentVersion: '1.2.0' },
      trace,
      pricePerGpuHour,
      pricePerHour: Math.round(pricePerGpuHour * gpuCount * 100) / 100,
    };
  });
}

/** The agent's sample of step `k` (the simulator's HostSample shape, for its heartbeatBody). */
export function sampleAt(spec, trace, k) {
  const g = trace.gpuCount;
  const proc = trace.proc[k];
  const gpus = spec.gpus.map((gpu, j) => {
    const u = trace.util[k * g + j];
    const known = u !== UNKNOWN;
    const used = proc > 0 || (known && u >= IDLE_PERCENT);
    return {
      index: gpu.index,
      uuid: gpu.uuid,
      name: gpu.name,
      utilization_percent: known ? u : null,
      memory_used_mb: trace.err[k] ? null : used ? Math.round(gpu.memoryTotalMb * 0.7) : 300,
      memory_total_mb: gpu.memoryTotalMb,
      temperature_celsius: trace.err[k] ? null : 32 + Math.round((known ? u : 0) * 0.5),
      power_watts: trace.err[k] ? null : Math.round(gpu.idlePowerWatts + ((gpu.maxPowerWatts - gpu.idlePowerWatts) * (known ? u : 0)) / 100),
    };
  });
  const last = trace.lastAct[k];
  return {
    gpus,
    processCount: proc < 0 ? null : proc,
    activeUsers: trace.act[k] ? 1 : 0,
    // Never touched in the week: last touched well before it.
    lastActivityMs: last < 0 ? WEEK_START_MS - 6 * 3_600_000 : WEEK_START_MS + last * STEP_MS,
    collectorErrors: trace.err[k] ? [{ collector: 'nvidia-smi', message: 'NVML: Unknown Error' }] : [],
  };
}

/** Maximal idle stretches as [start, end) step ranges. Unknown breaks a stretch: unknown is not idle. */
export function idleStretches(trace) {
  const out = [];
  let start = -1;
  for (let k = 0; k <= trace.steps; k++) {
    const idle = k < trace.steps && trace.observedIdle(k);
    if (idle && start < 0) start = k;
    if (!idle && start >= 0) {
      out.push([start, k]);
      start = -1;
    }
  }
  return out;
}

/**
 * GPU-hours of `off` ([index, fromStep, toStep) per stopped interval) that fall inside the windows a
 * perfect policy with threshold T reclaims ([start + T, end) of each idle stretch longer than T). Time
 * off outside them is not compared: a stopped machine reports nothing, so the unknown readings that
 * break the oracle's stretches never reach the policy.
 */
export function reclaimedInsideOracle(fleet, thresholdMinutes, off) {
  const thresholdSteps = (thresholdMinutes * 60) / STEP_SECONDS;
  const byIndex = new Map();
  for (const [index, from, to] of off) (byIndex.get(index) ?? byIndex.set(index, []).get(index)).push([from, to]);
  let gpuHours = 0;
  for (const { spec, trace } of fleet) {
    const intervals = byIndex.get(spec.index) ?? [];
    if (intervals.length === 0) continue;
    for (const [s, e] of idleStretches(trace)) {
      if (e - s <= thresholdSteps) continue;
      for (const [from, to] of intervals) {
        const steps = Math.min(e, to) - Math.max(s + thresholdSteps, from);
        if (steps > 0) gpuHours += ((steps * STEP_SECONDS) / 3600) * trace.gpuCount;
      }
    }
  }
  return gpuHours;
}

/**
 * What a perfect policy with threshold T reclaims: each idle stretch longer than T, minus T, times
 * the GPUs; and in dollars at the instance's price.
 */
export function oracle(fleet, thresholdMinutes) {
  const thresholdSteps = (thresholdMinutes * 60) / STEP_SECONDS;
  let gpuHours = 0;
  let usd = 0;
  let idleGpuHours = 0;
  let stretches = 0;
  let regrets = 0;
  for (const { trace, pricePerHour } of fleet) {
    for (const [s, e] of idleStretches(trace)) {
      const hours = ((e - s) * STEP_SECONDS) / 3600;
      idleGpuHours += hours * trace.gpuCount;
      if (e - s <= thresholdSteps) continue;
      stretches += 1;
      // Woken within an hour of its hibernation (a stretch that lasts to the end of the trace is not woken).
      if (e < trace.steps && e - s - thresholdSteps < STEPS_PER_HOUR) regrets += 1;
      const reclaim = ((e - s - thresholdSteps) * STEP_SECONDS) / 3600;
      gpuHours += reclaim * trace.gpuCount;
      usd += reclaim * pricePerHour;
    }
  }
  return { gpuHours, usd, idleGpuHours, stretches, regrets };
}
