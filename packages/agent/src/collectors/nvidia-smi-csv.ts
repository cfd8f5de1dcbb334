import type { GpuSample } from '@dumont/protocol';

/**
 * Pure parsers for `nvidia-smi --query-*` CSV output. They take the bytes a run produced and know
 * nothing about processes, so every real capture can be replayed in a test.
 *
 * The agent asks for `--format=csv,noheader,nounits`, but the parser also accepts a header line
 * (`--format=csv`): columns are then matched by name, units in the header (`memory.used [MiB]`) and
 * in the values (`876 MiB`) are stripped. That is how published captures of every driver look, and it
 * lets one parser read both.
 */

/** The fields of `--query-gpu`, in the order the agent asks for them. */
export const GPU_FIELDS = [
  'index',
  'uuid',
  'name',
  'utilization.gpu',
  'memory.used',
  'memory.total',
  'temperature.gpu',
  'power.draw',
] as const;

/** The fields of `--query-compute-apps`, in the order the agent asks for them. */
export const PROCESS_FIELDS = ['pid', 'used_memory', 'gpu_uuid'] as const;

/** Header names nvidia-smi prints for a query field when they differ from the field itself. */
const HEADER_ALIASES: Record<string, string> = {
  used_gpu_memory: 'used_memory',
};

/**
 * The single place that decides a cell is unknown. nvidia-smi writes `[N/A]`, `[Not Supported]`,
 * `[Insufficient Permissions]`, `[Unknown Error]`, `[GPU is lost]`, `[Requested functionality has
 * been deprecated]`..., some fields a bare `N/A`. Any bracketed value is a status, not a reading, so
 * it becomes null, never 0.
 */
export function knownCell(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  const value = raw.trim();
  if (value === '' || /^\[.*\]$/.test(value) || /^n\/a$/i.test(value) || /^not supported$/i.test(value)) return null;
  return value;
}

const NUMBER_WITH_UNIT = /^(-?\d+(?:\.\d+)?)(?:\s*(?:%|MiB|MB|GiB|W|C|MHz))?$/;

/** A numeric cell with its unit (if any) stripped; null when unknown or not a number. */
export function numberCell(raw: string | undefined): number | null {
  const value = knownCell(raw);
  if (value === null) return null;
  const m = NUMBER_WITH_UNIT.exec(value);
  return m ? Number(m[1]) : null;
}

export interface CsvTable<F extends string> {
  rows: Array<Partial<Record<F, string>>>;
  /** Lines or cells that could not be read; the caller decides whether that is fatal. */
  problems: string[];
  /**
   * Lines with the wrong number of fields, cut into the columns they reach, and whether their last
   * cell may itself be cut short. Never read as values; a caller may recognise what they identify.
   */
  torn: Array<{ cells: Partial<Record<F, string>>; lastCell: F | null }>;
}

const headerName = (cell: string) => {
  const name = cell.trim().replace(/\s*\[[^\]]*\]$/, '');
  return HEADER_ALIASES[name] ?? name;
};

const looksLikeHeader = (cells: string[]) => cells.every((c) => /^[a-z_][a-z0-9_.]*$/i.test(headerName(c)));

const quote = (line: string) => JSON.stringify(line.length > 120 ? `${line.slice(0, 120)}…` : line);

/** Splits query output into rows keyed by field name. */
export function parseQueryCsv<F extends string>(text: string, fields: readonly F[]): CsvTable<F> {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const problems: string[] = [];
  let columns: Array<F | null> = [...fields];
  const first = lines[0];
  if (first !== undefined) {
    const cells = first.split(',');
    const names = cells.map(headerName);
    if (looksLikeHeader(cells) && names.some((n) => (fields as readonly string[]).includes(n))) {
      columns = names.map((n) => ((fields as readonly string[]).includes(n) ? (n as F) : null));
      lines.shift();
    }
  }

  const rows: CsvTable<F>['rows'] = [];
  const torn: CsvTable<F>['torn'] = [];
  for (const line of lines) {
    const cells = line.split(',');
    if (cells.length !== columns.length) {
      problems.push(`unexpected line (${cells.length} fields, expected ${columns.length}): ${quote(line.trim())}`);
      const partial: Partial<Record<F, string>> = {};
      cells.slice(0, columns.length).forEach((cell, i) => {
        const field = columns[i];
        if (field) partial[field] = cell.trim();
      });
      torn.push({ cells: partial, lastCell: cells.length < columns.length ? (columns[cells.length - 1] ?? null) : null });
      continue;
    }
    const row: Partial<Record<F, string>> = {};
    cells.forEach((cell, i) => {
      const field = columns[i];
      if (field) row[field] = cell.trim();
    });
    rows.push(row);
  }
  return { rows, problems, torn };
}

export interface GpuParse {
  gpus: GpuSample[];
  problems: string[];
}

