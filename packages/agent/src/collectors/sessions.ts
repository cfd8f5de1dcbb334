import type { SystemPaths } from './proc.js';
import { readSshdSessions } from './ssh-sessions.js';
import { readUtmpSessions, type Session } from './utmp.js';

export type SessionsReading = { ok: true; sessions: Session[]; problems: string[] } | { ok: false; message: string };

/**
 * Terminal sessions: utmp's live USER_PROCESS entries (what `who` reads), plus sshd's session
 * processes. The second source covers what utmp never records: hosts without a utmp file (most
 * containers) and sessions without a terminal (`ssh host cmd`, scp, editors' remote sessions). An
 * unreadable utmp makes the reading unknown; a missing one does not, nothing records logins there.
 */
export async function readSessions(utmpPath: string, roots: Pick<SystemPaths, 'proc' | 'dev'>): Promise<SessionsReading> {
  const utmp = await readUtmpSessions(utmpPath, roots);
  if (utmp.kind === 'error') return { ok: false, message: utmp.message };
  const sessions = utmp.kind === 'ok' ? [...utmp.sessions] : [];
  const seen = new Set(sessions.map((s) => `${s.user}@${s.line}`));
  for (const s of await readSshdSessions(roots)) {
    if (seen.has(`${s.user}@${s.line}`)) continue;
    seen.add(`${s.user}@${s.line}`);
    sessions.push(s);
  }
  return { ok: true, sessions, problems: utmp.kind === 'ok' ? utmp.problems : [] };
}
