import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { killChildGroup, pidsWhere, waitFor } from '../test-support/processes.js';
import { makeUtmp } from '../test-support/utmp-file.js';
import { readSessions } from './sessions.js';
import { parseSshdTitle } from './ssh-sessions.js';
import { USER_PROCESS, UTMP_RECORD_SIZE, parseUtmp, readUtmpSessions } from './utmp.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-utmp-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) killChildGroup(c);
  rmSync(tmp, { recursive: true, force: true });
});

/** A pid that existed and is gone now. */
function deadPid(): number {
  const r = spawnSync('/bin/sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

const live = process.pid;
const utmpFile = (name: string, buf: Buffer) => {
  const path = join(tmp, name);
  writeFileSync(path, buf);
  return path;
};

describe('parseUtmp on files made by utmpdump -r', () => {
  const buf = makeUtmp([
    { type: 2, pid: 0, id: '~~', user: 'reboot', line: '~', host: '6.1.0-28-amd64', time: '2024-12-20T14:00:00,000000+00:00' },
    { type: 7, pid: 1234, id: 'ts/0', user: 'alice', line: 'pts/0', host: '10.0.0.5', time: '2024-12-20T15:00:00,250000+00:00' },
    { type: 8, pid: 1235, id: 'ts/1', line: 'pts/1' },
  ]);

  it('reads every field at its offset', () => {
    expect(buf.length).toBe(3 * UTMP_RECORD_SIZE);
    const { records, problems } = parseUtmp(buf);
    expect(problems).toEqual([]);
    expect(records.map((r) => [r.type, r.pid, r.id, r.user, r.line, r.host])).toEqual([
      [2, 0, '~~  ', 'reboot', '~', '6.1.0-28-amd64'], // ut_id is not NUL-padded here: utmpdump wrote the spaces
      [USER_PROCESS, 1234, 'ts/0', 'alice', 'pts/0', '10.0.0.5'],
      [8, 1235, 'ts/1', '', 'pts/1', ''],
    ]);
    expect(new Date(records[1]!.time).toISOString()).toBe('2024-12-20T15:00:00.250Z');
  });

  it('agrees with who(1) reading the same file', () => {
    const who = spawnSync('who', [utmpFile('who', buf)]).stdout.toString();
    const fromWho = who.trim().split('\n').map((l) => l.split(/\s+/).slice(0, 2));
    const ours = parseUtmp(buf).records.filter((r) => r.type === USER_PROCESS).map((r) => [r.user, r.line]);
    expect(ours).toEqual(fromWho);
  });

  it('reports a truncated file instead of reading garbage', () => {
    const { records, problems } = parseUtmp(buf.subarray(0, UTMP_RECORD_SIZE + 100));
    expect(records).toHaveLength(1);
    expect(problems[0]).toMatch(/100 trailing bytes/);
  });
});

describe('readUtmpSessions', () => {
  it('keeps live user sessions with their tty input time, drops dead and non-user entries', async () => {
    const dev = join(tmp, 'dev');
    mkdirSync(join(dev, 'pts'), { recursive: true });
    writeFileSync(join(dev, 'pts', '3'), '');
    utimesSync(join(dev, 'pts', '3'), new Date('2024-12-20T15:29:45Z'), new Date('2024-12-20T15:00:00Z'));
    const path = utmpFile(
      'mixed',
      makeUtmp([
        { type: 7, pid: live, user: 'alice', line: 'pts/3', host: '10.0.0.5' },
        { type: 7, pid: deadPid(), user: 'bob', line: 'pts/4', host: '10.0.0.6' }, // crashed session left behind
        { type: 8, pid: live, line: 'pts/5' }, // DEAD_PROCESS
        { type: 6, pid: live, user: 'LOGIN', line: 'tty1' }, // LOGIN_PROCESS: a getty, nobody logged in
        { type: 7, pid: live, user: 'carol', line: ':0' }, // an X display: a user, but no tty to read
      ]),
    );
    const result = await readUtmpSessions(path, { proc: '/proc', dev });
    expect(result).toEqual({
      kind: 'ok',
      problems: [],
      sessions: [
        { user: 'alice', line: 'pts/3', host: '10.0.0.5', pid: live, lastInputAt: Date.parse('2024-12-20T15:29:45Z'), source: 'utmp' },
        { user: 'carol', line: ':0', host: null, pid: live, lastInputAt: null, source: 'utmp' },
      ],
    });
  });

  it('tells a missing utmp from an unreadable one', async () => {
    expect(await readUtmpSessions(join(tmp, 'absent'), { proc: '/proc', dev: '/dev' })).toEqual({ kind: 'missing' });
    const result = await readUtmpSessions(tmp, { proc: '/proc', dev: '/dev' }); // a directory
    expect(result.kind).toBe('error');
  });

  it('reads input time from a real terminal: typing moves it', async () => {
    // script(1) gives `cat` a real pseudo-terminal; what we write to script reaches it as input.
    const script = spawn('script', ['-qfc', 'exec cat > /dev/null', '/dev/null'], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
    children.push(script);
    const cat = await waitFor('cat on a pty', () => pidsWhere((cmdline, ppid) => ppid === script.pid && cmdline === 'cat\0')[0]);
    const tty = readlinkSync(`/proc/${cat}/fd/0`);
    expect(tty).toMatch(/^\/dev\/pts\/\d+$/);
    const line = tty.slice('/dev/'.length);
    const longAgo = new Date('2020-01-01T00:00:00Z');
    utimesSync(tty, longAgo, statSync(tty).mtime);
    const path = utmpFile('real-tty', makeUtmp([{ type: 7, pid: cat, user: 'dora', line }]));

    const before = await readUtmpSessions(path, { proc: '/proc', dev: '/dev' });
    expect(before.kind === 'ok' && before.sessions[0]!.lastInputAt).toBe(longAgo.getTime());

    script.stdin!.write('some typing\n');
    const after = await waitFor('the tty access time to move', async () => {
      const r = await readUtmpSessions(path, { proc: '/proc', dev: '/dev' });
      const t = r.kind === 'ok' ? r.sessions[0]?.lastInputAt : undefined;
      return t !== undefined && t !== null && t > longAgo.getTime() ? t : undefined;
    });
    // The kernel rounds tty times to 8 s so they do not leak keystroke timing.
    expect(Math.abs(after - Date.now())).toBeLessThan(20_000);
  });
});

describe('sshd session processes', () => {
  it.each([
    ['sshd: alice@pts/0', { user: 'alice', line: 'pts/0' }],
    ['sshd-session: bob@notty', { user: 'bob', line: 'notty' }],
    ['sshd: alice [priv]', null],
    ['sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups', null],
    ['sshd: alice [net]', null],
    ['/usr/bin/python3\0-m\0ipykernel_launcher', null],
  ] as const)('%j', (title, expected) => {
    expect(parseSshdTitle(title)).toEqual(expected);
  });

  it('are found in /proc when the host has no utmp, and merged with utmp when it has one', async () => {
    // sshd's session process: program name (comm) `sshd`, title `sshd: USER@TTY`. A `sleep` run
    // under the name sshd with that title looks the same in /proc.
    const bin = join(tmp, 'bin');
    mkdirSync(bin, { recursive: true });
    symlinkSync('/bin/sleep', join(bin, 'sshd'));
    const fake = spawn('/bin/bash', ['-c', `exec -a "sshd: erin@notty" ${join(bin, 'sshd')} 30`], { detached: true, stdio: 'ignore' });
    children.push(fake);
    await waitFor('the renamed process', () => pidsWhere((cmdline) => cmdline.startsWith('sshd: erin@notty')).length > 0);
    const noUtmp = await readSessions(join(tmp, 'absent'), { proc: '/proc', dev: '/dev' });
    expect(noUtmp.ok && noUtmp.sessions.filter((s) => s.user === 'erin')).toEqual([
      { user: 'erin', line: 'notty', host: null, pid: fake.pid, lastInputAt: null, source: 'sshd' },
    ]);
    const path = utmpFile('with-erin', makeUtmp([{ type: 7, pid: live, user: 'frank', line: 'pts/9' }]));
    const both = await readSessions(path, { proc: '/proc', dev: '/dev' });
    expect(both.ok && both.sessions.map((s) => `${s.user}@${s.line}`).filter((s) => /erin|frank/.test(s))).toEqual(['frank@pts/9', 'erin@notty']);
  });

  it('an unreadable utmp makes the reading unknown', async () => {
    expect(await readSessions(tmp, { proc: '/proc', dev: '/dev' })).toMatchObject({ ok: false });
  });
});
