import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { killChildGroup, killPid, waitFor } from './processes.js';

/**
 * A real Jupyter server (Debian's `jupyter-server` with `python3-ipykernel`), on loopback with a
 * token, its runtime files in a directory of the test's own.
 */
export const JUPYTER_SERVER_BIN = '/usr/bin/jupyter-server';
export const jupyterAvailable = () => existsSync(JUPYTER_SERVER_BIN);

export interface RunningJupyter {
  url: string;
  port: number;
  token: string;
  runtimeDir: string;
  pid: number;
  api<T = unknown>(path: string, init?: { method?: string; body?: unknown }): Promise<T>;
  startKernel(): Promise<string>;
  /** Sends execute_request over the kernel's websocket channel (the API a browser uses). */
  execute(kernelId: string, code: string): Promise<{ close(): void }>;
  /** Opens a kernel connection and keeps it open until `close()`, as a browser tab does. */
  connect(kernelId: string): Promise<{ close(): void }>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function openChannels(port: number, token: string, kernelId: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const key = randomBytes(16).toString('base64');
    socket.once('error', reject);
    socket.write(
      `GET /api/kernels/${kernelId}/channels?token=${token} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
        `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    let head = '';
    const onData = (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.on('data', () => {}); // kernel messages: not needed, just drained
      if (head.startsWith('HTTP/1.1 101')) resolve(socket);
      else reject(new Error(`websocket upgrade refused: ${head.split('\r\n')[0]}`));
    };
    socket.on('data', onData);
  });
}

/** One masked text frame (RFC 6455 §5.2); clients must mask. */
function textFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const head =
    payload.length < 126
      ? Buffer.from([0x81, 0x80 | payload.length])
      : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) body[i] = payload[i]! ^ mask[i % 4]!;
  return Buffer.concat([head, mask, body]);
}

export async function startJupyter(root: string): Promise<RunningJupyter> {
  const runtimeDir = join(root, 'runtime');
  const notebooks = join(root, 'notebooks');
  mkdirSync(runtimeDir, { recursive: true });
  mkdirSync(notebooks, { recursive: true });
  const token = randomBytes(16).toString('hex');
  const port = await freePort();
  const child: ChildProcess = spawn(
    JUPYTER_SERVER_BIN,
    [
      '--no-browser',
      '--allow-root',
      '--ServerApp.ip=127.0.0.1',
      `--ServerApp.port=${port}`,
      '--ServerApp.port_retries=0',
      `--ServerApp.token=${token}`,
      `--ServerApp.root_dir=${notebooks}`,
    ],
    {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, JUPYTER_RUNTIME_DIR: runtimeDir, JUPYTER_CONFIG_DIR: join(root, 'config'), JUPYTER_DATA_DIR: join(root, 'data'), IPYTHONDIR: join(root, 'ipython') },
    },
  );
  const pid = child.pid!;
  const url = `http://127.0.0.1:${port}/`;
  const api = async <T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> => {
    const res = await fetch(`${url}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `token ${token}`, 'content-type': 'application/json' },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
    if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: HTTP ${res.status}`);
    return (res.status === 204 ? undefined : await res.json()) as T;
  };
  const stop = async () => {
    // SIGTERM lets the server shut its kernels down; kernels run in their own sessions.
    const exited = () => child.exitCode !== null || child.signalCode !== null;
    killChildGroup(child, 'SIGTERM');
    await waitFor('jupyter-server to exit', exited, 15_000).catch(() => killChildGroup(child, 'SIGKILL'));
    // Belt and braces: any kernel still running from this test's runtime dir.
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(runtimeDir)) killPid(Number(entry));
      } catch {
        // gone
      }
    }
  };
  try {
    await waitFor('the jupyter runtime file', () => readdirSync(runtimeDir).some((f) => /^jpserver-\d+\.json$/.test(f)), 20_000, 50);
    await waitFor('jupyter /api/status', () => api('api/status').then(() => true, () => false), 20_000, 50);
  } catch (err) {
    await stop();
    throw err;
  }
  const sockets: net.Socket[] = [];
  return {
    url,
    port,
    token,
    runtimeDir,
    pid,
    api,
    async startKernel() {
      const kernel = await api<{ id: string }>('api/kernels', { method: 'POST', body: { name: 'python3' } });
      return kernel.id;
    },
    async execute(kernelId, code) {
      const socket = await openChannels(port, token, kernelId);
      const session = randomUUID();
      const message = {
        header: { msg_id: randomUUID(), username: 'test', session, msg_type: 'execute_request', version: '5.3', date: new Date().toISOString() },
        parent_header: {},
        metadata: {},
        content: { code, silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true },
        channel: 'shell',
        buffers: [],
      };
      socket.write(textFrame(JSON.stringify(message)));
      sockets.push(socket);
      return { close: () => socket.destroy() };
    },
    async connect(kernelId) {
      const socket = await openChannels(port, token, kernelId);
      sockets.push(socket);
      return { close: () => socket.destroy() };
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await stop();
    },
  };
}
