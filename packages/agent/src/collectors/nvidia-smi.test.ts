import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createFakeNvidiaSmi, gpuLine } from '../test-support/fake-nvidia-smi.js';
import { nvidiaSmiFixture, nvidiaSmiFixtureNames } from '../test-support/fixtures.js';
import { isAlive, killIfMatches, waitFor } from '../test-support/processes.js';
import { DEFAULT_IDLE_RULE, idleFactsOf, judgeIdle } from '@dumont/protocol';
import { buildHeartbeat } from '../heartbeat/body.js';
import { heartbeatSchemaErrors } from '../test-support/schema.js';
import { classifyNvidiaSmiFailure, type NvidiaSmiFailureReason } from './nvidia-smi-errors.js';
import { GPU_QUERY_ARGS, NvidiaSmiCollector, PROCESS_QUERY_ARGS } from './nvidia-smi.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-nvsmi-'));
const started: number[] = [];
afterAll(() => {
  for (const pid of started) killIfMatches(pid, (cmdline) => cmdline.includes(tmp), { group: true });
  rmSync(tmp, { recursive: true, force: true });
});

let n = 0;
const fake = () => createFakeNvidiaSmi(join(tmp, `fake-${n++}`));
const collector = (path: string, timeoutMs = 10_000) => new NvidiaSmiCollector({ path, timeoutMs, killGraceMs: 200 });

// Only exit code 9 (driver not loaded) is confirmed by the sources; the others are the NVML return
// codes nvml.h gives those conditions. The classifier reads the text, so the codes do not matter.
const ERROR_CAPTURES: Array<[file: string, exit: number, reason: NvidiaSmiFailureReason]> = [
  ['err-device-handle-unknown-error-old-format-xxd3vin-19.txt', 255, 'device-handle-error'],
  ['err-device-handle-unknown-error-syno-p4-22.txt', 255, 'device-handle-error'],
  ['err-driver-not-loaded-lyulyul-shine-cluster-50.txt', 9, 'driver-unreachable'],
  ['err-gpu-lost-marian-nmt-251.txt', 15, 'gpu-lost'],
  ['err-no-devices-found-ogkm-862.txt', 6, 'no-devices'],
  ['err-nvml-version-mismatch-460-lyulyul-shine-cluster-30.txt', 18, 'library-version-mismatch'],
  ['err-nvml-version-mismatch-570-tinygrad-ogkm-47.txt', 18, 'library-version-mismatch'],
];

describe('classifyNvidiaSmiFailure on real driver failure outputs', () => {
  it('has a row for every error capture', () => {
    expect(ERROR_CAPTURES.map((r) => r[0])).toEqual(nvidiaSmiFixtureNames('err-', 'errors'));
  });

  it.each(ERROR_CAPTURES)('%s', (file, exit, reason) => {
    const text = nvidiaSmiFixture(`errors/${file}`);
    const failure = classifyNvidiaSmiFailure(exit, text);
    expect(failure.reason).toBe(reason);
    expect(failure.message).toContain(`exited with code ${exit}`);
    expect(failure.message).toContain(text.split('\n')[0]!.trim());
  });

  it('falls back to the exit code and the first line for anything else', () => {
    expect(classifyNvidiaSmiFailure(2, '\n  something odd\nmore')).toEqual({ reason: 'failed', message: 'nvidia-smi exited with code 2: something odd' });
    expect(classifyNvidiaSmiFailure(null, '')).toEqual({ reason: 'failed', message: 'nvidia-smi was killed' });
  });
});

