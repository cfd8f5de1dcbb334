import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CommandJournal, JOURNAL_FILE, JournalError, KEEP_ACKED_MS } from './journal.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-journal-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const dir = () => join(tmp, `state-${n++}`);

describe('CommandJournal', () => {
  it('creates the state dir (0700) and records an id before the command runs', () => {
    const d = dir();
    const j = CommandJournal.open(d);
    j.begin('c1', 'hibernate');
    expect(statSync(d).mode & 0o777).toBe(0o700);
    const onDisk = JSON.parse(readFileSync(join(d, JOURNAL_FILE), 'utf8'));
    expect(onDisk.entries).toMatchObject([{ id: 'c1', type: 'hibernate', state: 'running' }]);
    expect(statSync(join(d, JOURNAL_FILE)).mode & 0o777).toBe(0o600);
    expect(() => j.begin('c1', 'hibernate')).toThrow(JournalError);
  });

  it('survives a restart: known ids stay known, unsent results stay pending', () => {
    const d = dir();
    const a = CommandJournal.open(d);
    a.begin('c1', 'snapshot');
    a.finish('c1', 'succeeded', 'snapshot hook exited with code 0');
    const b = CommandJournal.open(d);
    expect(b.get('c1')?.state).toBe('done');
    expect(b.pending()).toEqual([{ id: 'c1', status: 'succeeded', detail: 'snapshot hook exited with code 0' }]);
  });

  it('reports a command interrupted by a crash as failed, and never runs it again', () => {
    const d = dir();
    CommandJournal.open(d).begin('c1', 'hibernate'); // the agent dies here
    const after = CommandJournal.open(d);
    expect(after.pending()).toEqual([{ id: 'c1', status: 'failed', detail: expect.stringMatching(/^interrupted: .*at most once/) }]);
    expect(() => after.begin('c1', 'hibernate')).toThrow(JournalError);
  });

  it('stops sending a result once acknowledged, and sends it again if the server asks again', () => {
    const j = CommandJournal.open(dir());
    j.begin('c1', 'restart');
    j.finish('c1', 'failed', 'no');
    j.acknowledge(['c1']);
    expect(j.pending()).toEqual([]);
    expect(j.resend('c1')).toBe(true);
    expect(j.pending().map((r) => r.id)).toEqual(['c1']);
    expect(j.resend('unknown')).toBe(false);
  });

  it('lists pending results oldest first', () => {
    let t = Date.parse('2024-12-20T15:00:00Z');
    const j = CommandJournal.open(dir(), () => (t += 1000));
    for (const id of ['b', 'a', 'c']) {
      j.begin(id, 'snapshot');
      j.finish(id, 'succeeded', id);
    }
    expect(j.pending().map((r) => r.id)).toEqual(['b', 'a', 'c']);
  });

  it('forgets acknowledged entries after a week, never unacknowledged ones', () => {
    let t = Date.parse('2024-12-01T00:00:00Z');
    const d = dir();
    const j = CommandJournal.open(d, () => t);
    j.begin('old', 'snapshot');
    j.finish('old', 'succeeded', '');
    j.begin('unsent', 'snapshot');
    j.finish('unsent', 'failed', '');
    j.acknowledge(['old']);
    t += KEEP_ACKED_MS + 1000;
    j.begin('new', 'snapshot');
    j.finish('new', 'succeeded', '');
    j.acknowledge(['new']);
    expect(CommandJournal.open(d).get('old')).toBeUndefined();
    expect(CommandJournal.open(d).get('unsent')).toBeDefined();
  });

  it('writes atomically: no temp file is left, and a corrupt file is refused, not overwritten', () => {
    const d = dir();
    const j = CommandJournal.open(d);
    j.begin('c1', 'snapshot');
    expect(readdirSync(d)).toEqual([JOURNAL_FILE]);
    writeFileSync(join(d, JOURNAL_FILE), '{"version":1,"entr');
    expect(() => CommandJournal.open(d)).toThrow(/corrupt/);
    expect(readFileSync(join(d, JOURNAL_FILE), 'utf8')).toBe('{"version":1,"entr');
  });

  it('an unwritable journal refuses begin() but keeps finish() results in memory', () => {
    const j = CommandJournal.unwritable('cannot create state dir /nope: EACCES');
    expect(() => j.begin('c1', 'snapshot')).toThrow(/EACCES/);
    j.finish('c1', 'failed', 'not run');
    expect(j.pending()).toEqual([{ id: 'c1', status: 'failed', detail: 'not run' }]);
  });

  it('peek() reads without writing or recovering', () => {
    const d = dir();
    CommandJournal.open(d).begin('c1', 'hibernate');
    const before = readFileSync(join(d, JOURNAL_FILE), 'utf8');
    expect(CommandJournal.peek(d).pending()).toEqual([]);
    expect(readFileSync(join(d, JOURNAL_FILE), 'utf8')).toBe(before);
    expect(existsSync(join(dir(), JOURNAL_FILE))).toBe(false);
  });
});
