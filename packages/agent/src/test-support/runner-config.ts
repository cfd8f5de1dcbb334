import type { RunnerConfig } from '../commands/runner.js';

/** A command runner's configuration for tests: no hooks, short kill grace, `over` on top. */
export function testRunnerConfig(stateDir: string, over: Partial<RunnerConfig> = {}): RunnerConfig {
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
    ...over,
  };
}
