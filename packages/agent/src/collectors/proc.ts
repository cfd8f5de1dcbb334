import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/**
 * Small readers of /proc and /etc/passwd. The roots are parameters so tests can point them at
 * files they made; the agent uses the real ones.
 */
export interface SystemPaths {
  proc: string;
  dev: string;
  passwd: string;
}

export const SYSTEM_PATHS: SystemPaths = { proc: '/proc', dev: '/dev', passwd: '/etc/passwd' };

/** Exists and is not a zombie: a logged-out session's process can linger as one. */
export function pidAlive(pid: number, procRoot = '/proc'): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    const stat = readFileSync(`${procRoot}/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export interface PasswdEntry {
  name: string;
  uid: number;
  home: string;
}

export async function readPasswd(path = '/etc/passwd'): Promise<PasswdEntry[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return [];
  }
  const entries: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const [name, , uid, , , home] = line.split(':');
    if (!name || uid === undefined || home === undefined || name.startsWith('#')) continue;
    entries.push({ name, uid: Number(uid), home });
  }
  return entries;
}

export function userName(uid: number, passwd: readonly PasswdEntry[]): string {
  return passwd.find((p) => p.uid === uid)?.name ?? `uid:${uid}`;
}
