import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg, release, totalmem } from 'node:os';

function cpuTimes() {
  const [line] = readFileSync('/proc/stat', 'utf8').split('\n');
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = values[3] + (values[4] ?? 0);
  return { idle, total: values.reduce((a, b) => a + b, 0) };
}

/** Share of all cores busy from now until the returned function is called (everything, not only ours). */
export function machineMeter() {
  const a = cpuTimes();
  return () => {
    const b = cpuTimes();
    const total = b.total - a.total;
    return total > 0 ? (1 - (b.idle - a.idle) / total) * 100 : 0;
  };
}

/** Share of all cores busy over `ms`, to warn when something else is loading the machine. */
export async function busyPercent(ms = 1000) {
  const meter = machineMeter();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return meter();
}

export async function describeMachine() {
  let model = 'unknown';
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? model;
  } catch {
    // not Linux: keep "unknown"
  }
  return {
    cpus: availableParallelism(),
    cpuModel: model,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    loadAverage: loadavg().map((n) => Math.round(n * 100) / 100),
    busyBeforeRunPercent: Math.round(await busyPercent()),
  };
}
