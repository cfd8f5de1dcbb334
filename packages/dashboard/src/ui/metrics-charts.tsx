import type { MetricsHistoryResponse, MetricsPoint } from '@dumont/protocol';
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { api, errorMessage, query } from './api.js';
import { decimal, isKnown, UNKNOWN } from './format.js';
import { usePoll } from './hooks.js';
import { usePlot } from './use-plot.js';

const RANGES = [
  { label: '1 h', seconds: 3600 },
  { label: '24 h', seconds: 86_400 },
  { label: '7 d', seconds: 7 * 86_400 },
  { label: '30 d', seconds: 30 * 86_400 },
] as const;

interface Metric {
  key: 'utilization_percent' | 'memory_used_mb' | 'temperature_celsius' | 'power_watts';
  title: string;
  unit: string;
  color: string;
  scale?: (value: number) => number;
  fixedRange?: [number, number];
}

const METRICS: Metric[] = [
  { key: 'utilization_percent', title: 'Utilization', unit: '%', color: '#2563eb', fixedRange: [0, 100] },
  { key: 'memory_used_mb', title: 'Memory used', unit: 'GiB', color: '#7c3aed', scale: (mb) => mb / 1024 },
  { key: 'temperature_celsius', title: 'Temperature', unit: '°C', color: '#c2410c' },
  { key: 'power_watts', title: 'Power', unit: 'W', color: '#15803d' },
];

/** Per-GPU history charts over a chosen range, read from `GET …/metrics`. */
export function MetricsCharts({ instanceId }: { instanceId: number }) {
  const [range, setRange] = useState<number>(3600);
  const [history, setHistory] = useState<MetricsHistoryResponse | null>(null);
  const [error, setError] = useState<string | null>(null);
  // The server's clock decides what "now" is; its answers' `to` tell how far the browser's is off.
  const serverOffsetMs = useRef<number | null>(null);

  usePoll(
    async (isCurrent) => {
      try {
        const base = `/api/v1/agent/instances/${instanceId}/metrics`;
        if (range !== 3600 && serverOffsetMs.current === null) await learnServerClock(base);
        let path = base;
        if (range !== 3600) {
          const to = Date.now() + (serverOffsetMs.current ?? 0);
          path += query({ from: new Date(to - range * 1000).toISOString(), to: new Date(to).toISOString() });
        }
        const answer = await api<MetricsHistoryResponse>('GET', path);
        if (range === 3600) serverOffsetMs.current = Date.parse(answer.to) - Date.now();
        if (!isCurrent()) return;
        setHistory(answer);
        setError(null);
      } catch (e) {
        if (isCurrent()) setError(errorMessage(e));
      }
    },
    range <= 86_400 ? 15_000 : 60_000,
    [instanceId, range],
  );

  async function learnServerClock(base: string) {
    const answer = await api<MetricsHistoryResponse>('GET', base);
    serverOffsetMs.current = Date.parse(answer.to) - Date.now();
  }

  return (
    <section class="card charts" aria-labelledby="charts-title">
      <div class="section-head">
        <h2 id="charts-title">GPU history</h2>
        <div class="segmented" role="group" aria-label="Time range">
          {RANGES.map((r) => (
            <button type="button" key={r.seconds} aria-pressed={range === r.seconds} onClick={() => setRange(r.seconds)}>
              {r.label}
            </button>
          ))}
        </div>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {history && history.gpus.length === 0 && <p class="muted">No metrics recorded in this range.</p>}
      {history?.gpus.map((gpu) => (
        <div class="gpu-charts" key={gpu.index}>
          <h3>
            GPU {gpu.index}
            {gpu.uuid && <span class="muted mono"> {gpu.uuid}</span>}
          </h3>
          <div class="chart-grid">
            {METRICS.map((metric) => (
              <Chart key={metric.key} metric={metric} gpuIndex={gpu.index} points={gpu.points} from={Date.parse(history.from)} to={Date.parse(history.to)} />
            ))}
          </div>
        </div>
      ))}
    </section>
  );
}

function Chart(props: { metric: Metric; gpuIndex: number; points: MetricsPoint[]; from: number; to: number }) {
  const { metric } = props;
  const box = useRef<HTMLDivElement>(null);
  const xs = props.points.map((p) => Date.parse(p.at) / 1000);
  const ys = props.points.map((p) => {
    const v = p[metric.key];
    return isKnown(v) ? (metric.scale ? metric.scale(v) : v) : null;
  });
  const latest = [...ys].reverse().find(isKnown);
  const known = ys.filter(isKnown).length;

  const plot = usePlot(box, (width) => chartOptions(metric, width), [xs, ys] as uPlot.AlignedData, 200, [metric]);

  useEffect(() => {
    const u = plot.current;
    if (!u) return;
    // New data re-fits the y axis; the x axis then spans the whole range asked, gaps included.
    u.setData([xs, ys] as uPlot.AlignedData);
    u.setScale('x', { min: props.from / 1000, max: props.to / 1000 });
  }, [props.points, props.from, props.to]);

  const caption = `${metric.title}, GPU ${props.gpuIndex}`;
  return (
    <figure class="chart" data-metric={metric.key} data-points={known}>
      <figcaption>
        <span>{caption}</span>
        <span class="latest">{isKnown(latest) ? `${decimal(latest)} ${metric.unit}` : UNKNOWN}</span>
      </figcaption>
      {/* The caption carries the latest value in words; the drawing itself is for the eye. */}
      <div ref={box} class="chart-box" aria-hidden="true" />
    </figure>
  );
}

function chartOptions(metric: Metric, width: number): uPlot.Options {
  return {
    width,
    height: 150,
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    scales: {
      x: { time: true },
      y: metric.fixedRange ? { range: metric.fixedRange } : { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, (max ?? 1) * 1.1)] },
    },
    series: [
      {},
      {
        label: metric.title,
        stroke: metric.color,
        width: 1.5,
        fill: `${metric.color}22`,
        spanGaps: false,
        points: { show: false },
      },
    ],
    axes: [
      { stroke: '#667085', grid: { stroke: '#e4e7ec', width: 1 }, ticks: { show: false } },
      {
        stroke: '#667085',
        size: 48,
        grid: { stroke: '#e4e7ec', width: 1 },
        ticks: { show: false },
        values: (_u, values) => values.map((v) => `${decimal(v)}`),
      },
    ],
  };
}
