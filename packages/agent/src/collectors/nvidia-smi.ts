import type { CollectorError, GpuSample } from '@dumont/protocol';
import { SingleFlight, describeOutcome, type GuardedOutcome } from './exec-bounded.js';
import { classifyNvidiaSmiFailure } from './nvidia-smi-errors.js';
import { GPU_FIELDS, PROCESS_FIELDS, parseComputeApps, parseGpuQuery, type GpuProcess } from './nvidia-smi-csv.js';

export const GPU_QUERY_ARGS = [`--query-gpu=${GPU_FIELDS.join(',')}`, '--format=csv,noheader,nounits'] as const;
export const PROCESS_QUERY_ARGS = [`--query-compute-apps=${PROCESS_FIELDS.join(',')}`, '--format=csv,noheader,nounits'] as const;

export interface NvidiaSmiOptions {
  /** Program to run; a bare name is looked up on PATH. */
  path: string;
  timeoutMs: number;
  killGraceMs?: number;
}

/** One beat's GPU facts. null = unknown (the run failed), never "no GPUs" or zero. */
export interface GpuCollection {
  gpus: GpuSample[] | null;
  processes: GpuProcess[] | null;
  errors: CollectorError[];
}

type Step<T> = { ok: true; value: T; problems: string[] } | { ok: false; message: string };

/**
 * Runs the two queries one after the other, never more than one nvidia-smi at a time (see
 * SingleFlight), and turns every way they can fail into a collector error with unknown metrics.
 */
export class NvidiaSmiCollector {
  private readonly flight = new SingleFlight();

  constructor(private readonly options: NvidiaSmiOptions) {}

  async collect(): Promise<GpuCollection> {
    const gpus = await this.run(GPU_QUERY_ARGS, (text) => {
      const { gpus, problems } = parseGpuQuery(text);
      return { value: gpus, problems, empty: gpus.length === 0 };
    });
    if (!gpus.ok) return { gpus: null, processes: null, errors: [{ collector: 'nvidia-smi', message: gpus.message }] };
    const errors: CollectorError[] = [];
    if (gpus.problems.length > 0) errors.push({ collector: 'nvidia-smi', message: joinProblems(gpus.problems) });

    const processes = await this.run(PROCESS_QUERY_ARGS, (text) => {
      const { processes, problems } = parseComputeApps(text);
      return { value: processes, problems, empty: false };
    });
    if (!processes.ok) {
      errors.push({ collector: 'gpu-processes', message: processes.message });
      return { gpus: gpus.value, processes: null, errors };
    }
    if (processes.problems.length > 0) errors.push({ collector: 'gpu-processes', message: joinProblems(processes.problems) });
    return { gpus: gpus.value, processes: processes.value, errors };
  }

  private async run<T>(
    args: readonly string[],
    parse: (text: string) => { value: T; problems: string[]; empty: boolean },
  ): Promise<Step<T>> {
    const outcome: GuardedOutcome = await this.flight.run(this.options.path, args, {
      timeoutMs: this.options.timeoutMs,
      killGraceMs: this.options.killGraceMs,
      keep: 'head',
    });
    const what = `nvidia-smi (${this.options.path})`;
    switch (outcome.kind) {
      case 'busy':
        return { ok: false, message: `previous nvidia-smi (pid ${outcome.pid ?? '?'}) has not exited yet; not starting another` };
      case 'spawn-failed':
      case 'timeout':
      case 'aborted':
        return { ok: false, message: describeOutcome(outcome, what) };
      case 'exited': {
        const output = `${outcome.stdout}\n${outcome.stderr}`;
        if (outcome.code !== 0) return { ok: false, message: classifyNvidiaSmiFailure(outcome.code, output).message };
        if (outcome.truncated) return { ok: false, message: `${what} printed more output than allowed; ignored` };
        const parsed = parse(outcome.stdout);
        if (parsed.empty) {
          const failure = classifyNvidiaSmiFailure(outcome.code, output);
          if (failure.reason !== 'failed') return { ok: false, message: failure.message };
          const why = parsed.problems[0] ?? (outcome.stderr.trim() || 'no output');
          return { ok: false, message: `no GPU in nvidia-smi output (${why})` };
        }
        return { ok: true, value: parsed.value, problems: parsed.problems };
      }
    }
  }
}

function joinProblems(problems: string[]): string {
  const text = problems.slice(0, 5).join('; ') + (problems.length > 5 ? `; and ${problems.length - 5} more` : '');
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}
