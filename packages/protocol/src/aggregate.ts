import type { GpuMetrics, GpuSample } from './heartbeat.js';

type MetricValue = number | null | undefined;

const known = (values: MetricValue[]): number[] | null =>
  values.every((v): v is number => typeof v === 'number') ? values : null;

function maxOf(values: MetricValue[]): number | null {
  const all = known(values);
  return all && all.length > 0 ? Math.max(...all) : null;
}

function sumOf(values: MetricValue[]): number | null {
  const all = known(values);
  return all && all.length > 0 ? all.reduce((a, b) => a + b, 0) : null;
}

/**
 * The host-level `gpu_metrics` of a multi-GPU host: max utilization, summed memory and power, max
 * temperature. One unknown GPU makes the aggregate unknown: averaging or skipping it would let a busy
 * GPU whose driver stopped answering read as idle.
 */
export function aggregateGpuMetrics(gpus: readonly GpuSample[]): Required<GpuMetrics> {
  return {
    utilization_percent: maxOf(gpus.map((g) => g.utilization_percent)),
    memory_used_mb: sumOf(gpus.map((g) => g.memory_used_mb)),
    memory_total_mb: sumOf(gpus.map((g) => g.memory_total_mb)),
    temperature_celsius: maxOf(gpus.map((g) => g.temperature_celsius)),
    power_watts: sumOf(gpus.map((g) => g.power_watts)),
  };
}
