import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export let ticksPerSecond = 100;
try {
  ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // 100 is the value on every Linux this runs on.
}

/** utime + stime of a process in clock ticks, or null once it is gone. */
export function cpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces or parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

function statusKb(pid, field) {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** Peak resident set (VmHWM), MB. */
export const peakRssMb = (pid) => {
  const kb = statusKb(pid, 'VmHWM');
  return kb === null ? null : kb / 1024;
};

export const rssMb = (pid) => {
  const kb = statusKb(pid, 'VmRSS');
  return kb === null ? null : kb / 1024;
};

/** CPU used by `pids` between two snapshots, as % of one core. */
export function cpuMeter(pids) {
  const start = new Map(pids.map((pid) => [pid, cpuTicks(pid)]));
  const t0 = performance.now();
  return () => {
    const seconds = (performance.now() - t0) / 1000;
    let ticks = 0;
    for (const [pid, before] of start) {
      const after = cpuTicks(pid);
      if (before !== null && after !== null) ticks += after - before;
    }
    return seconds > 0 ? (ticks / ticksPerSecond / seconds) * 100 : 0;
  };
}
