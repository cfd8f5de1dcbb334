import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { aggregateGpuMetrics, type GpuSample } from '@dumont/protocol';
import { nvidiaSmiFixture, nvidiaSmiFixtureNames } from '../test-support/fixtures.js';
import { countDistinctPids, knownCell, numberCell, parseComputeApps, parseGpuQuery } from './nvidia-smi-csv.js';

const MASKED = 'GPU-00000000-0000-0000-0000-000000000000';
type Row = [file: string, uuid: string, name: string, util: number | null, used: number, total: number | null, temp: number, power: number];

// One row per real capture, with every value the parser must read from it (Telegraf's habit).
const GPU_CAPTURES: Row[] = [
  ['csv-query-gpu-idle-h100-mig-590.48.01-linux.csv', MASKED, 'NVIDIA H100 80GB HBM3', null, 59, 81559, 42, 71.15],
  ['csv-query-gpu-idle-h200-mig-590.48.01-linux.csv', MASKED, 'NVIDIA H200', null, 55, 143771, 28, 78.28],
  ['csv-query-gpu-idle-l40s-595.80-linux.csv', MASKED, 'NVIDIA L40S', 100, 0, 46068, 63, 144.97],
  ['csv-query-gpu-idle-rtx2080super-591.86-windows.csv', MASKED, 'NVIDIA GeForce RTX 2080 SUPER', 0, 702, 8192, 40, 38.92],
  ['csv-query-gpu-idle-rtx4080super-595.71.05-linux.csv', MASKED, 'NVIDIA GeForce RTX 4080 SUPER', 0, 596, 16376, 43, 26.2],
  ['csv-query-gpu-load-h100-mig-590.48.01-linux.csv', MASKED, 'NVIDIA H100 80GB HBM3', null, 11125, 81559, 53, 433.78],
  ['csv-query-gpu-load-h200-mig-590.48.01-linux.csv', MASKED, 'NVIDIA H200', null, 16959, 143771, 36, 295.01],
  ['csv-query-gpu-load-l40s-595.80-linux.csv', MASKED, 'NVIDIA L40S', 9, 1235, 46068, 54, 110.23],
  ['csv-query-gpu-load-rtx2080super-591.86-windows.csv', MASKED, 'NVIDIA GeForce RTX 2080 SUPER', 7, 1296, 8192, 45, 97.43],
  ['csv-query-gpu-load-rtx4080super-595.71.05-linux.csv', MASKED, 'NVIDIA GeForce RTX 4080 SUPER', 7, 1474, 16376, 46, 84.24],
  ['csv-query-gpu-rtx2080super-win-471.11-nvidia_gpu_exporter.csv', 'GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa', 'NVIDIA GeForce RTX 2080 SUPER', 2, 876, 8192, 36, 32.7],
  // No memory.total column in this query: unknown, not 0. No index column: row order.
  ['csv-query-gpu-tesla-p100-nounits-netdata.csv', 'GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6', 'Tesla P100-PCIE-16GB', 0, 0, null, 37, 28.16],
];

const PROCESS_CAPTURES: Array<[file: string, pids: number[], memory: Array<number | null>]> = [
  ['csv-query-compute-apps-load-h100-mig-590.48.01-linux.csv', [21180, 21181, 21198], [2296, 1272, 7484]],
  ['csv-query-compute-apps-load-h200-mig-590.48.01-linux.csv', [12249, 12250, 12267], [2194, 1170, 13526]],
  ['csv-query-compute-apps-load-l40s-595.80-linux.csv', [20037, 20038], [538, 681]],
  [
    'csv-query-compute-apps-load-rtx2080super-591.86-windows.csv',
    [12444, 15076, 2056, 12332, 20372, 4680, 14160, 14184, 16280, 24804, 25704, 26660],
    Array(12).fill(null), // WDDM reports no per-process memory: [N/A]
  ],
  ['csv-query-compute-apps-load-rtx4080super-595.71.05-linux.csv', [2165, 5022, 5021], [25, 503, 360]],
];

