import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createBeatCollector, type BeatCollector } from '../collect.js';
import type { RunnerConfig } from '../commands/runner.js';
import { createLogger } from '../log.js';
import { createFakeNvidiaSmi, gpuLine } from './fake-nvidia-smi.js';

let machines = 0;

/**
 * The real collectors reading a machine with no login and no Jupyter server, whose fake nvidia-smi
 * prints `gpus` (by default one GPU at 0 %) and no process. What a hibernate guard sees on such a host.
 */
export function machineCollector(dir: string, gpus = gpuLine(0, 0)): BeatCollector {
  const root = join(dir, `machine-${process.pid}-${machines++}`);
  const smi = createFakeNvidiaSmi(join(root, 'bin'));
  smi.set('gpus', { out: gpus });
  smi.set('apps', { out: '' });
  for (const sub of ['jupyter', 'proc', 'dev']) mkdirSync(join(root, sub), { recursive: true });
  return createBeatCollector(
    { instanceId: 456789, nvidiaSmi: smi.path, nvidiaSmiTimeoutMs: 5000, utmpFile: join(root, 'no-utmp'), jupyterRuntimeDirs: [join(root, 'jupyter')] },
    // An empty /proc and /dev of its own: this host's SSH sessions are no business of the test.
    { log: createLogger({ write: () => {} }), now: Date.now, env: {}, paths: { proc: join(root, 'proc'), dev: join(root, 'dev'), passwd: '/etc/passwd' } },
  );
}

/** A command runner's configuration for tests: no hooks, short kill grace, an idle machine, `over` on top. */
export function testRunnerConfig(stateDir: string, over: Partial<RunnerConfig> = {}): RunnerConfig {
  let idle: BeatCollector | null = null;
  return {
    instanceId: 456789,
    hooks: { hibernate: null, snapshot: null, restart: null },
    restartServices: [],
    hookTimeoutMs: 10_000,
    stateDir,
    npm: 'npm',
    packageName: '@dumont/agent',
    currentVersion: '0.1.0',
    killGraceMs: 200,
    sample: () => (idle ??= machineCollector(stateDir)).sample(),
    ...over,
  };
}
