import { describe, expect, it } from 'vitest';
import type { GpuSample } from '@dumont/protocol';
import { heartbeatSchemaErrors } from '../test-support/schema.js';
import { buildHeartbeat, type BeatFacts } from './body.js';

const NOW = Date.parse('2024-12-20T15:30:00Z');
const gpu = (index: number, util: number | null): GpuSample => ({
  index, uuid: `GPU-${index}`, name: 'NVIDIA H100 80GB HBM3', utilization_percent: util, memory_used_mb: 1000, memory_total_mb: 81559, temperature_celsius: 40 + index, power_watts: 100,
});
const facts = (over: Partial<BeatFacts> = {}): BeatFacts => ({
  instanceId: 456789,
  hostname: 'gpu-001',
  now: NOW,
  agentVersion: '0.1.0',
  gpu: { gpus: [gpu(0, 85)], processes: [{ pid: 1, used_memory_mb: 10, gpu_uuid: 'GPU-0' }], errors: [] },
  activity: { lastActivity: NOW - 15_000, source: "input on alice's terminal pts/0", mark: 1, activeUsers: 1, reasons: [] },
  commandResults: [],
  collectorErrors: [],
  runningCommands: [],
  ...over,
});

describe('buildHeartbeat', () => {
  it('is the seed’s body, field for field and in order, plus the extensions', () => {
    const body = buildHeartbeat(facts());
    expect(Object.keys(body)).toEqual([
      'instance_id', 'hostname', 'timestamp', 'gpu_metrics', 'process_count', 'active_users', 'last_activity', 'agent_version',
      'gpus', 'command_results', 'collector_errors', 'running_commands',
    ]);
    expect(body).toMatchObject({
      instance_id: 456789,
      hostname: 'gpu-001',
      timestamp: '2024-12-20T15:30:00.000Z',
      gpu_metrics: { utilization_percent: 85, memory_used_mb: 1000, memory_total_mb: 81559, temperature_celsius: 40, power_watts: 100 },
      process_count: 1,
      active_users: 1,
      last_activity: '2024-12-20T15:29:45.000Z',
      agent_version: '0.1.0',
    });
    expect(Object.keys(body.gpu_metrics!)).toEqual(['utilization_percent', 'memory_used_mb', 'memory_total_mb', 'temperature_celsius', 'power_watts']);
    expect(heartbeatSchemaErrors(body)).toEqual([]);
  });

  it('reports the busiest GPU of eight, not the average', () => {
    const gpus = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => gpu(i, i === 0 ? 97 : 0));
    const body = buildHeartbeat(facts({ gpu: { gpus, processes: [], errors: [] } }));
    expect(body.gpu_metrics!.utilization_percent).toBe(97);
    expect(body.gpus).toHaveLength(8);
    expect(body.process_count).toBe(0);
  });

  it('a failed GPU collector gives null metrics, null process count, no gpus list, and the error', () => {
    const errors = [{ collector: 'nvidia-smi', message: 'the NVIDIA driver is not loaded or not answering; nvidia-smi exited with code 9: …' }];
    const body = buildHeartbeat(facts({ gpu: { gpus: null, processes: null, errors }, collectorErrors: errors }));
    expect(body.gpu_metrics).toEqual({ utilization_percent: null, memory_used_mb: null, memory_total_mb: null, temperature_celsius: null, power_watts: null });
    expect(body.process_count).toBeNull();
    expect(body).not.toHaveProperty('gpus');
    expect(body.collector_errors).toEqual(errors);
    expect(heartbeatSchemaErrors(body)).toEqual([]);
  });

  it('unknown activity and users are null, not 0 or "now"', () => {
    const body = buildHeartbeat(facts({ activity: { lastActivity: null, source: null, mark: 0, activeUsers: null, reasons: [] } }));
    expect(body.last_activity).toBeNull();
    expect(body.active_users).toBeNull();
    expect(heartbeatSchemaErrors(body)).toEqual([]);
  });

  it('names the commands running now (the server lets a running hibernate hook keep the GPU busy)', () => {
    const body = buildHeartbeat(facts({ runningCommands: ['0b9f6c1e-hibernate'] }));
    expect(body.running_commands).toEqual(['0b9f6c1e-hibernate']);
    expect(buildHeartbeat(facts()).running_commands).toEqual([]);
    expect(heartbeatSchemaErrors(body)).toEqual([]);
  });

  it('stays within the server’s limits so that results are never refused with it', () => {
    const results = Array.from({ length: 150 }, (_, i) => ({ id: `cmd-${i}`, status: 'failed' as const, detail: 'x'.repeat(10_000) }));
    const errors = Array.from({ length: 40 }, (_, i) => ({ collector: `c${i}`.repeat(40), message: 'm'.repeat(5000) }));
    const running = ['x'.repeat(65), ...Array.from({ length: 20 }, (_, i) => `run-${i}`)];
    const body = buildHeartbeat(facts({ commandResults: results, collectorErrors: errors, hostname: 'h'.repeat(300), runningCommands: running }));
    expect(body.command_results).toHaveLength(100);
    expect(body.running_commands).toEqual(Array.from({ length: 16 }, (_, i) => `run-${i}`));
    expect(body.command_results![0]!.id).toBe('cmd-0');
    expect(body.collector_errors).toHaveLength(32);
    expect(heartbeatSchemaErrors(body)).toEqual([]);
  });
});