describe('parseGpuQuery on real captures', () => {
  it('has a row for every --query-gpu capture in the fixtures', () => {
    expect(GPU_CAPTURES.map((r) => r[0]).sort()).toEqual(nvidiaSmiFixtureNames('csv-query-gpu-'));
  });

  it.each(GPU_CAPTURES)('%s', (file, uuid, name, util, used, total, temp, power) => {
    const { gpus, problems } = parseGpuQuery(nvidiaSmiFixture(file));
    expect(problems).toEqual([]);
    expect(gpus).toEqual([
      {
        index: 0,
        uuid,
        name,
        utilization_percent: util,
        memory_used_mb: used,
        memory_total_mb: total,
        temperature_celsius: temp,
        power_watts: power,
      },
    ]);
  });

  it('reports MIG utilization as unknown, so the host aggregate is unknown, not idle', () => {
    const { gpus } = parseGpuQuery(nvidiaSmiFixture('csv-query-gpu-load-h100-mig-590.48.01-linux.csv'));
    expect(aggregateGpuMetrics(gpus).utilization_percent).toBeNull();
    expect(aggregateGpuMetrics(gpus).power_watts).toBe(433.78);
  });
});

describe('parseComputeApps on real captures', () => {
  it('has a row for every --query-compute-apps capture in the fixtures', () => {
    expect(PROCESS_CAPTURES.map((r) => r[0]).sort()).toEqual(nvidiaSmiFixtureNames('csv-query-compute-apps-'));
  });

  it.each(PROCESS_CAPTURES)('%s', (file, pids, memory) => {
    const { processes, problems } = parseComputeApps(nvidiaSmiFixture(file));
    expect(problems).toEqual([]);
    expect(processes.map((p) => p.pid)).toEqual(pids);
    expect(processes.map((p) => p.used_memory_mb)).toEqual(memory);
    expect(processes.every((p) => p.gpu_uuid === MASKED)).toBe(true);
    expect(countDistinctPids(processes)).toBe(pids.length);
  });
});

describe('driver failure outputs are never read as GPUs', () => {
  it.each(nvidiaSmiFixtureNames('err-', 'errors'))('%s', (file) => {
    const text = nvidiaSmiFixture(`errors/${file}`);
    const { gpus, problems } = parseGpuQuery(text);
    expect(gpus).toEqual([]);
    expect(problems[0]).toContain(text.split('\n')[0]!.slice(0, 40));
    expect(parseComputeApps(text).processes).toEqual([]);
  });
});

