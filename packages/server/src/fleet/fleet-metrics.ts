import { INSTANCE_STATUSES, type GpuSample, type InstanceStatus } from '@dumont/protocol';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Clock } from '../clock.js';
import { hibernateInSeconds } from '../policy/hibernation-policy.js';
import type { InstanceRow } from '../store/schema.js';
import type { FleetStore, InstanceSummaryRow } from '../store/store.js';
import { openIntervals, sumSavings, totalOf } from './savings.js';

const BYTES_PER_MIB = 1_048_576;
const SECONDS_PER_HOUR = 3600;
const PAGE = 1000;
/** Stored metrics of a machine that stopped beating are stale: they are not exported as current. */
const BEATING: ReadonlySet<string> = new Set<InstanceStatus>(['active', 'idle', 'hibernating']);

const GPU_LABELS = ['instance_id', 'hostname', 'gpu', 'uuid'] as const;

type GpuLabels = Record<(typeof GPU_LABELS)[number], string>;

/**
 * Prometheus metrics of one server process, in a private registry (never prom-client's global one,
 * so two apps in one process, as in tests, never share series).
 *
 * Process counters (heartbeats, request durations) live in memory and restart from 0 with the process,
 * which Prometheus' `rate()` handles. Fleet figures are read from the store on each scrape, so every
 * replica reports the same fleet; the all-time savings and hibernation counters are derived from the
 * savings intervals and therefore survive restarts.
 */
export class FleetMetrics {
  readonly registry = new Registry();
  readonly contentType = 'text/plain; version=0.0.4; charset=utf-8';

