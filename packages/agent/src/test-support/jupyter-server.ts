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

interface KernelMessage {
  msg_type?: string;
  channel?: string;
  header?: { msg_type?: string };
  parent_header?: { msg_id?: string };
  content?: { execution_state?: string };
}

/** Reads the server's (unmasked) websocket frames from a socket and hands over each JSON message. */
function readMessages(socket: net.Socket, onMessage: (message: KernelMessage) => void): void {
  let buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      if (buffer.length < 2) return;
      const opcode = buffer[0]! & 0x0f;
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) return;
        length = Number(buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (buffer.length < offset + length) return;
      const payload = buffer.subarray(offset, offset + length);
      buffer = buffer.subarray(offset + length);
      if (opcode !== 1) continue; // pings and the like
      try {
        onMessage(JSON.parse(payload.toString('utf8')) as KernelMessage);
      } catch {
        // not JSON: not a kernel message
      }
    }
  });
}

function kernelMessage(msgType: string, content: Record<string, unknown>) {
  return {
    header: { msg_id: randomUUID(), username: 'test', session: randomUUID(), msg_type: msgType, version: '5.3', date: new Date().toISOString() },
    parent_header: {},
    metadata: {},
    content,
    channel: 'shell',
    buffers: [],
  };
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
      const rest = Buffer.from(head.slice(head.indexOf('\r\n\r\n') + 4), 'latin1');
      if (rest.length > 0) socket.unshift(rest);
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
      stdio: process.env.DUMONT_DEBUG_JUPYTER ? ['ignore', 'inherit', 'inherit'] : 'ignore',
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
      sockets.push(socket);
      const seen: KernelMessage[] = [];
      readMessages(socket, (m) => seen.push(m));
      const awaitMessage = (what: string, match: (m: KernelMessage) => boolean, resend: () => void, timeoutMs: number) =>
        waitFor(what, () => {
          if (seen.some(match)) return true;
          resend();
          return false;
        }, timeoutMs, 100);
      // A kernel still starting drops requests: ask for kernel_info until it answers (what a
      // notebook front end does), then run the code and wait until the kernel says it is busy with it.
      let lastAsk = 0;
      await awaitMessage('kernel_info_reply', (m) => (m.msg_type ?? m.header?.msg_type) === 'kernel_info_reply', () => {
        if (Date.now() - lastAsk < 2000) return;
        lastAsk = Date.now();
        socket.write(textFrame(JSON.stringify(kernelMessage('kernel_info_request', {}))));
      }, 60_000);
      const run = kernelMessage('execute_request', { code, silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true });
      socket.write(textFrame(JSON.stringify(run)));
      await awaitMessage('the kernel busy with the code', (m) => m.parent_header?.msg_id === run.header.msg_id && m.content?.execution_state === 'busy', () => {}, 30_000);
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
