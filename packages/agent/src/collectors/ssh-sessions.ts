import { readFileSync, readdirSync } from 'node:fs';
import { ttyLastInput, type Session } from './utmp.js';

/**
 * Fallback for hosts without a utmp file (most containers): nothing records logins there, yet sshd
 * still names each session's process after its user and terminal, `sshd: alice@pts/0` (OpenSSH 9.8+
 * runs it as `sshd-session: alice@pts/0`; `@notty` for scp/sftp/commands). Privilege-separation
 * helpers (`sshd: alice [priv]`) have no `@` and are not sessions.
 */
const SSHD_SESSION = /^sshd(?:-session)?: ([^\s@[\]]+)@(\S+)/;

export function parseSshdTitle(cmdline: string): { user: string; line: string } | null {
  const title = cmdline.split('\0')[0] ?? '';
  const m = SSHD_SESSION.exec(title.trim());
  return m ? { user: m[1]!, line: m[2]! } : null;
}

/**
 * Reads /proc synchronously on purpose: procfs answers from memory, and a few hundred promise-based
 * reads cost about ten times the CPU of the same reads done in a loop, on every beat.
 */
export async function readSshdSessions(roots: { proc: string; dev: string }): Promise<Session[]> {
  let entries: string[];
  try {
    entries = readdirSync(roots.proc);
  } catch {
    return [];
  }
  const sessions: Session[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      // comm is the program (sshd, sshd-session) whatever title it set; cheap to rule others out.
      if (!readFileSync(`${roots.proc}/${entry}/comm`, 'latin1').startsWith('sshd')) continue;
      cmdline = readFileSync(`${roots.proc}/${entry}/cmdline`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const found = parseSshdTitle(cmdline);
    if (!found) continue;
    sessions.push({
      user: found.user,
      line: found.line,
      host: null,
      pid: Number(entry),
      lastInputAt: found.line === 'notty' ? null : await ttyLastInput(found.line, roots.dev),
      source: 'sshd',
    });
  }
  return sessions;
}