  private readonly heartbeats = new Counter({
    name: 'dumont_heartbeats_total',
    help: 'Heartbeats accepted (answered 200) by this process since it started.',
    registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: 'dumont_http_request_duration_seconds',
    help: 'Time to answer HTTP requests, by route pattern.',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  private readonly gpuUtilization = this.gpuGauge('dumont_gpu_utilization_ratio', 'GPU utilization (0 to 1) in the latest heartbeat.');
  private readonly gpuMemoryUsed = this.gpuGauge('dumont_gpu_memory_used_bytes', 'GPU memory in use in the latest heartbeat.');
  private readonly gpuMemoryTotal = this.gpuGauge('dumont_gpu_memory_total_bytes', 'GPU memory size in the latest heartbeat.');
  private readonly gpuTemperature = this.gpuGauge('dumont_gpu_temperature_celsius', 'GPU temperature in the latest heartbeat.');
  private readonly gpuPower = this.gpuGauge('dumont_gpu_power_watts', 'GPU power draw in the latest heartbeat.');

  private readonly instances = new Gauge({
    name: 'dumont_instances',
    help: 'Instances by status.',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  private readonly countdown = new Gauge({
    name: 'dumont_hibernation_countdown_seconds',
    help: 'Seconds until a scheduled hibernation is issued (0 while it is under way).',
    labelNames: ['instance_id', 'hostname'] as const,
    registers: [this.registry],
  });
  private readonly hibernations = new Counter({
    name: 'dumont_hibernations_total',
    help: 'Hibernations that stopped a machine, all time: ended hibernated intervals plus those open now.',
    registers: [this.registry],
  });
  // Seconds, not the API's hours: Prometheus' base unit (promtool's lint refuses `_hours`).
  private readonly hibernatedSeconds = new Counter({
    name: 'dumont_hibernated_seconds_total',
    help: 'Seconds instances spent hibernated, all time.',
    registers: [this.registry],
  });
  private readonly gpuSecondsSaved = new Counter({
    name: 'dumont_gpu_seconds_saved_total',
    help: 'GPU-seconds not paid for thanks to hibernation, all time.',
    registers: [this.registry],
  });
  private readonly usdSaved = new Counter({
    name: 'dumont_usd_saved_total',
    help: 'US dollars saved by hibernation (instances with a known price), all time.',
    registers: [this.registry],
  });

  /** Concurrent scrapes share one read of the store instead of racing to reset the same gauges. */
  private inFlight: Promise<string> | null = null;

  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
  ) {}

  recordHeartbeat(): void {
    this.heartbeats.inc();
  }

  /** The exposition text, with the fleet read from the store now. */
  scrape(): Promise<string> {
    this.inFlight ??= this.collect().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async collect(): Promise<string> {
    const now = this.clock.now();
    const [counts, savings, open] = await Promise.all([
      this.store.countInstancesByStatus(null),
      this.store.listSavings({ owner: null, from: 0, to: now }),
      this.store.listOpenSavings({ owner: null }),
    ]);

    this.instances.reset();
    for (const status of INSTANCE_STATUSES) this.instances.set({ status }, counts.get(status) ?? 0);

    const hibernatedNow = open.filter((row) => row.status === 'hibernated').length;
    const ended = savings.filter((row) => row.kind === 'hibernated').length;
    setCounter(this.hibernations, ended + hibernatedNow);
    const total = totalOf(sumSavings([...savings, ...openIntervals(open, now)], 0, now).values());
    setCounter(this.hibernatedSeconds, total.hibernated_hours * SECONDS_PER_HOUR);
    setCounter(this.gpuSecondsSaved, total.gpu_hours_saved * SECONDS_PER_HOUR);
    setCounter(this.usdSaved, total.usd_saved);

    for (const gauge of [this.countdown, this.gpuUtilization, this.gpuMemoryUsed, this.gpuMemoryTotal, this.gpuTemperature, this.gpuPower]) {
      gauge.reset();
    }
    for await (const row of this.allInstances()) {
      const countdown = hibernateInSeconds({ status: row.status as InstanceStatus, scheduledAt: row.scheduled_at }, now);
      if (countdown !== null) this.countdown.set({ instance_id: String(row.instance_id), hostname: row.hostname ?? '' }, countdown);
      if (BEATING.has(row.status) && row.gpu_count > 0) {
        // The summary page lacks the per-GPU JSON: one point read per beating instance.
        const full = await this.store.getInstance(row.instance_id);
        if (full) this.setGpus(full);
      }
    }
    return this.registry.metrics();
  }

  private async *allInstances(): AsyncGenerator<InstanceSummaryRow> {
    let afterInstanceId: number | undefined;
    for (;;) {
      const page = await this.store.listInstances({ owner: null, afterInstanceId, limit: PAGE });
      yield* page;
      if (page.length < PAGE) return;
      afterInstanceId = page[page.length - 1]!.instance_id;
    }
  }

  private setGpus(row: InstanceRow): void {
    let gpus = JSON.parse(row.gpus_json) as GpuSample[];
    // A seed agent sends one aggregate `gpu_metrics`: that is its single GPU.
    if (gpus.length === 0 && row.gpu_count === 1) {
      gpus = [
        {
          index: 0,
          utilization_percent: row.utilization_percent,
          memory_used_mb: row.memory_used_mb,
          memory_total_mb: row.memory_total_mb,
          temperature_celsius: row.temperature_celsius,
          power_watts: row.power_watts,
        },
      ];
    }
    for (const gpu of gpus) {
      const labels: GpuLabels = { instance_id: String(row.instance_id), hostname: row.hostname ?? '', gpu: String(gpu.index), uuid: gpu.uuid ?? '' };
      // Unknown values get no sample at all: a 0 would read as an idle, cold, empty GPU.
      setKnown(this.gpuUtilization, labels, gpu.utilization_percent, (percent) => percent / 100);
      setKnown(this.gpuMemoryUsed, labels, gpu.memory_used_mb, (mib) => mib * BYTES_PER_MIB);
      setKnown(this.gpuMemoryTotal, labels, gpu.memory_total_mb, (mib) => mib * BYTES_PER_MIB);
      setKnown(this.gpuTemperature, labels, gpu.temperature_celsius, (celsius) => celsius);
      setKnown(this.gpuPower, labels, gpu.power_watts, (watts) => watts);
    }
  }

  private gpuGauge(name: string, help: string): Gauge<(typeof GPU_LABELS)[number]> {
    return new Gauge({ name, help, labelNames: GPU_LABELS, registers: [this.registry] });
  }
}

function setKnown(gauge: Gauge<(typeof GPU_LABELS)[number]>, labels: GpuLabels, value: number | null | undefined, unit: (value: number) => number): void {
  if (typeof value === 'number' && Number.isFinite(value)) gauge.set(labels, unit(value));
}

/** A counter whose all-time value comes from the store: exposed as that value, not accumulated here. */
function setCounter(counter: Counter, value: number): void {
  counter.reset();
  counter.inc(Math.max(0, value));
}