describe('NvidiaSmiCollector against fake nvidia-smi executables', () => {
  it('runs exactly the documented queries and reads real capture bytes', async () => {
    const smi = fake();
    smi.set('gpus', { out: nvidiaSmiFixture('csv-query-gpu-load-l40s-595.80-linux.csv') });
    smi.set('apps', { out: nvidiaSmiFixture('csv-query-compute-apps-load-l40s-595.80-linux.csv') });
    const result = await collector(smi.path).collect();
    expect(result.errors).toEqual([]);
    expect(result.gpus).toMatchObject([{ index: 0, name: 'NVIDIA L40S', utilization_percent: 9, memory_used_mb: 1235 }]);
    expect(result.processes!.map((p) => p.pid)).toEqual([20037, 20038]);
    expect(smi.calls().map((c) => c.split(' ').slice(1).join(' '))).toEqual([GPU_QUERY_ARGS.join(' '), PROCESS_QUERY_ARGS.join(' ')]);
    expect(GPU_QUERY_ARGS).toEqual([
      '--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw',
      '--format=csv,noheader,nounits',
    ]);
    expect(PROCESS_QUERY_ARGS).toEqual(['--query-compute-apps=pid,used_memory,gpu_uuid', '--format=csv,noheader,nounits']);
  });

  it.each(ERROR_CAPTURES)('a driver failure (%s, exit %i) is a collector error with unknown metrics', async (file, exit, reason) => {
    const smi = fake();
    smi.set('gpus', { out: nvidiaSmiFixture(`errors/${file}`), exit });
    const result = await collector(smi.path).collect();
    expect(result.gpus).toBeNull();
    expect(result.processes).toBeNull();
    expect(result.errors).toEqual([{ collector: 'nvidia-smi', message: classifyNvidiaSmiFailure(exit, nvidiaSmiFixture(`errors/${file}`)).message }]);
    // A dead driver is not asked twice per beat.
    expect(smi.calls()).toHaveLength(1);
  });

  it('a failure message printed with exit code 0 is still a failure', async () => {
    const smi = fake();
    smi.set('gpus', { out: 'No devices were found\n', exit: 0 });
    const result = await collector(smi.path).collect();
    expect(result.gpus).toBeNull();
    expect(result.errors[0]!.message).toMatch(/sees no GPU/);
  });

  it('a missing binary is a collector error', async () => {
    const result = await collector(join(tmp, 'nowhere', 'nvidia-smi')).collect();
    expect(result).toEqual({
      gpus: null,
      processes: null,
      errors: [{ collector: 'nvidia-smi', message: `nvidia-smi (${join(tmp, 'nowhere', 'nvidia-smi')}) not found` }],
    });
  });

  it('a hang is killed at the timeout and reported', async () => {
    const smi = fake();
    smi.set('gpus', { out: gpuLine(0, 50), sleep: 30 });
    const result = await collector(smi.path, 300).collect();
    expect(result.gpus).toBeNull();
    expect(result.errors[0]).toEqual({ collector: 'nvidia-smi', message: `nvidia-smi (${smi.path}) timed out after 0.3 s and was killed` });
    const pid = Number(smi.calls()[0]!.split(' ')[0]);
    started.push(pid);
    await waitFor('the hung fake to be gone', () => !isAlive(pid), 3000);
  });

  it('slow output within the timeout is read whole', async () => {
    const smi = fake();
    smi.set('gpus', { out: gpuLine(0, 85) + gpuLine(1, 0), sleep: 0.3 });
    smi.set('apps', { out: '' });
    const result = await collector(smi.path, 5000).collect();
    expect(result.errors).toEqual([]);
    expect(result.gpus!.map((g) => g.utilization_percent)).toEqual([85, 0]);
    expect(result.processes).toEqual([]);
  });

  it('never starts a call while one is still running', async () => {
    const smi = fake();
    smi.set('gpus', { out: gpuLine(0, 1), sleep: 0.5 });
    const c = collector(smi.path, 5000);
    const first = c.collect();
    await waitFor('the first call', () => smi.calls().length === 1);
    const second = await c.collect();
    expect(second.gpus).toBeNull();
    expect(second.errors[0]!.message).toMatch(/previous nvidia-smi \(pid \d+\) has not exited yet/);
    expect((await first).gpus).toHaveLength(1);
    expect(smi.calls()).toHaveLength(2); // the first call's two queries; the second call ran nothing
  });

  it('a failing process query keeps the GPU readings and leaves process_count unknown', async () => {
    const smi = fake();
    smi.set('gpus', { out: gpuLine(0, 40) });
    smi.set('apps', { err: 'Unable to determine the device handle for GPU0000:07:00.0: Unknown Error\n', exit: 255 });
    const result = await collector(smi.path).collect();
    expect(result.gpus).toHaveLength(1);
    expect(result.processes).toBeNull();
    expect(result.errors).toEqual([{ collector: 'gpu-processes', message: expect.stringMatching(/does not answer; nvidia-smi exited with code 255/) }]);
  });

  it('a torn line that hides a busy GPU: a collector error, the GPU kept as unknown, never an idle beat', async () => {
    // GPU 0 at 0 %, GPU 1 at 97 % whose line nvidia-smi cut short.
    const smi = fake();
    smi.set('gpus', { out: `${gpuLine(0, 0)}1, GPU-10000000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 97, 1024, 815\n` });
    smi.set('apps', { out: '' });
    const gpu = await collector(smi.path).collect();
    const body = buildHeartbeat({
      instanceId: 1, hostname: 'h', now: Date.now(), agentVersion: '0.1.0', gpu,
      activity: { lastActivity: null, source: null, mark: 0, activeUsers: 0, reasons: [] },
      commandResults: [], collectorErrors: gpu.errors, runningCommands: [],
    });
    expect(body.collector_errors).toEqual([{ collector: 'nvidia-smi', message: expect.stringMatching(/^unexpected line \(6 fields, expected 8\)/) }]);
    expect(judgeIdle(idleFactsOf(body), DEFAULT_IDLE_RULE)).toEqual({ idle: false, reason: 'collector error (nvidia-smi): its facts are unknown' });
    // Honest figures besides: two GPUs, the torn one unknown, so the host's utilization is unknown, not 0 %.
    expect(body.gpus!.map((g) => [g.index, g.utilization_percent])).toEqual([[0, 0], [1, null]]);
    expect(body.gpu_metrics!.utilization_percent).toBeNull();
    expect(heartbeatSchemaErrors(body)).toEqual([]);
  });

  it('reports unreadable values without dropping the GPU', async () => {
    const smi = fake();
    smi.set('gpus', { out: gpuLine(0, 'ERR!') });
    const result = await collector(smi.path).collect();
    expect(result.gpus![0]!.utilization_percent).toBeNull();
    expect(result.errors).toEqual([{ collector: 'nvidia-smi', message: 'GPU 0: unreadable utilization.gpu "ERR!"' }]);
  });
});
