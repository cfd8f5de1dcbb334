import type { GpuSample } from '@dumont/protocol';
import type { JupyterReading } from './jupyter.js';
import type { GpuProcess } from './nvidia-smi-csv.js';
import type { Session } from './utmp.js';

/**
 * What counts as activity, exactly (the README repeats this list):
 *   1. a GPU whose utilization is at or above the idle threshold (default 5 %) on this beat;
 *   2. a GPU whose utilization is unknown (MIG reports none) that has compute processes on it;
 *   3. input on a logged-in terminal: the access time of its tty device (8 s resolution);
 *   4. a Jupyter server's own `last_activity` (kernel messages, client API calls, terminals);
 *   5. a busy Jupyter kernel: counts as "now" for as long as it stays busy.
 * A GPU process that merely holds memory, an idle SSH login and an idle kernel are not activity.
 * `last_activity` is the newest of these and never moves backwards (a session that logs out does
 * not take its last keystroke with it).
 */
export interface ActivityInputs {
  now: number;
  idleUtilizationPercent: number;
  gpus: readonly GpuSample[] | null;
  processes: readonly GpuProcess[] | null;
  sessions: readonly Session[] | null;
  jupyter: JupyterReading | null;
}

export interface ActivityReport {
  lastActivity: number | null;
  /** Distinct users: terminal/SSH sessions plus owners of Jupyter servers with an open notebook. */
  activeUsers: number | null;
  /** Which rules fired on this beat, for the debug log. */
  reasons: string[];
}

export function gpuIsActive(gpu: GpuSample, processes: readonly GpuProcess[] | null, threshold: number): boolean {
  const util = gpu.utilization_percent;
  if (typeof util === 'number') return util >= threshold;
  return gpu.uuid != null && (processes ?? []).some((p) => p.gpu_uuid === gpu.uuid);
}

export class ActivityTracker {
  private last: number | null = null;

  observe(input: ActivityInputs): ActivityReport {
    const reasons: string[] = [];
    const candidates: number[] = [];

    for (const gpu of input.gpus ?? []) {
      if (gpuIsActive(gpu, input.processes, input.idleUtilizationPercent)) {
        candidates.push(input.now);
        reasons.push(
          typeof gpu.utilization_percent === 'number'
            ? `gpu ${gpu.index} at ${gpu.utilization_percent} %`
            : `gpu ${gpu.index} (utilization unknown) has compute processes`,
        );
      }
    }
    for (const s of input.sessions ?? []) {
      // A tty time in the future (clock step) counts as now, not later.
      if (s.lastInputAt !== null) candidates.push(Math.min(s.lastInputAt, input.now));
    }
    for (const server of input.jupyter?.servers ?? []) {
      if (server.lastActivity !== null) candidates.push(Math.min(server.lastActivity, input.now));
      if (server.busyKernels > 0) {
        candidates.push(input.now);
        reasons.push(`jupyter pid ${server.pid}: ${server.busyKernels} busy kernel(s)`);
      }
    }
    for (const t of candidates) if (this.last === null || t > this.last) this.last = t;

    let activeUsers: number | null = null;
    if (input.sessions !== null) {
      const users = new Set(input.sessions.map((s) => s.user));
      for (const server of input.jupyter?.servers ?? []) {
        if (server.connections > 0 && server.owner) users.add(server.owner);
      }
      activeUsers = users.size;
    }
    return { lastActivity: this.last, activeUsers, reasons };
  }
}
