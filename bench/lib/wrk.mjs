import { fileURLToPath } from 'node:url';
import { runCommand } from './processes.mjs';
import { cpuTicks, ticksPerSecond } from './proc-stats.mjs';

const SCRIPT = fileURLToPath(new URL('../wrk-rotate.lua', import.meta.url));

/** One wrk run (1 thread, closed loop): every connection sends its next request when the last is answered. */
export async function runWrk({ url, requestFile, seconds, connections = 64, timeoutSeconds = 10 }) {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, `--timeout`, `${timeoutSeconds}s`, '-s', SCRIPT, url, '--', requestFile];
  // wrk's own CPU, sampled while it runs (its /proc entry goes when it exits): the load generator
  // shares the cores with the target, so its cost is part of the picture.
  let firstTicks = null;
  let lastTicks = null;
  let sampler = null;
  const result = await runCommand('wrk', args, {
    timeoutMs: (seconds + timeoutSeconds + 30) * 1000,
    onSpawn: (child) => {
      firstTicks = cpuTicks(child.pid);
      sampler = setInterval(() => {
        const t = cpuTicks(child.pid);
        if (t !== null) lastTicks = t;
      }, 200);
    },
  });
  clearInterval(sampler);
  const line = result.stdout.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (result.code !== 0 || !line) throw new Error(`wrk failed (${result.code}): ${result.stderr || result.stdout}`);
  const r = JSON.parse(line.slice('WRK_JSON '.length));
  return {
    requests: r.requests,
    seconds: r.duration_us / 1e6,
    rps: r.requests / (r.duration_us / 1e6),
    errors: r.connect_errors + r.read_errors + r.write_errors + r.timeouts,
    non2xx: r.status_errors,
    p50: r.p50_us / 1000,
    p90: r.p90_us / 1000,
    p99: r.p99_us / 1000,
    p999: r.p999_us / 1000,
    max: r.max_us / 1000,
    wrkCpuPercent: firstTicks !== null && lastTicks !== null ? ((lastTicks - firstTicks) / ticksPerSecond / (r.duration_us / 1e6)) * 100 : null,
  };
}

/**
 * Several wrk runs at once (one per replica): requests and rates add up; p50 is the request-weighted
 * mean of the runs' p50s and p99/max the worst run's (wrk cannot merge histograms across processes).
 */
export async function runWrkSet(runs, seconds) {
  const results = await Promise.all(runs.map((r) => runWrk({ ...r, seconds })));
  const requests = results.reduce((n, r) => n + r.requests, 0);
  const weighted = (key) => results.reduce((n, r) => n + r[key] * r.requests, 0) / Math.max(1, requests);
  return {
    requests,
    seconds: Math.max(...results.map((r) => r.seconds)),
    rps: results.reduce((n, r) => n + r.rps, 0),
    errors: results.reduce((n, r) => n + r.errors, 0),
    non2xx: results.reduce((n, r) => n + r.non2xx, 0),
    p50: weighted('p50'),
    p90: Math.max(...results.map((r) => r.p90)),
    p99: Math.max(...results.map((r) => r.p99)),
    p999: Math.max(...results.map((r) => r.p999)),
    max: Math.max(...results.map((r) => r.max)),
    wrkCpuPercent: results.reduce((n, r) => n + (r.wrkCpuPercent ?? 0), 0),
    runs: results.length,
  };
}
