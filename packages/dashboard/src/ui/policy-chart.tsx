import type { ReplayedPolicy } from '@dumont/protocol';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { decimal, usd } from './format.js';
import { usePlot } from './use-plot.js';

/** What the left axis counts: money where instances have a price, GPU-hours always. */
export type SavingsUnit = 'usd' | 'gpu_hours';

export const SAVINGS_COLOR = '#15803d';
export const REGRETS_COLOR = '#b42318';

const savingsOf = (policy: ReplayedPolicy, unit: SavingsUnit) => (unit === 'usd' ? policy.usd_saved : policy.gpu_hours_saved);
const formatSavings = (value: number, unit: SavingsUnit) => (unit === 'usd' ? usd(value) : `${decimal(value, 2)} GPU-h`);

/** Savings (left axis) against regrets (right axis), one point per threshold replayed. */
export function PolicyChart({ policies, unit }: { policies: ReplayedPolicy[]; unit: SavingsUnit }) {
  const box = useRef<HTMLDivElement>(null);
  // uPlot wants x ascending; the table keeps the order asked.
  const sorted = [...policies].sort((a, b) => a.threshold_minutes - b.threshold_minutes);
  const data: uPlot.AlignedData = [sorted.map((p) => p.threshold_minutes), sorted.map((p) => savingsOf(p, unit)), sorted.map((p) => p.regrets.length)];

  const plot = usePlot(box, (width) => chartOptions(unit, width), data, 260, [unit]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [policies, unit]);

  // The drawing is for the eye; the same figures in words for a screen reader.
  const summary = `${unit === 'usd' ? 'USD' : 'GPU-hours'} saved and regrets by idle threshold: ${sorted
    .map((p) => `${decimal(p.threshold_minutes, 2)} min, ${formatSavings(savingsOf(p, unit), unit)} saved, ${p.regrets.length} ${p.regrets.length === 1 ? 'regret' : 'regrets'}`)
    .join('; ')}.`;
  return (
    <figure class="chart policy-chart" data-points={sorted.length}>
      <figcaption>
        <span>Savings against regrets, by idle threshold (minutes)</span>
        <span class="legend" aria-hidden="true">
          <span class="swatch swatch-savings" /> {unit === 'usd' ? 'USD saved (left)' : 'GPU-hours saved (left)'}
          <span class="swatch swatch-regrets" /> Regrets (right)
        </span>
      </figcaption>
      <div ref={box} class="chart-box" role="img" aria-label={summary} />
    </figure>
  );
}

function chartOptions(unit: SavingsUnit, width: number): uPlot.Options {
  const axis = { stroke: '#667085', ticks: { show: false } };
  const atLeastOne = (_u: uPlot, _min: number | null, max: number | null): uPlot.Range.MinMax => [0, Math.max(1, (max ?? 1) * 1.15)];
  return {
    width,
    height: 240,
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 8 } },
    scales: {
      // Thresholds are minutes, not times; a single threshold still gets some room either side.
      x: { time: false, range: (_u, min, max) => (min === max ? [Math.max(0, (min ?? 0) - 5), (max ?? 0) + 5] : [Math.max(0, min! - (max! - min!) * 0.05), max! + (max! - min!) * 0.05]) },
      savings: { range: atLeastOne },
      regrets: { range: atLeastOne },
    },
    series: [
      { label: 'Threshold (min)' },
      {
        label: unit === 'usd' ? 'USD saved' : 'GPU-hours saved',
        scale: 'savings',
        stroke: SAVINGS_COLOR,
        width: 2,
        points: { show: true, size: 8, fill: SAVINGS_COLOR },
        value: (_u, v) => (v === null ? '' : formatSavings(v, unit)),
      },
      {
        label: 'Regrets',
        scale: 'regrets',
        stroke: REGRETS_COLOR,
        width: 2,
        dash: [6, 4],
        points: { show: true, size: 8, fill: REGRETS_COLOR },
      },
    ],
    axes: [
      { ...axis, grid: { stroke: '#e4e7ec', width: 1 }, values: (_u, values) => values.map((v) => decimal(v, 2)) },
      {
        ...axis,
        scale: 'savings',
        size: 64,
        grid: { stroke: '#e4e7ec', width: 1 },
        values: (_u, values) => values.map((v) => (unit === 'usd' ? `$${decimal(v, 2)}` : decimal(v, 2))),
      },
      {
        ...axis,
        scale: 'regrets',
        side: 1,
        size: 40,
        grid: { show: false },
        // Regrets are counted: whole ticks only.
        values: (_u, values) => values.map((v) => (Number.isInteger(v) ? String(v) : '')),
      },
    ],
  };
}
