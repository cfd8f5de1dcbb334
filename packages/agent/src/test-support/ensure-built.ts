import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './processes.js';

/** Tests that run real processes run the built code: `npm test` builds first, a bare vitest may not. */
export const AGENT_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const AGENT_CLI = join(AGENT_ROOT, 'dist', 'cli.js');
const REPO_ROOT = join(AGENT_ROOT, '..', '..');

function newest(dir: string, include: (name: string) => boolean): number {
  if (!existsSync(dir)) return 0;
  let time = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'test-support') time = Math.max(time, newest(path, include));
    } else if (include(entry.name)) time = Math.max(time, statSync(path).mtimeMs);
  }
  return time;
}
const isSource = (name: string) => name.endsWith('.ts') && !name.endsWith('.test.ts');

/**
 * Builds a package (with what it references) when `output` is missing or older than its sources.
 * A lock directory keeps parallel test files from running tsc at the same time.
 */
export async function ensureBuilt(packageRoot: string, output: string): Promise<string> {
  const fresh = () =>
    existsSync(output) && newest(join(packageRoot, 'dist'), (n) => n.endsWith('.js')) >= newest(join(packageRoot, 'src'), isSource);
  if (fresh()) return output;
  const lock = join(REPO_ROOT, 'node_modules', '.dumont-test-build-lock');
  try {
    mkdirSync(lock);
  } catch {
    await waitFor('another test file to finish building', () => !existsSync(lock), 180_000, 200);
    return output;
  }
  try {
    execFileSync(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', join(packageRoot, 'tsconfig.json')], { stdio: 'inherit' });
  } finally {
    rmdirSync(lock);
  }
  return output;
}

export const ensureAgentBuilt = () => ensureBuilt(AGENT_ROOT, AGENT_CLI);
