import type { ActivitySignalReport, CollectorError, CommandResult, HeartbeatRequest } from '@dumont/protocol';
import type { ActivityReport } from '../collectors/activity.js';
import { countDistinctPids } from '../collectors/nvidia-smi-csv.js';
import type { GpuCollection } from '../collectors/nvidia-smi.js';
import { aggregateGpuMetrics } from '../protocol-aggregate.js';

/** Limits of the server's schema; a longer body would be refused whole, results included. */
export const MAX_COMMAND_RESULTS = 100;
export const MAX_DETAIL = 8192;
export const MAX_COLLECTOR_ERRORS = 32;
export const MAX_COLLECTOR_MESSAGE = 2048;
export const MAX_RUNNING_COMMANDS = 16;
export const MAX_ACTIVITY_SIGNALS = 16;
const MAX_COMMAND_ID = 64;

export interface BeatFacts {
  instanceId: number;
  hostname: string;
  now: number;
  agentVersion: string;
  gpu: GpuCollection;
  activity: ActivityReport;
  commandResults: readonly CommandResult[];
  collectorErrors: readonly CollectorError[];
  /** Ids of the commands running now (see `running_commands`). */
  runningCommands: readonly string[];
  /** Results of the signal hooks on this beat; none configured leaves `activity_signals` out. */
  activitySignals?: readonly ActivitySignalReport[];
}

const clip = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * The seed's heartbeat, field for field and in its order, plus `gpus`, `command_results`,
 * `collector_errors`, `running_commands` and (with signal hooks) `activity_signals`. Unknown is null, never 0: a failed nvidia-smi gives null metrics, a null
 * process count and no `gpus` at all (an empty list would claim the host has no GPU).
 */
export function buildHeartbeat(f: BeatFacts): HeartbeatRequest {
  const gpus = f.gpu.gpus;
  const body: HeartbeatRequest = {
    instance_id: f.instanceId,
    hostname: clip(f.hostname || 'unknown', 255),
    timestamp: new Date(f.now).toISOString(),
    gpu_metrics: gpus
      ? aggregateGpuMetrics(gpus)
      : { utilization_percent: null, memory_used_mb: null, memory_total_mb: null, temperature_celsius: null, power_watts: null },
    process_count: f.gpu.processes ? countDistinctPids(f.gpu.processes) : null,
    active_users: f.activity.activeUsers,
    last_activity: f.activity.lastActivity === null ? null : new Date(f.activity.lastActivity).toISOString(),
    agent_version: f.agentVersion,
  };
  if (gpus) body.gpus = gpus.slice(0, 64);
  body.command_results = f.commandResults.slice(0, MAX_COMMAND_RESULTS).map((r) => ({
    id: r.id,
    status: r.status,
    detail: r.detail == null ? null : clip(r.detail, MAX_DETAIL),
  }));
  body.collector_errors = f.collectorErrors.slice(0, MAX_COLLECTOR_ERRORS).map((e) => ({
    collector: clip(e.collector, 64),
    message: clip(e.message, MAX_COLLECTOR_MESSAGE),
  }));
  // An id the schema would refuse cannot be clipped into another command's id: it is left out.
  body.running_commands = f.runningCommands.filter((id) => id.length > 0 && id.length <= MAX_COMMAND_ID).slice(0, MAX_RUNNING_COMMANDS);
  if (f.activitySignals && f.activitySignals.length > 0) body.activity_signals = f.activitySignals.slice(0, MAX_ACTIVITY_SIGNALS).map((s) => ({ ...s }));
  return body;
}
