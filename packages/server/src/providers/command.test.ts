import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCommandProvider, parseCommandLine } from './command.js';
import { commandEnvironment } from './registry.js';
import type { ProviderAction, ProviderOutcome } from './provider.js';

const stop: ProviderAction = {
  id: 'outbox-3',
  kind: 'stop',
  instanceId: 42,
  providerInstanceId: 'i-0abc123',
  hostname: 'gpu-001',
  owner: 'alice',
  reason: 'idle for 30 min',
};
const start: ProviderAction = { ...stop, id: 'outbox-4', kind: 'start', hostname: null, reason: 'operator wake' };

let dir: string;

function script(name: string, body: string, mode = 0o755): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, mode);
  return path;
}

function expectFailure(outcome: ProviderOutcome, retryable: boolean): Extract<ProviderOutcome, { ok: false }> {
  expect(outcome.ok).toBe(false);
  if (outcome.ok) throw new Error('unreachable');
  expect(outcome.retryable).toBe(retryable);
  return outcome;
}

/**
 * Dead means kill(pid, 0) says ESRCH. A zombie counts too: it is dead, merely not yet reaped by whichever
 * init adopted it, and a container's init may take its time (or never do it).
 */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return true;
    throw error;
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true; // reaped between the two looks
  }
}

async function waitUntilGone(pid: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (isGone(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return isGone(pid);
}

async function readPid(path: string): Promise<number> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    if (existsSync(path)) {
      const text = readFileSync(path, 'utf8').trim();
      if (/^\d+$/.test(text)) return Number(text);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no pid in ${path}`);
}

function killIfAlive(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dumont-command-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('command provider with real child processes', () => {
  it('is named command', () => {
    expect(createCommandProvider({ stop: ['true'], start: null }).name).toBe('command');
  });

  it('runs the stop command without a shell, telling it which machine through DUMONT_* variables', async () => {
    const out = join(dir, 'stop-env.txt');
    const path = script(
      'record-env.sh',
      'printf "%s\\n" "$DUMONT_INSTANCE_ID" "$DUMONT_PROVIDER_INSTANCE_ID" "[$DUMONT_HOSTNAME]" "$DUMONT_ACTION" "$FROM_PARENT" "$1" "$2" > "$OUT_FILE"',
    );
    const provider = createCommandProvider({
      stop: [path, 'two words', '$HOME;`id`'],
      start: null,
      env: { ...process.env, OUT_FILE: out, FROM_PARENT: 'inherited' },
    });
    expect(await provider.execute(stop, 5_000)).toEqual({ ok: true });
    expect(readFileSync(out, 'utf8').split('\n')).toEqual([
      '42',
      'i-0abc123',
      '[gpu-001]',
      'stop',
      'inherited',
      'two words',
      '$HOME;`id`',
      '',
    ]);
  });

  it('runs the start command with DUMONT_ACTION=start and an empty DUMONT_HOSTNAME when there is none', async () => {
    const out = join(dir, 'start-env.txt');
    const path = script('record-start.sh', 'printf "%s\\n" "$DUMONT_ACTION" "[$DUMONT_HOSTNAME]" "${DUMONT_HOSTNAME+set}" > "$OUT_FILE"');
    const provider = createCommandProvider({ stop: ['false'], start: [path], env: { ...process.env, OUT_FILE: out } });
    expect(await provider.execute(start, 5_000)).toEqual({ ok: true });
    expect(readFileSync(out, 'utf8')).toBe('start\n[]\nset\n');
  });

  it('gives up on start when no start command is configured', async () => {
    const outcome = expectFailure(await createCommandProvider({ stop: ['true'], start: null }).execute(start, 5_000), false);
    expect(outcome.message).toBe('no start command configured (DUMONT_PROVIDER_START_COMMAND)');
  });

  it('retries on a non-zero exit, with the tail of stderr on one line', async () => {
    const path = script('fail.sh', 'echo "this is stdout"\necho "  aws: error: " >&2\necho "  throttled, try later  " >&2\nexit 3');
    const outcome = expectFailure(await createCommandProvider({ stop: [path], start: null }).execute(stop, 5_000), true);
    expect(outcome.message).toBe('exit 3: aws: error: throttled, try later');
  });

  it('says just the exit status when stderr is empty', async () => {
    const outcome = expectFailure(await createCommandProvider({ stop: ['false'], start: null }).execute(stop, 5_000), true);
    expect(outcome.message).toBe('exit 1');
  });

  it('keeps only the end of a long stderr', async () => {
    const path = script('noisy.sh', 'i=0\nwhile [ $i -lt 2000 ]; do echo "line $i of noise" >&2; i=$((i+1)); done\necho "the real reason" >&2\nexit 2');
    const outcome = expectFailure(await createCommandProvider({ stop: [path], start: null }).execute(stop, 10_000), true);
    expect(outcome.message.startsWith('exit 2: …')).toBe(true);
    expect(outcome.message.endsWith('line 1999 of noise the real reason')).toBe(true);
    expect(outcome.message.length).toBeLessThanOrEqual('exit 2: …'.length + 300);
  });

  it('does not wait on stdin', async () => {
    const provider = createCommandProvider({ stop: ['cat'], start: null });
    expect(await provider.execute(stop, 2_000)).toEqual({ ok: true });
  });

  it('on timeout ends the whole process group, grandchildren included', async () => {
    const pidFile = join(dir, 'hang-grandchild.pid');
    const path = script('hang.sh', 'sleep 1000 &\necho $! > "$PID_FILE"\necho "still working" >&2\nsleep 1000');
    const provider = createCommandProvider({ stop: [path], start: null, env: { ...process.env, PID_FILE: pidFile } });
    const began = Date.now();
    const outcome = expectFailure(await provider.execute(stop, 500), true);
    expect(Date.now() - began).toBeLessThan(2_000);
    expect(outcome.message).toMatch(/^timed out after 0\.5 s/);
    const grandchild = await readPid(pidFile);
    try {
      expect(await waitUntilGone(grandchild)).toBe(true);
    } finally {
      killIfAlive(grandchild);
    }
  });

  it('on timeout follows up with SIGKILL when the group ignores SIGTERM', async () => {
    const pidFile = join(dir, 'stubborn-grandchild.pid');
    // An ignored signal stays ignored across fork and exec, so the background sleep ignores SIGTERM too.
    const path = script('stubborn.sh', "trap '' TERM\nsleep 1000 &\necho $! > \"$PID_FILE\"\nwhile :; do sleep 0.1; done");
    const provider = createCommandProvider({ stop: [path], start: null, env: { ...process.env, PID_FILE: pidFile } });
    const began = Date.now();
    const outcome = expectFailure(await provider.execute(stop, 500), true);
    const took = Date.now() - began;
    expect(took).toBeGreaterThanOrEqual(2_400);
    expect(took).toBeLessThan(4_500);
    expect(outcome.message).toMatch(/^timed out after 0\.5 s/);
    const grandchild = await readPid(pidFile);
    try {
      expect(await waitUntilGone(grandchild)).toBe(true);
    } finally {
      killIfAlive(grandchild);
    }
  });

  it('does not wait for a background child that kept stderr open after the command succeeded', async () => {
    const pidFile = join(dir, 'left-behind.pid');
    const path = script('leave-behind.sh', 'sleep 30 &\necho $! > "$PID_FILE"\nexit 0');
    const provider = createCommandProvider({ stop: [path], start: null, env: { ...process.env, PID_FILE: pidFile } });
    const began = Date.now();
    try {
      expect(await provider.execute(stop, 10_000)).toEqual({ ok: true });
      expect(Date.now() - began).toBeLessThan(2_000);
    } finally {
      killIfAlive(await readPid(pidFile));
    }
  });

  it.each([
    ['a path that does not exist', () => join(dir, 'no-such-command')],
    ['a name not on PATH', () => 'dumont-no-such-command-xyz'],
  ])('gives up when the command is %s', async (_what, command) => {
    const file = command();
    const outcome = expectFailure(await createCommandProvider({ stop: [file], start: null }).execute(stop, 5_000), false);
    expect(outcome.message).toBe(`${file}: not found`);
  });

  it('gives up when the command is not executable', async () => {
    const path = script('not-executable.sh', 'exit 0', 0o644);
    const outcome = expectFailure(await createCommandProvider({ stop: [path], start: null }).execute(stop, 5_000), false);
    expect(outcome.message).toBe(`${path}: not executable`);
  });
});

describe('parseCommandLine', () => {
  it('reads a JSON array of strings as the argv, spaces and all', () => {
    expect(parseCommandLine(' ["aws","ec2","stop-instances","--instance-ids","i-1"] ', 'X')).toEqual([
      'aws',
      'ec2',
      'stop-instances',
      '--instance-ids',
      'i-1',
    ]);
    expect(parseCommandLine('["/opt/my scripts/stop", "a b", ""]', 'X')).toEqual(['/opt/my scripts/stop', 'a b', '']);
  });

  it('splits anything else on whitespace, with no shell processing', () => {
    expect(parseCommandLine('  aws ec2\tstop-instances \n --instance-ids   i-1 ', 'X')).toEqual([
      'aws',
      'ec2',
      'stop-instances',
      '--instance-ids',
      'i-1',
    ]);
    expect(parseCommandLine(`stop.sh "a b" $HOME 'c'`, 'X')).toEqual(['stop.sh', '"a', 'b"', '$HOME', "'c'"]);
  });

  it.each([
    ['empty', ''],
    ['only whitespace', ' \n\t '],
  ])('refuses a value that is %s, naming the variable', (_what, value) => {
    expect(() => parseCommandLine(value, 'DUMONT_PROVIDER_STOP_COMMAND')).toThrow(/^DUMONT_PROVIDER_STOP_COMMAND: empty/);
  });

  it.each([
    ['broken JSON', '["aws", "ec2"'],
    ['an empty array', '[]'],
    ['numbers among the strings', '["aws", 1]'],
    ['a nested array', '[["aws"]]'],
    ['null in the array', '["aws", null]'],
    ['an empty command', '["", "x"]'],
    ['a NUL character', '["aws", "a\\u0000b"]'],
  ])('refuses a JSON array with %s, naming the variable', (_what, value) => {
    expect(() => parseCommandLine(value, 'DUMONT_PROVIDER_START_COMMAND')).toThrow(/^DUMONT_PROVIDER_START_COMMAND: /);
  });
});

describe('the environment the configured command provider runs with', () => {
  it("keeps the cloud CLI's variables and drops the server's own secrets", async () => {
    const out = join(dir, 'env.txt');
    const path = script('dump-env', `env > "${out}"`);
    const provider = createCommandProvider({
      stop: [path],
      start: null,
      env: commandEnvironment({
        PATH: process.env.PATH,
        AWS_PROFILE: 'fleet',
        DUMONT_ADMIN_KEY: 'dmk_admin_secret_1',
        DUMONT_VAST_API_KEY: 'vast_secret_2',
        DUMONT_WEBHOOK_SECRET: 'whsec_c2VjcmV0Mw==',
        DUMONT_NOTIFY_SECRET: 'whsec_c2VjcmV0NA==',
        DUMONT_DATABASE_URL: 'postgres://user:secret5@db/dumont',
      }),
    });
    expect(await provider.execute(stop, 5_000)).toEqual({ ok: true });
    const seen = readFileSync(out, 'utf8');
    expect(seen).toContain('AWS_PROFILE=fleet');
    expect(seen).toContain('DUMONT_PROVIDER_INSTANCE_ID=i-0abc123');
    for (const secret of ['dmk_admin_secret_1', 'vast_secret_2', 'c2VjcmV0Mw', 'c2VjcmV0NA', 'secret5']) expect(seen).not.toContain(secret);
  });
});

describe('exit codes a script chooses', () => {
  it('fails at once on a sysexits usage/config/permission code, retries EX_TEMPFAIL and anything else', async () => {
    const run = async (code: number) => {
      const path = script(`exit-${code}`, `echo "exit with ${code}" >&2\nexit ${code}`);
      return createCommandProvider({ stop: [path], start: null }).execute(stop, 5_000);
    };
    expect(expectFailure(await run(77), false).message).toBe('exit 77: exit with 77');
    expect(expectFailure(await run(64), false).message).toContain('exit 64');
    expect(expectFailure(await run(78), false).message).toContain('exit 78');
    expectFailure(await run(75), true);
    expectFailure(await run(1), true);
    expectFailure(await run(63), true);
    expectFailure(await run(79), true);
  });
});
