import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { startServer, type RunningServer } from '../server.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { acceptsGzip } from './agent-download-routes.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-agent-binary-'));
/** Empty when the server starts: it must start without any binary built. */
const distDir = join(tmp, 'dist');
mkdirSync(distDir);
const X64 = join(distDir, 'dumont-agent-linux-x64');

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** A stand-in for the executable: compressible like a real one (text and code), with a random part. */
function standIn(size: number, seed = randomBytes(16).toString('hex')): Buffer {
  const text = Buffer.from(`${seed} dumont-agent stand-in ${'abcdefgh'.repeat(16)}\n`);
  const bytes = Buffer.alloc(size);
  for (let at = 0; at < size; at += text.length) text.copy(bytes, at);
  randomBytes(Math.min(4096, size)).copy(bytes, 0);
  return bytes;
}

/** What `npm run build:agent-binary` leaves: the binary, its sha256sum line, and (optionally) a gzip copy. */
function build(path: string, bytes: Buffer, options: { gz?: boolean } = {}): void {
  writeFileSync(path, bytes);
  writeFileSync(`${path}.sha256`, `${sha256(bytes)}  ${path.split('/').pop()}\n`);
  if (options.gz ?? true) writeFileSync(`${path}.gz`, gzipSync(bytes));
  else rmSync(`${path}.gz`, { force: true });
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** node:http, not fetch: fetch decodes gzip itself, and the test must see the bytes as sent. */
function get(path: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${path}`, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

let server: RunningServer;

beforeAll(async () => {
  // Rate limited at 1 a minute: the downloads must not be (a fleet being provisioned fetches them at once).
  const config = loadConfig({ DUMONT_PORT: '0', DUMONT_ADMIN_KEY: 'dmk_test_agent_binary', DUMONT_LOG_LEVEL: 'warn', DUMONT_RATE_LIMIT_PER_MINUTE: '1' });
  server = await startServer(config, { store: await SqliteStore.open(':memory:'), logger: false, sweep: false, agentDistDir: distDir });
});

afterAll(async () => {
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('GET /agent/dumont-agent-linux-<arch>', () => {
  it('answers 404 naming `npm run build:agent-binary` while the binary is not built; an unknown arch is an unknown route', async () => {
    for (const arch of ['x64', 'arm64']) {
      for (const path of [`/agent/dumont-agent-linux-${arch}`, `/agent/dumont-agent-linux-${arch}.sha256`]) {
        const res = await get(path);
        expect(res.status, path).toBe(404);
        expect(JSON.parse(res.body.toString())).toEqual({
          error: 'not_found',
          message: `the agent binary for linux-${arch} has not been built on this server: run \`npm run build:agent-binary\` (it writes packages/agent/dist/dumont-agent-linux-${arch})`,
        });
      }
    }
    const unknown = await get('/agent/dumont-agent-linux-riscv64');
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body.toString())).toEqual({ error: 'not_found', message: 'no route GET /agent/dumont-agent-linux-riscv64' });
  });

  it('sends the raw binary byte for byte, its SHA-256 in a header and in sha256sum format, without rate limiting', async () => {
    const bytes = standIn(300_000);
    build(X64, bytes);
    for (let i = 0; i < 3; i++) {
      const res = await get('/agent/dumont-agent-linux-x64');
      expect(res.status).toBe(200);
      expect(res.body.equals(bytes)).toBe(true);
      expect(res.headers['content-type']).toBe('application/octet-stream');
      expect(res.headers['content-length']).toBe(String(bytes.length));
      expect(res.headers['content-encoding']).toBeUndefined();
      expect(res.headers['content-disposition']).toBe('attachment; filename="dumont-agent-linux-x64"');
      expect(res.headers.vary).toBe('accept-encoding');
      expect(res.headers['x-content-sha256']).toBe(sha256(res.body));
      const line = await get('/agent/dumont-agent-linux-x64.sha256');
      expect(line.status).toBe(200);
      expect(line.body.toString()).toBe(`${sha256(res.body)}  dumont-agent-linux-x64\n`);
    }
    // The limit is real: a limited route from the same address is refused by now.
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await get('/api/v1/instances')).status);
    expect(statuses).toContain(429);
    // Each arch is its own file.
    expect((await get('/agent/dumont-agent-linux-arm64')).status).toBe(404);
  });

  it('sends the .gz with content-encoding gzip when the client takes gzip, the raw file when it refuses it', async () => {
    const bytes = standIn(1_000_000);
    build(X64, bytes);
    const gz = readFileSync(`${X64}.gz`);
    for (const acceptEncoding of ['gzip', 'gzip, deflate, br', 'br;q=1.0, GZIP;q=0.5', '*', 'x-gzip']) {
      const res = await get('/agent/dumont-agent-linux-x64', { 'accept-encoding': acceptEncoding });
      expect(res.headers['content-encoding'], acceptEncoding).toBe('gzip');
      expect(res.headers['content-length']).toBe(String(gz.length));
      expect(res.headers.vary).toBe('accept-encoding');
      expect(res.body.length).toBeLessThan(bytes.length / 10);
      expect(gunzipSync(res.body).equals(bytes)).toBe(true);
      // The checksum is the binary's, which is what a client has after decoding.
      expect(res.headers['x-content-sha256']).toBe(sha256(bytes));
    }
    for (const acceptEncoding of ['gzip;q=0', 'gzip; q=0.000', 'deflate, br', 'identity', '*;q=0', 'gzip;q=0, *', 'gzip;q=banana']) {
      const res = await get('/agent/dumont-agent-linux-x64', { 'accept-encoding': acceptEncoding });
      expect(res.headers['content-encoding'], acceptEncoding).toBeUndefined();
      expect(res.body.equals(bytes), acceptEncoding).toBe(true);
    }
  });

  it('sends the raw file to a gzip client when there is no .gz', async () => {
    const bytes = standIn(200_000);
    build(X64, bytes, { gz: false });
    const res = await get('/agent/dumont-agent-linux-x64', { 'accept-encoding': 'gzip' });
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.body.equals(bytes)).toBe(true);
  });

  it('serves a rebuild at once: new bytes, new checksum header and .sha256', async () => {
    const first = standIn(100_000);
    build(X64, first);
    expect((await get('/agent/dumont-agent-linux-x64')).body.equals(first)).toBe(true);
    // Same size, written at once: a cache keyed on size and a coarse mtime would miss this.
    const second = standIn(100_000);
    build(X64, second);
    const res = await get('/agent/dumont-agent-linux-x64');
    expect(res.body.equals(second)).toBe(true);
    expect(res.headers['x-content-sha256']).toBe(sha256(second));
    expect((await get('/agent/dumont-agent-linux-x64.sha256')).body.toString()).toBe(`${sha256(second)}  dumont-agent-linux-x64\n`);
    const zipped = await get('/agent/dumont-agent-linux-x64', { 'accept-encoding': 'gzip' });
    expect(gunzipSync(zipped.body).equals(second)).toBe(true);
  });

  it('answers 404 rather than send a binary whose .sha256 is missing or not a sha256sum line', async () => {
    build(X64, standIn(10_000));
    for (const broken of [null, 'not a checksum\n']) {
      if (broken === null) unlinkSync(`${X64}.sha256`);
      else writeFileSync(`${X64}.sha256`, broken);
      for (const path of ['/agent/dumont-agent-linux-x64', '/agent/dumont-agent-linux-x64.sha256']) {
        const res = await get(path);
        expect(res.status, path).toBe(404);
        expect(JSON.parse(res.body.toString())).toMatchObject({ error: 'not_found', message: expect.stringContaining('dumont-agent-linux-x64.sha256') });
      }
    }
  });

  it('answers HEAD with the headers and no body', async () => {
    const bytes = standIn(2_000_000);
    build(X64, bytes);
    // A raw socket: an HTTP client would drop a body it did not expect, hiding one sent by mistake.
    const head = (acceptEncoding: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
        socket.on('error', reject);
        socket.write(`HEAD /agent/dumont-agent-linux-x64 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: ${acceptEncoding}\r\nConnection: close\r\n\r\n`);
      });
    const raw = await head('identity');
    expect(raw).toMatch(/^HTTP\/1\.1 200 /);
    expect(raw.toLowerCase()).toContain(`\r\ncontent-length: ${bytes.length}\r\n`);
    expect(raw.toLowerCase()).toContain(`\r\nx-content-sha256: ${sha256(bytes)}\r\n`);
    expect(raw.endsWith('\r\n\r\n')).toBe(true);
    const zipped = await head('gzip');
    expect(zipped.toLowerCase()).toContain(`\r\ncontent-length: ${statSync(`${X64}.gz`).size}\r\n`);
    expect(zipped.toLowerCase()).toContain('\r\ncontent-encoding: gzip\r\n');
    expect(zipped.endsWith('\r\n\r\n')).toBe(true);
  });

  it('streams the file from disk instead of reading it into memory', async () => {
    const size = 48 * 1024 * 1024;
    const bytes = standIn(size);
    build(X64, bytes, { gz: false });
    const before = process.memoryUsage().arrayBuffers;
    // The client reads nothing until the headers are in: a server that read the file whole holds it all now.
    const { grown, body } = await new Promise<{ grown: number; body: Buffer }>((resolve, reject) => {
      const req = request(`${server.url}/agent/dumont-agent-linux-x64`, (res) => {
        const grown = process.memoryUsage().arrayBuffers - before;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ grown, body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(grown).toBeLessThan(size / 4);
    expect(body.length).toBe(size);
    expect(sha256(body)).toBe(sha256(bytes));
  });

  it('gives the real `curl --compressed -o` (what the installer runs) the binary byte for byte', async () => {
    const bytes = standIn(5 * 1024 * 1024);
    build(X64, bytes);
    const out = join(tmp, 'downloaded');
    const { stdout } = await promisify(execFile)('curl', ['-fsS', '--compressed', '-o', out, '-w', '%{size_download}', `${server.url}/agent/dumont-agent-linux-x64`]);
    expect(readFileSync(out).equals(bytes)).toBe(true);
    // It went over the wire gzipped.
    expect(Number(stdout)).toBe(statSync(`${X64}.gz`).size);
    expect(Number(stdout)).toBeLessThan(bytes.length / 10);
  });
});

describe('acceptsGzip', () => {
  it('reads weights and wildcards as RFC 9110 does', () => {
    const cases: [string | string[] | undefined, boolean][] = [
      [undefined, false],
      ['', false],
      ['gzip', true],
      ['Gzip ; Q=0.001', true],
      ['gzip;q=0', false],
      ['gzip;q=0.0', false],
      ['gzip;q=1.000', true],
      ['gzip;q=1.5', false],
      ['deflate;q=0.5, *;q=0.1', true],
      ['*;q=0, gzip', true],
      ['gzip;q=0, *', false],
      [['deflate', 'gzip'], true],
    ];
    for (const [header, expected] of cases) expect(acceptsGzip(header), JSON.stringify(header)).toBe(expected);
  });
});
