import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jupyterAvailable, startJupyter, type RunningJupyter } from '../test-support/jupyter-server.js';
import { waitFor } from '../test-support/processes.js';
import { ActivityTracker } from './activity.js';
import { defaultRuntimeDirs, readJupyter } from './jupyter.js';
import { readPasswd } from './proc.js';

// Needs Debian's jupyter-server and python3-ipykernel (.ci/run installs them).
describe.skipIf(!jupyterAvailable())('Jupyter collector against a real Jupyter server', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'dumont-jupyter-'));
  let jupyter: RunningJupyter;
  const read = async () => readJupyter({ runtimeDirs: [jupyter.runtimeDir], timeoutMs: 5000, passwd: await readPasswd() });

  beforeAll(async () => {
    jupyter = await startJupyter(tmp);
  }, 60_000);
  afterAll(async () => {
    await jupyter?.stop();
    rmSync(tmp, { recursive: true, force: true });
  }, 30_000);

  it('finds the server from its runtime file and reads its status with its token', async () => {
    const status = await jupyter.api<{ last_activity: string; started: string }>('api/status');
    const reading = await read();
    expect(reading.errors).toEqual([]);
    expect(reading.servers).toEqual([
      { pid: jupyter.pid, url: jupyter.url, owner: 'root', lastActivity: Date.parse(status.last_activity), kernels: 0, busyKernels: 0, connections: 0 },
    ]);
  });

  it('does not reset the server’s activity clock by asking', async () => {
    const before = (await jupyter.api<{ last_activity: string }>('api/status')).last_activity;
    await new Promise((r) => setTimeout(r, 20)); // so that a tracked request would stamp a later time
    for (let i = 0; i < 3; i++) await read();
    expect((await jupyter.api<{ last_activity: string }>('api/status')).last_activity).toBe(before);
    // The control: the same kernels request without no_track_activity does move it.
    await jupyter.api('api/kernels');
    expect((await jupyter.api<{ last_activity: string }>('api/status')).last_activity).not.toBe(before);
  });

  it('sees a kernel made busy through the API as activity now, and idle again afterwards', async () => {
    const tabs: Array<{ close(): void }> = [];
    const busyReading = async () => {
      const r = await read();
      return r.servers[0]?.busyKernels === 1 ? r : undefined;
    };
    // The server learns a kernel's state from its own IOPub subscription, which on a loaded machine
    // has been seen to miss the `busy` the kernel sent us. That is Jupyter's state, not the
    // collector's reading of it: start over with a fresh kernel (at most three times) until the
    // server itself has seen the kernel busy; the collector must then report exactly that.
    let kernel = '';
    let busy: Awaited<ReturnType<typeof read>> | undefined;
    for (let attempt = 1; busy === undefined; attempt++) {
      kernel = await jupyter.startKernel();
      // Resolves once the kernel itself said it is busy running this code.
      tabs.push(await jupyter.execute(kernel, 'import time; time.sleep(120)'));
      busy = await waitFor('a busy kernel', busyReading, 20_000, 100).catch((err: unknown) => {
        if (attempt >= 3) throw err;
        return undefined;
      });
      if (busy === undefined) {
        tabs.pop()!.close();
        await jupyter.api(`api/kernels/${kernel}`, { method: 'DELETE' });
      }
    }
    try {
      expect(busy.servers[0]!.kernels).toBe(1);

      const tracker = new ActivityTracker();
      const now = Date.parse('2030-01-01T00:00:00Z'); // injected clock: far after anything the server saw
      const report = tracker.observe({ now, sessions: [], jupyter: busy });
      expect(report.lastActivity).toBe(now);
      expect(report.reasons).toEqual([`jupyter pid ${jupyter.pid}: 1 busy kernel(s)`]);

      // Interrupting the cell (the notebook's stop button) makes it idle again.
      // Interrupt until idle: an interrupt that lands before the cell's sleep starts is lost.
      const interrupt = () => jupyter.api(`api/kernels/${kernel}/interrupt`, { method: 'POST' });
      await interrupt();
      let interruptedAt = Date.now();
      const idle = await waitFor('the kernel to be idle', async () => {
        const r = await read();
        if (r.servers[0]?.busyKernels === 0) return r;
        if (Date.now() - interruptedAt > 2000) {
          await interrupt();
          interruptedAt = Date.now();
        }
        return undefined;
      }, 30_000, 200);
      // Back to the server's own clock: the end of the execution, not now.
      const later = new ActivityTracker().observe({ now, sessions: [], jupyter: idle });
      expect(later.lastActivity).toBe(idle.servers[0]!.lastActivity);
      expect(later.lastActivity!).toBeLessThan(now);
    } finally {
      for (const tab of tabs) tab.close();
    }
  }, 300_000);

  it('counts the owner of a server with an open notebook as an active user', async () => {
    const users = (reading: Awaited<ReturnType<typeof read>>) =>
      new ActivityTracker().observe({ now: Date.now(), sessions: [], jupyter: reading }).activeUsers;
    const withConnections = (n: number) => async () => {
      const r = await read();
      return r.servers[0]?.connections === n ? r : undefined;
    };
    const [kernel] = await jupyter.api<Array<{ id: string }>>('api/kernels?no_track_activity=1');
    expect(users(await waitFor('no open connection', withConnections(0)))).toBe(0);
    const tab = await jupyter.connect(kernel!.id);
    expect(users(await waitFor('an open connection', withConnections(1)))).toBe(1);
    tab.close();
    expect(users(await waitFor('the connection to close', withConnections(0)))).toBe(0);
  });

  it('reports a server that refuses the token as an error, without its token', async () => {
    const dir = join(tmp, 'bad-token');
    mkdirSync(dir);
    writeFileSync(join(dir, `jpserver-${jupyter.pid}.json`), JSON.stringify({ url: jupyter.url, token: 'wrong-token-value', pid: jupyter.pid }));
    const r = await readJupyter({ runtimeDirs: [dir], timeoutMs: 5000, passwd: [] });
    expect(r.servers).toEqual([]);
    expect(r.errors).toEqual([`server pid ${jupyter.pid} at ${jupyter.url}: /api/status: HTTP 403`]);
    expect(r.errors.join()).not.toContain('wrong-token-value');
  });

  it('ignores runtime files left behind by dead servers', async () => {
    const dir = join(tmp, 'stale');
    mkdirSync(dir);
    writeFileSync(join(dir, 'nbserver-999999.json'), JSON.stringify({ url: 'http://127.0.0.1:1/', token: 't', pid: 999_999 }));
    expect(await readJupyter({ runtimeDirs: [dir, join(tmp, 'does-not-exist')], timeoutMs: 1000, passwd: [] })).toEqual({ servers: [], errors: [] });
  });
});

describe('defaultRuntimeDirs', () => {
  it('searches $JUPYTER_RUNTIME_DIR, then each login user’s ~/.local/share/jupyter/runtime', () => {
    const passwd = [
      { name: 'root', uid: 0, home: '/root' },
      { name: 'daemon', uid: 1, home: '/usr/sbin' },
      { name: 'alice', uid: 1000, home: '/home/alice' },
      { name: 'nobody', uid: 65534, home: '/' },
    ];
    expect(defaultRuntimeDirs({ JUPYTER_RUNTIME_DIR: '/tmp/rt' }, passwd)).toEqual([
      '/tmp/rt',
      '/root/.local/share/jupyter/runtime',
      '/home/alice/.local/share/jupyter/runtime',
    ]);
  });
});
