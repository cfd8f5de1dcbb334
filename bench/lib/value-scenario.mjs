// The hibernation-value target: how much of the idle GPU time a perfect policy would reclaim Dumont
// reclaims, over the same simulated week, for several thresholds. Each threshold is a separate run of
// the real server (bench/lib/value-run.mjs, a process each, two at a time on two cores); the oracle is
// computed here from the same seeded traces.
import { join } from 'node:path';
import { runCommand } from './processes.mjs';
import { ROOT } from './targets.mjs';
import { oracle, PROFILE_WEIGHTS, reclaimedInsideOracle, valueFleet } from './value-traces.mjs';

const RUN = join(ROOT, 'bench/lib/value-run.mjs');

export const VALUE_TARGET = { sharePercent: 90, busyHibernations: 0 };

export async function valueScenario({ say, seed = 1, instances = 32, days = 7, thresholds = [10, 30, 60], parallel = 2 }) {
  const wall0 = performance.now();
  const fleet = valueFleet({ seed, instances, days });
  const gpus = fleet.reduce((s, f) => s + f.trace.gpuCount, 0);
  const profiles = Object.fromEntries(PROFILE_WEIGHTS.map(([p]) => [p, fleet.filter((f) => f.spec.profile === p).length]));
  say(`value: ${instances} instances (${gpus} GPUs; ${Object.entries(profiles).map(([p, n]) => `${p} ${n}`).join(', ')}), ${days} simulated days in 30 s steps, thresholds ${thresholds.join(', ')} min, seed ${seed}…`);

  const queue = [...thresholds];
  const runs = new Map();
  const worker = async () => {
    while (queue.length) {
      const t = queue.shift();
      const r = await runCommand(process.execPath, [RUN, JSON.stringify({ seed, instances, days, thresholdMinutes: t })], { timeoutMs: 20 * 60_000 });
      if (r.code !== 0) throw new Error(`value run at ${t} min exited with ${r.code ?? r.signal}: ${(r.stderr || r.stdout).trim().slice(-2000)}`);
      const run = JSON.parse(r.stdout.trim().split('\n').pop());
      say(`value: threshold ${t} min done in ${run.wallSeconds.toFixed(0)} s (${run.counts.beats.toLocaleString('en-US')} beats)`);
      runs.set(t, run);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, thresholds.length)) }, worker));

  const rows = thresholds.map((t) => {
    const run = runs.get(t);
    const o = oracle(fleet, t);
    // Where the policy's own delay goes: the server fires only after the warning, and the machine
    // stops at the agent's confirmation a beat later; an oracle that waited as long reclaims this.
    const delayMinutes = run.settings.hibernationWarningSeconds / 60 + run.settings.heartbeatIntervalSeconds / 60;
    const delayed = oracle(fleet, t + delayMinutes);
    const inside = reclaimedInsideOracle(fleet, t, run.offSteps);
    const byProfile = Object.keys(profiles).map((p) => {
      const po = oracle(
        fleet.filter((f) => f.spec.profile === p),
        t,
      );
      const mine = run.perProfile[p] ?? { gpuHours: 0, hibernations: 0, regrets: 0 };
      const insideGpuHours = reclaimedInsideOracle(
        fleet.filter((f) => f.spec.profile === p),
        t,
        run.offSteps,
      );
      return {
        profile: p,
        instances: profiles[p],
        oracleGpuHours: po.gpuHours,
        oracleStretches: po.stretches,
        reclaimedGpuHours: mine.gpuHours,
        insideGpuHours,
        hibernations: mine.hibernations,
        regrets: mine.regrets,
      };
    });
    return {
      thresholdMinutes: t,
      oracleGpuHours: o.gpuHours,
      oracleUsd: o.usd,
      oracleStretches: o.stretches,
      oracleRegrets: o.regrets,
      delayMinutes,
      delayedOracleGpuHours: delayed.gpuHours,
      idleGpuHours: o.idleGpuHours,
      reclaimedGpuHours: run.server.gpuHoursSaved,
      ownGpuHours: run.own.gpuHours,
      sharePercent: o.gpuHours > 0 ? (run.server.gpuHoursSaved / o.gpuHours) * 100 : null,
      /** Reclaimed inside the oracle's windows only: at most 100 %, what the target is checked on. */
      insideGpuHours: inside,
      insideSharePercent: o.gpuHours > 0 ? (inside / o.gpuHours) * 100 : null,
      hibernations: run.counts.hibernations,
      serverHibernations: run.server.hibernations,
      busyHibernations: run.counts.busyHibernations,
      commandsOnBusyBeat: run.counts.commandsOnBusyBeat,
      guardRefusals: run.counts.guardRefusals,
      guardRefusalReasons: run.counts.guardRefusalReasons,
      regrets: run.counts.regrets,
      wakes: run.counts.wakes,
      usdSaved: run.server.usdSaved,
      beats: run.counts.beats,
      errors: run.counts.errors,
      stillOffAtEnd: run.own.stillOffAtEnd,
      wallSeconds: run.wallSeconds,
      byProfile,
    };
  });
  const settings = runs.get(thresholds[0]).settings;
  const wallSeconds = (performance.now() - wall0) / 1000;
  for (const r of rows) {
    say(
      `value: T=${r.thresholdMinutes} min: ${r.reclaimedGpuHours.toFixed(1)} of ${r.oracleGpuHours.toFixed(1)} GPU-h (${r.sharePercent?.toFixed(1)} %), ` +
        `inside the oracle's windows ${r.insideGpuHours.toFixed(1)} (${r.insideSharePercent?.toFixed(1)} %), ${r.hibernations} hibernations, ${r.busyHibernations} busy, ${r.regrets} regrets, $${r.usdSaved.toFixed(0)}`,
    );
  }
  say(`value: ${wallSeconds.toFixed(0)} s wall in all`);
  return { seed, instances, gpus, days, profiles, settings, stepSeconds: 30, parallel, rows, wallSeconds, target: VALUE_TARGET };
}
