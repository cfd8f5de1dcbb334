import { readFile, stat } from 'node:fs/promises';
import { pidAlive } from './proc.js';

/**
 * The binary utmp file (Linux x86_64 `struct utmp`, 384 bytes per record), read directly: no `who`
 * to spawn, no native module. Offsets from <bits/utmp.h>:
 *   0 ut_type int32 | 4 ut_pid int32 | 8 ut_line[32] | 40 ut_id[4] | 44 ut_user[32] | 76 ut_host[256]
 *   332 ut_exit {int16,int16} | 336 ut_session int32 | 340 ut_tv {int32 sec, int32 usec}
 *   348 ut_addr_v6 int32[4] | 364 unused[20]
 */
export const UTMP_RECORD_SIZE = 384;
export const USER_PROCESS = 7;
export const DEFAULT_UTMP_PATH = '/var/run/utmp';

export interface UtmpRecord {
  type: number;
  pid: number;
  line: string;
  id: string;
  user: string;
  host: string;
  session: number;
  /** ut_tv as milliseconds since the epoch. */
  time: number;
}

const cString = (buf: Buffer, start: number, length: number) => {
  const field = buf.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? length : end).toString('utf8');
};

export function parseUtmp(buf: Buffer): { records: UtmpRecord[]; problems: string[] } {
  const records: UtmpRecord[] = [];
  const problems: string[] = [];
  const whole = buf.length - (buf.length % UTMP_RECORD_SIZE);
  if (whole !== buf.length) problems.push(`utmp has ${buf.length % UTMP_RECORD_SIZE} trailing bytes (not a 384-byte record layout?)`);
  for (let off = 0; off < whole; off += UTMP_RECORD_SIZE) {
    const r = buf.subarray(off, off + UTMP_RECORD_SIZE);
    records.push({
      type: r.readInt32LE(0),
      pid: r.readInt32LE(4),
      line: cString(r, 8, 32),
      id: cString(r, 40, 4),
      user: cString(r, 44, 32),
      host: cString(r, 76, 256),
      session: r.readInt32LE(336),
      time: r.readInt32LE(340) * 1000 + Math.floor(r.readInt32LE(344) / 1000),
    });
  }
  return { records, problems };
}

/** A logged-in terminal session. */
export interface Session {
  user: string;
  /** Terminal, relative to /dev (`pts/0`), or a display (`:0`). */
  line: string;
  host: string | null;
  pid: number;
  /** Last input on the terminal: the tty's access time, as `w` computes idle time. */
  lastInputAt: number | null;
  source: 'utmp' | 'sshd';
}

/** Last input on /dev/<line>; null for lines that are not device files (X displays, `notty`). */
export async function ttyLastInput(line: string, devRoot: string): Promise<number | null> {
  if (!/^[a-zA-Z0-9/_-]+$/.test(line) || line.includes('..')) return null;
  try {
    const s = await stat(`${devRoot}/${line}`);
    return s.atimeMs;
  } catch {
    return null;
  }
}

export type UtmpSessions = { kind: 'ok'; sessions: Session[]; problems: string[] } | { kind: 'missing' } | { kind: 'error'; message: string };

/** USER_PROCESS entries whose process is still alive: utmp keeps records of crashed sessions. */
export async function readUtmpSessions(path: string, roots: { proc: string; dev: string }): Promise<UtmpSessions> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'error', message: `cannot read ${path}: ${e.message}` };
  }
  const { records, problems } = parseUtmp(buf);
  const sessions: Session[] = [];
  for (const r of records) {
    if (r.type !== USER_PROCESS || r.user === '' || !pidAlive(r.pid, roots.proc)) continue;
    sessions.push({
      user: r.user,
      line: r.line,
      host: r.host === '' ? null : r.host,
      pid: r.pid,
      lastInputAt: await ttyLastInput(r.line, roots.dev),
      source: 'utmp',
    });
  }
  return { kind: 'ok', sessions, problems };
}
