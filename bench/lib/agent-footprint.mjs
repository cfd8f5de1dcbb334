import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from './processes.mjs';
import { ROOT } from './targets.mjs';

/** Runs the agent package's own footprint benchmark when it has one, and returns what it printed. */
export async function agentFootprint(say) {
  const dir = join(ROOT, 'packages/agent/bench');
  let files = [];
  try {
    files = readdirSync(dir).filter((f) => f.startsWith('agent-footprint.'));
  } catch {
    // no bench folder at all
  }
  const runnable = files.find((f) => /\.(mjs|js)$/.test(f));
  if (!runnable) {
    const reason = files.length > 0
      ? `packages/agent/bench/${files[0]} is not a .mjs/.js script node can run as is`
      : 'packages/agent/bench/agent-footprint.* is missing';
    return { missing: reason };
  }
  say(`agent: running packages/agent/bench/${runnable}…`);
  const result = await runCommand(process.execPath, [join(dir, runnable)], { timeoutMs: 5 * 60_000 });
  if (result.code !== 0) return { missing: `packages/agent/bench/${runnable} exited with ${result.code}: ${result.stderr.trim().slice(-500)}` };
  return { script: `packages/agent/bench/${runnable}`, output: result.stdout.trim() };
}
