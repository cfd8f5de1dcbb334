import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandResult } from '@dumont/protocol';

/**
 * Every command id the agent has started, with its result and whether the server has it, in one
 * JSON file of the state dir. An id is written *before* its command runs, so a crash or restart
 * can never run it twice (at most once); one found still "running" at startup was interrupted and
 * is reported failed. Writes go to a temp file that is fsynced and renamed over the old one, so the
 * file is always either the old or the new version.
 */
export interface JournalEntry {
  id: string;
  type: string;
  state: 'running' | 'done';
  status: 'succeeded' | 'failed' | null;
  detail: string | null;
  startedAt: string;
  finishedAt: string | null;
  /** The server acknowledged the result (a later heartbeat carrying it was accepted). */
  acked: boolean;
}

interface JournalFile {
  version: 1;
  entries: JournalEntry[];
}

export const JOURNAL_FILE = 'commands.json';
/** Acknowledged entries are kept this long, so a late redelivery is still recognised. */
export const KEEP_ACKED_MS = 7 * 24 * 3600 * 1000;
const MAX_ENTRIES = 1000;

export class JournalError extends Error {
  override name = 'JournalError';
}

export class CommandJournal {
  private entries = new Map<string, JournalEntry>();

  private constructor(
    /** null: nothing can be recorded, so nothing may run. */
    readonly path: string | null,
    private readonly now: () => number,
    private readonly unusable: string | null = null,
  ) {}

  /**
   * A journal that cannot record (the state dir is unusable): results are still reported, but
   * `begin` refuses, so no command runs without its id being on disk first.
   */
  static unwritable(reason: string, now: () => number = Date.now): CommandJournal {
    return new CommandJournal(null, now, reason);
  }

  /** Opens (creating the dir, mode 0700) and recovers interrupted entries. Throws JournalError. */
  static open(stateDir: string, now: () => number = Date.now): CommandJournal {
    const journal = new CommandJournal(join(stateDir, JOURNAL_FILE), now);
    try {
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new JournalError(`cannot create state dir ${stateDir}: ${(err as Error).message}`);
    }
    let text: string | null = null;
    try {
      text = readFileSync(journal.path!, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new JournalError(`cannot read ${journal.path}: ${(err as Error).message}`);
    }
    if (text !== null) {
      let parsed: JournalFile;
      try {
        parsed = JSON.parse(text) as JournalFile;
      } catch (err) {
        throw new JournalError(`${journal.path} is corrupt (${(err as Error).message}); move it away to start afresh`);
      }
      for (const e of parsed.entries ?? []) journal.entries.set(e.id, e);
    }
    let recovered = false;
    for (const e of journal.entries.values()) {
      if (e.state === 'running') {
        Object.assign(e, {
          state: 'done',
          status: 'failed',
          detail: 'interrupted: the agent stopped while this command was running; not run again (commands run at most once)',
          finishedAt: new Date(now()).toISOString(),
          acked: false,
        });
        recovered = true;
      }
    }
    if (recovered) journal.save();
    return journal;
  }

  /** Read-only view for `collect`: never writes, never recovers. */
  static peek(stateDir: string): CommandJournal {
    const journal = new CommandJournal(null, Date.now);
    try {
      const parsed = JSON.parse(readFileSync(join(stateDir, JOURNAL_FILE), 'utf8')) as JournalFile;
      for (const e of parsed.entries ?? []) journal.entries.set(e.id, e);
    } catch {
      // nothing recorded yet, or unreadable: nothing to show
    }
    return journal;
  }

  get(id: string): JournalEntry | undefined {
    return this.entries.get(id);
  }

  /** Records the id before the command runs. Throws JournalError when it cannot be recorded. */
  begin(id: string, type: string): void {
    if (this.entries.has(id)) throw new JournalError(`command ${id} was already started`);
    this.entries.set(id, { id, type, state: 'running', status: null, detail: null, startedAt: new Date(this.now()).toISOString(), finishedAt: null, acked: false });
    try {
      this.save();
    } catch (err) {
      this.entries.delete(id);
      throw err;
    }
  }

  /** Records a result; kept in memory even if the disk refuses, so it is still reported. */
  finish(id: string, status: 'succeeded' | 'failed', detail: string): void {
    const e = this.entries.get(id);
    const base = e ?? { id, type: 'unknown', startedAt: new Date(this.now()).toISOString() };
    this.entries.set(id, { ...base, state: 'done', status, detail, finishedAt: new Date(this.now()).toISOString(), acked: false });
    this.saveQuietly();
  }

  /** Results the server does not have yet, oldest first. */
  pending(limit = 100): CommandResult[] {
    return [...this.entries.values()]
      .filter((e) => e.state === 'done' && !e.acked && e.status !== null)
      .sort((a, b) => (a.finishedAt ?? '').localeCompare(b.finishedAt ?? ''))
      .slice(0, limit)
      .map((e) => ({ id: e.id, status: e.status!, detail: e.detail }));
  }

  acknowledge(ids: readonly string[]): void {
    let changed = false;
    for (const id of ids) {
      const e = this.entries.get(id);
      if (e && e.state === 'done' && !e.acked) {
        e.acked = true;
        changed = true;
      }
    }
    if (changed) {
      this.prune();
      this.saveQuietly();
    }
  }

  /** The server delivered an id it already acknowledged: it lost the result, send it again. */
  resend(id: string): boolean {
    const e = this.entries.get(id);
    if (!e || e.state !== 'done' || !e.acked) return false;
    e.acked = false;
    this.saveQuietly();
    return true;
  }

  private prune(): void {
    const cutoff = this.now() - KEEP_ACKED_MS;
    for (const e of this.entries.values()) {
      if (e.acked && e.finishedAt && Date.parse(e.finishedAt) < cutoff) this.entries.delete(e.id);
    }
    const acked = [...this.entries.values()].filter((e) => e.acked);
    for (const e of acked.slice(0, Math.max(0, this.entries.size - MAX_ENTRIES))) this.entries.delete(e.id);
  }

  private saveQuietly(): void {
    try {
      this.save();
    } catch {
      // The result stays in memory and is still sent; only a restart before then would lose it.
    }
  }

  private save(): void {
    if (!this.path) throw new JournalError(this.unusable ?? 'read-only journal');
    const data: JournalFile = { version: 1, entries: [...this.entries.values()] };
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(data, null, 1), { mode: 0o600 });
      const fd = openSync(tmp, 'r+');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      const dir = openSync(join(this.path, '..'), 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch (err) {
      throw new JournalError(`cannot write ${this.path}: ${(err as Error).message}`);
    }
  }
}
