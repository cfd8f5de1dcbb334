import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// `npm run demo` runs this script after the build; the test runs the real thing as a child process.
const DEMO = fileURLToPath(new URL('../../../scripts/demo.mjs', import.meta.url));

interface Demo {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  exited: Promise<number | null>;
  /** The server's pid once announced, so that a failing test can still clean up after it. */
  serverPid?: number;
}

function startDemo(args: string[]): Demo {
  const child = spawn(process.execPath, [DEMO, ...args], { env: { PATH: process.env.PATH } });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/** After a failure: Ctrl-C the demo, then make sure neither it nor its server outlives the test. */
async function cleanUp(demo: Demo): Promise<void> {
  if (demo.child.exitCode === null && demo.child.signalCode === null) {
    demo.child.kill('SIGINT');
    await Promise.race([demo.exited, new Promise((r) => setTimeout(r, 10_000))]);
    demo.child.kill('SIGKILL');
  }
  if (demo.serverPid !== undefined && !processGone(demo.serverPid)) process.kill(demo.serverPid, 'SIGKILL');
}

function exitWithin(demo: Demo, ms: number): Promise<number | null | 'still running'> {
  return Promise.race([demo.exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), ms))]);
}

async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number, demo: Demo): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}; demo output:\n${demo.output()}`);
}

/** What the demo prints for people: the server URL, the key, the server's pid and its data folder. */
function announced(output: string) {
  const url = /^ {2}server +(http:\/\/127\.0\.0\.1:\d+) +\(pid (\d+)\)/m.exec(output);
  const key = /^ {2}admin key +(dmk_\S+)$/m.exec(output);
  const data = /^ {2}data +(.+?), server log/m.exec(output);
  if (!url || !key || !data) return undefined;
  return { url: url[1]!, serverPid: Number(url[2]), key: key[1]!, dataDir: data[1]!.replace(/ +\(removed at exit\)$/, '') };
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

async function getJson(url: string, key: string): Promise<any> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  expect(res.status).toBe(200);
  return res.json();
}

describe('npm run demo (scripts/demo.mjs)', () => {
  it('shows countdowns, hibernations and growing savings, then exits 0 by itself leaving no process behind', async () => {
    const demo = startDemo([
      '--port', '0', '--instances', '40', '--duration', '30', '--seed', '7',
      '--idle-minutes', '0.1', '--warning-seconds', '5', '--heartbeat-seconds', '1', '--status-every', '2',
    ]);
    try {
      await waitFor('the fleet to start', () => (/the fleet starts beating/.test(demo.output()) ? true : undefined), 20_000, demo);
      const { url, key, serverPid, dataDir } = announced(demo.output())!;
      demo.serverPid = serverPid;
      expect(demo.output()).toContain(`curl -s -H "Authorization: Bearer ${key}" ${url}/api/v1/agent/savings`);
      expect(existsSync(dataDir)).toBe(true);
      // The printed key is the server's admin key; without it the API refuses.
      expect((await fetch(`${url}/api/v1/agent/savings`)).status).toBe(401);
      // The dashboard it points at is served, and the key logs in to it.
      expect(/^ {2}dashboard +(\S+)/m.exec(demo.output())?.[1]).toBe(`${url}/`);
      const page = await fetch(`${url}/`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toContain('text/html');
      const login = await fetch(`${url}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: key }) });
      expect(login.status).toBe(200);

      let sawCountdown = false;
      const firstSavings = await waitFor(
        'a countdown, a hibernation and savings',
        async () => {
          const list = await getJson(`${url}/api/v1/agent/instances?limit=1000`, key);
          expect(list.count).toBe(40);
          sawCountdown ||= list.instances.some((i: any) => i.status === 'idle' && i.hibernate_in_seconds > 0);
          const savings = await getJson(`${url}/api/v1/agent/savings`, key);
          return sawCountdown && list.hibernated_count >= 1 && savings.hibernated_hours > 0 && savings.usd_saved > 0 ? savings : undefined;
        },
        25_000,
        demo,
      );
      // The savings move: a hibernated host keeps saving while it stays down.
      await new Promise((r) => setTimeout(r, 1500));
      const later = await getJson(`${url}/api/v1/agent/savings`, key);
      expect(later.hibernated_hours).toBeGreaterThan(firstSavings.hibernated_hours);
      // Instances carry a price, from which the dollars come.
      const hibernated = await getJson(`${url}/api/v1/agent/instances?status=hibernated&limit=1`, key);
      const detail = await getJson(`${url}/api/v1/agent/instances/${hibernated.instances[0].instance_id}`, key);
      expect(detail.price_per_hour).toBeGreaterThan(0);
      expect(detail.provider.name).toBe('none');

      const code = await exitWithin(demo, 25_000);
      expect(code, demo.output()).toBe(0);
      expect(demo.output()).toMatch(/saved \d+\.\d\d h, \d+\.\d\d GPU-h, \$\d+\.\d\d/);
      expect(demo.output()).toMatch(/hibernated [1-9]\d*, woken 0/); // the simulator's own summary
      expect(processGone(serverPid)).toBe(true);
      await expect(fetch(`${url}/healthz`)).rejects.toThrow();
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      await cleanUp(demo);
    }
  }, 60_000);

  it('stops the fleet and the server on Ctrl-C (SIGINT) and exits 0', async () => {
    const demo = startDemo(['--port', '0', '--instances', '20', '--seed', '3']);
    try {
      await waitFor('the fleet to start', () => (/the fleet starts beating/.test(demo.output()) ? true : undefined), 20_000, demo);
      const { url, serverPid, dataDir } = announced(demo.output())!;
      demo.serverPid = serverPid;
      demo.child.kill('SIGINT');
      const code = await exitWithin(demo, 15_000);
      expect(code, demo.output()).toBe(0);
      expect(demo.output()).toMatch(/stopping \(Ctrl-C\)/);
      expect(processGone(serverPid)).toBe(true);
      await expect(fetch(`${url}/healthz`)).rejects.toThrow();
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      await cleanUp(demo);
    }
  }, 40_000);

  it('refuses bad options with exit 2 and the usage, starting nothing', async () => {
    const demo = startDemo(['--instances', '0']);
    expect(await demo.exited).toBe(2);
    expect(demo.output()).toMatch(/--instances 0: must be a whole number/);
    expect(demo.output()).toMatch(/usage: npm run demo/);
    expect(demo.output()).not.toMatch(/admin key/);
  });
});