describe('the agent’s own format (noheader, nounits)', () => {
  it('reads eight GPUs in the order asked for and keeps the busy one visible', () => {
    const lines = [0, 1, 2, 3, 4, 5, 6, 7].map(
      (i) => `${7 - i}, GPU-${i}, NVIDIA A100-SXM4-80GB, ${i === 3 ? 97 : 0}, 1000, 81920, 40, 60.5`,
    );
    const { gpus, problems } = parseGpuQuery(`${lines.join('\n')}\n`);
    expect(problems).toEqual([]);
    expect(gpus.map((g) => g.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(gpus.find((g) => g.uuid === 'GPU-3')!.utilization_percent).toBe(97);
    expect(aggregateGpuMetrics(gpus).utilization_percent).toBe(97);
  });

  it('reports a line with the wrong number of fields instead of shifting columns, and keeps its GPU as unknown', () => {
    const { gpus, problems } = parseGpuQuery('0, GPU-a, T4, 5, 10, 100, 40, 30\n1, GPU-b, T4, 5, 10\n');
    expect(gpus).toEqual([
      { index: 0, uuid: 'GPU-a', name: 'T4', utilization_percent: 5, memory_used_mb: 10, memory_total_mb: 100, temperature_celsius: 40, power_watts: 30 },
      // Dropping it would lower the GPU count and let the host read as GPU 0's 5 %.
      { index: 1, uuid: 'GPU-b', name: 'T4', utilization_percent: null, memory_used_mb: null, memory_total_mb: null, temperature_celsius: null, power_watts: null },
    ]);
    expect(problems).toEqual(['unexpected line (5 fields, expected 8): "1, GPU-b, T4, 5, 10"', 'GPU 1: its line is torn; reported with unknown metrics']);
    expect(aggregateGpuMetrics(gpus).utilization_percent).toBeNull();
  });

  it('trusts no cell a torn line may have cut short, and takes only lines that name a GPU', () => {
    const full = 'GPU-10000000-0000-0000-0000-000000000000';
    const cases: Array<[string, Partial<GpuSample> | null]> = [
      [`1, ${full}`, { index: 1, uuid: full, name: null }], // cut after a whole UUID
      ['1, GPU-1000', { index: 1, uuid: null, name: null }], // cut inside the UUID
      [`1, ${full}, NVIDIA H1`, { index: 1, uuid: full, name: null }], // cut inside the name
      [`1, ${full}, NVIDIA H100, 97, 1024, 81559, 45, 120.5, 2, GPU-2`, { index: 1, uuid: full, name: 'NVIDIA H100' }], // two lines run together
      ['WARNING: infoROM is corrupted at gpu 0000:41:00.0', null],
      ['1', null],
      ['x, GPU-1', null],
      ['0, GPU-again, T4', null], // GPU 0 is on a whole line already
    ];
    for (const [line, expected] of cases) {
      const { gpus, problems } = parseGpuQuery(`0, GPU-a, T4, 0, 10, 100, 40, 30\n${line}\n`);
      expect(gpus[1] ?? null, line).toEqual(expected && { ...expected, utilization_percent: null, memory_used_mb: null, memory_total_mb: null, temperature_celsius: null, power_watts: null });
      expect(problems[0], line).toMatch(/^unexpected line/);
    }
  });

  it('reports a value that is neither a number nor a status, and leaves it unknown', () => {
    const { gpus, problems } = parseGpuQuery('0, GPU-a, T4, ERR!, 10, 100, 40, 30\n');
    expect(gpus[0]!.utilization_percent).toBeNull();
    expect(problems[0]).toMatch(/utilization\.gpu "ERR!"/);
  });

  it('drops a second row with the same UUID', () => {
    const { gpus, problems } = parseGpuQuery('0, GPU-a, T4, 1, 1, 1, 1, 1\n1, GPU-a, T4, 2, 2, 2, 2, 2\n');
    expect(gpus).toHaveLength(1);
    expect(problems[0]).toMatch(/duplicate uuid GPU-a/);
  });

  it('reads an empty process list, and the old "No running processes found" line, as no processes', () => {
    expect(parseComputeApps('')).toEqual({ processes: [], problems: [] });
    expect(parseComputeApps('No running processes found\n')).toEqual({ processes: [], problems: [] });
  });

  it('counts a process on two GPUs once', () => {
    const { processes } = parseComputeApps('100, 500, GPU-a\n100, 700, GPU-b\n200, 10, GPU-a\n');
    expect(processes).toHaveLength(3);
    expect(countDistinctPids(processes)).toBe(2);
  });
});

const STATUS_TOKENS = ['[N/A]', 'N/A', '[Not Supported]', '[Insufficient Permissions]', '[Unknown Error]', '[GPU is lost]', '[Requested functionality has been deprecated]', ''];

describe('unknown values', () => {
  it.each(STATUS_TOKENS)('%j is unknown, never 0', (token) => {
    expect(knownCell(token)).toBeNull();
    expect(numberCell(token)).toBeNull();
    expect(numberCell(` ${token} `)).toBeNull();
  });

  it('strips units but not digits', () => {
    expect(numberCell('38 %')).toBe(38);
    expect(numberCell('876 MiB')).toBe(876);
    expect(numberCell('32.70 W')).toBe(32.7);
    expect(numberCell('0')).toBe(0);
    expect(numberCell('12abc')).toBeNull();
  });

  it('round-trips any mix of readings and status tokens through the noheader format', () => {
    const metric = (max: number) => fc.option(fc.integer({ min: 0, max }), { nil: null });
    const gpu = fc.record({
      utilization_percent: metric(100),
      memory_used_mb: metric(200_000),
      memory_total_mb: metric(200_000),
      temperature_celsius: metric(120),
      power_watts: metric(1200),
    });
    fc.assert(
      fc.property(fc.array(gpu, { minLength: 1, maxLength: 16 }), fc.constantFrom(...STATUS_TOKENS), (samples, token) => {
        const cell = (v: number | null) => (v === null ? token : String(v));
        const text = samples
          .map((s, i) =>
            [i, `GPU-${i}`, 'NVIDIA H100', s.utilization_percent, s.memory_used_mb, s.memory_total_mb, s.temperature_celsius, s.power_watts]
              .map((v, col) => (col < 3 ? String(v) : cell(v as number | null)))
              .join(', '),
          )
          .join('\n');
        const { gpus, problems } = parseGpuQuery(text);
        const expected: GpuSample[] = samples.map((s, i) => ({ index: i, uuid: `GPU-${i}`, name: 'NVIDIA H100', ...s }));
        return problems.length === 0 && JSON.stringify(gpus) === JSON.stringify(expected);
      }),
    );
  });
});
