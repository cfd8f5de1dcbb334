import { aggregateGpuMetrics, type CommandResult, type HeartbeatRequest } from '@dumont/protocol';
import type { HostSample } from './behaviour.js';
import type { AgentSpec } from './fleet-plan.js';

/** The heartbeat a real agent would post for this sample: per-GPU rows plus the host aggregate. */
export function heartbeatBody(
  spec: AgentSpec,
  sample: HostSample,
  timestamp: string,
  commandResults: CommandResult[] = [],
): HeartbeatRequest {
  const body: HeartbeatRequest = {
    instance_id: spec.instanceId,
    hostname: spec.hostname,
    timestamp,
    gpu_metrics: aggregateGpuMetrics(sample.gpus),
    process_count: sample.processCount,
    active_users: sample.activeUsers,
    last_activity: sample.lastActivityMs === null ? null : new Date(sample.lastActivityMs).toISOString(),
    agent_version: spec.agentVersion,
    gpus: sample.gpus,
  };
  if (sample.collectorErrors.length > 0) body.collector_errors = sample.collectorErrors;
  if (commandResults.length > 0) body.command_results = commandResults;
  return body;
}

/**
 * The server ignores a beat whose timestamp is not newer than the last one it applied, so each agent
 * stamps strictly increasing times even when two beats fall in the same millisecond.
 */
export function nextTimestamp(previousMs: number, nowMs: number): number {
  return nowMs > previousMs ? nowMs : previousMs + 1;
}