const METRICS = [
  ['utilization.gpu', 'utilization_percent'],
  ['memory.used', 'memory_used_mb'],
  ['memory.total', 'memory_total_mb'],
  ['temperature.gpu', 'temperature_celsius'],
  ['power.draw', 'power_watts'],
] as const;

/**
 * `--query-gpu` output to one sample per GPU, sorted by index. A GPU is identified by its UUID (the
 * index can change across reboots); without an index column the row order is the index, as in
 * nvidia-smi's own enumeration.
 */
export function parseGpuQuery(text: string): GpuParse {
  const { rows, problems, torn } = parseQueryCsv(text, GPU_FIELDS);
  const gpus: GpuSample[] = [];
  const seen = new Set<string>();
  rows.forEach((row, position) => {
    const index = numberCell(row.index);
    const sample: GpuSample = {
      index: index !== null && Number.isInteger(index) && index >= 0 ? index : position,
      uuid: knownCell(row.uuid),
      name: knownCell(row.name),
    };
    for (const [field, key] of METRICS) {
      const raw = row[field];
      const value = numberCell(raw);
      // A value that is neither a status nor a number is reported, not guessed at.
      if (value === null && knownCell(raw) !== null) problems.push(`GPU ${sample.index}: unreadable ${field} ${quote(raw ?? '')}`);
      sample[key] = value;
    }
    const key = sample.uuid ?? `index:${sample.index}`;
    if (seen.has(key)) {
      problems.push(`GPU ${sample.index}: duplicate ${sample.uuid ? `uuid ${sample.uuid}` : 'index'}, ignored`);
      return;
    }
    seen.add(key);
    gpus.push(sample);
  });
  // A torn line is still a GPU that exists: dropping it would lower gpu_count and let the aggregate
  // read as the other GPUs' 0 % while this one may be at 97 %. It is kept with every metric unknown.
  const seenIndexes = new Set(gpus.map((g) => g.index));
  for (const { cells, lastCell } of torn) {
    const gpu = tornGpu(cells, lastCell);
    if (!gpu || seenIndexes.has(gpu.index) || (gpu.uuid && seen.has(gpu.uuid))) continue;
    seenIndexes.add(gpu.index);
    if (gpu.uuid) seen.add(gpu.uuid);
    problems.push(`GPU ${gpu.index}: its line is torn; reported with unknown metrics`);
    gpus.push(gpu);
  }
  gpus.sort((a, b) => a.index - b.index);
  return { gpus, problems };
}

const FULL_UUID = /^(?:GPU|MIG)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The GPU a torn line names, if it clearly names one: a whole index followed by something that
 * starts like a UUID. Anything else (a warning line, garbage) is only a problem, not a GPU. The cell
 * a short line ends on may be cut short, so a UUID there is kept only when it has its full length.
 */
function tornGpu(cells: Partial<Record<(typeof GPU_FIELDS)[number], string>>, lastCell: string | null): GpuSample | null {
  if (lastCell === 'index' || cells.index === undefined || !/^\d+$/.test(cells.index)) return null;
  const uuid = cells.uuid;
  if (uuid === undefined || !/^(?:GPU|MIG)-/i.test(uuid)) return null;
  const index = Number(cells.index);
  if (!Number.isSafeInteger(index) || index > 1023) return null;
  const sample: GpuSample = {
    index,
    uuid: lastCell !== 'uuid' || FULL_UUID.test(uuid) ? uuid : null,
    name: lastCell !== 'name' && cells.name !== undefined ? knownCell(cells.name) : null,
  };
  for (const [, key] of METRICS) sample[key] = null;
  return sample;
}

export interface GpuProcess {
  pid: number;
  used_memory_mb: number | null;
  gpu_uuid: string | null;
}

export interface ProcessParse {
  processes: GpuProcess[];
  problems: string[];
}

/** `--query-compute-apps` output. Older drivers print this sentence instead of an empty list. */
export function parseComputeApps(text: string): ProcessParse {
  const cleaned = text
    .split(/\r?\n/)
    .filter((l) => !/^\s*No running (compute )?processes found\s*$/i.test(l))
    .join('\n');
  const { rows, problems } = parseQueryCsv(cleaned, PROCESS_FIELDS);
  const processes: GpuProcess[] = [];
  for (const row of rows) {
    const pid = numberCell(row.pid);
    if (pid === null || !Number.isInteger(pid) || pid <= 0) {
      problems.push(`unreadable pid ${quote(row.pid ?? '')}`);
      continue;
    }
    processes.push({ pid, used_memory_mb: numberCell(row.used_memory), gpu_uuid: knownCell(row.gpu_uuid) });
  }
  return { processes, problems };
}

/** `process_count`: one process using two GPUs (or two MIG slices) is one process. */
export function countDistinctPids(processes: readonly GpuProcess[]): number {
  return new Set(processes.map((p) => p.pid)).size;
}
