import { createRequire } from 'node:module';

/**
 * Whether this agent is the single executable (Node's SEA: node and the bundle in one file) rather
 * than a script run by a node on the host. Asked of node:sea itself, never guessed from file names.
 */
export function isSingleExecutable(): boolean {
  try {
    // node:sea is not importable by name from ESM in every Node 20; a require made here reaches it.
    const sea = createRequire(import.meta.url)('node:sea') as { isSea(): boolean };
    return sea.isSea();
  } catch {
    return false; // a Node without node:sea runs no single executable
  }
}

/** The file to run for this agent when it is a single executable: that file. */
export function ownExecutable(): string {
  return process.execPath;
}
