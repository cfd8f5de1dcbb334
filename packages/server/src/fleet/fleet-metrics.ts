import { INSTANCE_STATUSES, type InstanceStatus, type Labels } from '@dumont/protocol';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Clock } from '../clock.js';
import { hibernateInSeconds } from '../policy/hibernation-policy.js';
import type { FleetStore, GpuReadings } from '../store/store.js';
import { openIntervals, sumSavings, totalOf } from './savings.js';

const BYTES_PER_MIB = 1_048_576;
const SECONDS_PER_HOUR = 3600;
const PAGE = 1000;
/** Stored metrics of a machine that stopped beating are stale: they are not exported as current. */
const BEATING: ReadonlySet<string> = new Set<InstanceStatus>(['active', 'idle', 'hibernating']);

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

  private readonly instances = new Gauge({
    name: 'dumont_instances',
    help: 'Instances by status.',
    labelNames: ['status'] as const,
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
    /** Instances read (and written out) between two turns of the event loop. */
    private readonly pageSize = PAGE,
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

    // Per-instance series (hundreds of thousands at fleet scale) are written as text a page at a time,
    // yielding to the event loop between pages: heartbeats never wait behind a whole scrape.
    const families = perInstanceFamilies();
    let afterInstanceId: number | undefined;
    for (;;) {
      const page = await this.store.listGpuReadings(afterInstanceId, this.pageSize);
      // One query per page, so a scrape's label reads grow with pages, not with instances.
      const labels = page.length === 0 ? new Map<number, Labels>() : await this.store.labelsOf(page.map((r) => r.instanceId));
      for (const readings of page) {
        const own = labels.get(readings.instanceId);
        if (own !== undefined) families.labels.add(`instance_id="${readings.instanceId}"${labelPairs(own)}`, 1);
        const countdown = hibernateInSeconds({ status: readings.status, scheduledAt: readings.scheduledAt }, now);
        if (countdown !== null) families.countdown.add(`instance_id="${readings.instanceId}",hostname="${escapeLabel(readings.hostname ?? '')}"`, countdown);
        if (BEATING.has(readings.status) && readings.gpuCount > 0) addGpus(families, readings);
      }
      if (page.length < this.pageSize) break;
      afterInstanceId = page[page.length - 1]!.instanceId;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const fleetWide = await this.registry.metrics();
    return fleetWide + Object.values(families).map((family) => family.text()).join('');
  }
}

/** One gauge family written straight as exposition text: prom-client would keep every label set and format them in one go. */
class GaugeText {
  private readonly lines: string[] = [];

  constructor(
    private readonly name: string,
    private readonly help: string,
  ) {}

  /** `labels` is the inside of the braces, values already escaped. */
  add(labels: string, value: number): void {
    this.lines.push(`${this.name}{${labels}} ${value}`);
  }

  text(): string {
    const head = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n`;
    return this.lines.length === 0 ? head : `${head}${this.lines.join('\n')}\n`;
  }
}

function perInstanceFamilies() {
  return {
    countdown: new GaugeText('dumont_hibernation_countdown_seconds', 'Seconds until a scheduled hibernation is issued (0 while it is under way).'),
    utilization: new GaugeText('dumont_gpu_utilization_ratio', 'GPU utilization (0 to 1) in the latest heartbeat.'),
    memoryUsed: new GaugeText('dumont_gpu_memory_used_bytes', 'GPU memory in use in the latest heartbeat.'),
    memoryTotal: new GaugeText('dumont_gpu_memory_total_bytes', 'GPU memory size in the latest heartbeat.'),
    temperature: new GaugeText('dumont_gpu_temperature_celsius', 'GPU temperature in the latest heartbeat.'),
    power: new GaugeText('dumont_gpu_power_watts', 'GPU power draw in the latest heartbeat.'),
    labels: new GaugeText('dumont_instance_labels', 'Labels of each instance that has any, as label_<key>; always 1, for joins on instance_id.'),
  };
}
type PerInstanceFamilies = ReturnType<typeof perInstanceFamilies>;

/**
 * An instance's labels as Prometheus label pairs (`,label_team="vision"`), kube-state-metrics style:
 * characters of the key outside [a-zA-Z0-9_] become `_`. Keys that then collide (`a.b`, `a-b`) keep the
 * lexicographically first key's value; the others are left out of the metric (the API shows them all).
 */
export function labelPairs(labels: Readonly<Labels>): string {
  const seen = new Set<string>();
  let text = '';
  for (const key of Object.keys(labels).sort()) {
    const name = `label_${key.replace(/[^a-zA-Z0-9_]/g, '_')}`;
    if (seen.has(name)) continue;
    seen.add(name);
    text += `,${name}="${escapeLabel(labels[key]!)}"`;
  }
  return text;
}

/** The exposition format's label value escapes: backslash, double quote, line feed. */
export function escapeLabel(value: string): string {
  return /[\\"\n]/.test(value) ? value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : value;
}

function addGpus(families: PerInstanceFamilies, readings: GpuReadings): void {
  // A seed agent sends one aggregate `gpu_metrics`: that is its single GPU.
  const gpus = readings.gpus.length === 0 && readings.gpuCount === 1 ? [{ index: 0, ...readings.aggregate }] : readings.gpus;
  const host = escapeLabel(readings.hostname ?? '');
  for (const gpu of gpus) {
    const labels = `instance_id="${readings.instanceId}",hostname="${host}",gpu="${gpu.index}",uuid="${escapeLabel(gpu.uuid ?? '')}"`;
    // Unknown values get no sample at all: a 0 would read as an idle, cold, empty GPU.
    setKnown(families.utilization, labels, gpu.utilization_percent, (percent) => percent / 100);
    setKnown(families.memoryUsed, labels, gpu.memory_used_mb, (mib) => mib * BYTES_PER_MIB);
    setKnown(families.memoryTotal, labels, gpu.memory_total_mb, (mib) => mib * BYTES_PER_MIB);
    setKnown(families.temperature, labels, gpu.temperature_celsius, (celsius) => celsius);
    setKnown(families.power, labels, gpu.power_watts, (watts) => watts);
  }
}

function setKnown(family: GaugeText, labels: string, value: number | null | undefined, unit: (value: number) => number): void {
  if (typeof value === 'number' && Number.isFinite(value)) family.add(labels, unit(value));
}

/** A counter whose all-time value comes from the store: exposed as that value, not accumulated here. */
function setCounter(counter: Counter, value: number): void {
  counter.reset();
  counter.inc(Math.max(0, value));
}
