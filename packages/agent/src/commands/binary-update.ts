import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, rename, rm } from 'node:fs/promises';
import http from 'node:http';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { runBounded } from '../collectors/exec-bounded.js';

/**
 * `update` on an agent installed as a single executable: fetch the server's current binary for this
 * platform, check its SHA-256 against the server's `.sha256`, check that it runs (`--version`), and
 * only then rename it over the running file — one rename in the same directory, so the file on disk
 * is always a whole binary, the old one or the new one. Any failure leaves the old binary in place
 * (and running). The caller then exits for systemd to start the new one.
 */

export interface BinaryUpdateOptions {
  apiUrl: string;
  /** The running binary (process.execPath). */
  executable: string;
  /** `x64` or `arm64`. */
  arch: string;
  timeoutMs: number;
  /** When the server asked for a version, the new binary must report it. */
  expectedVersion?: string | null;
  signal?: AbortSignal;
}

export type BinaryUpdateOutcome =
  | { kind: 'current'; sha256: string }
  | { kind: 'installed'; sha256: string; version: string }
  | { kind: 'failed'; reason: string };

export async function updateBinary(options: BinaryUpdateOptions): Promise<BinaryUpdateOutcome> {
  const name = `dumont-agent-linux-${options.arch}`;
  const base = `${options.apiUrl.replace(/\/+$/, '')}/agent/${name}`;
  const deadline = AbortSignal.any([AbortSignal.timeout(options.timeoutMs), ...(options.signal ? [options.signal] : [])]);
  let expected: string;
  try {
    const line = (await fetchText(`${base}.sha256`, deadline)).trim();
    const hex = line.split(/\s+/)[0] ?? '';
    if (!/^[0-9a-f]{64}$/.test(hex)) return { kind: 'failed', reason: `${name}.sha256 from the server is not a SHA-256 line: ${JSON.stringify(line.slice(0, 100))}` };
    expected = hex;
  } catch (error) {
    return { kind: 'failed', reason: `could not read ${base}.sha256: ${message(error)}` };
  }
  if ((await sha256OfFile(options.executable)) === expected) return { kind: 'current', sha256: expected };

  // Beside the running file, so that the final rename stays within one filesystem.
  const next = join(dirname(options.executable), `.${basename(options.executable)}.new-${process.pid}`);
  try {
    const actual = await download(base, next, deadline);
    if (actual !== expected) return await discard(next, `checksum mismatch for ${name} (expected ${expected}, got ${actual})`);
    await chmod(next, 0o755);
    const run = await runBounded(next, ['--version'], { timeoutMs: 15_000, keep: 'tail', maxOutputBytes: 4096 });
    const printed = run.kind === 'spawn-failed' ? '' : run.stdout.trim();
    if (run.kind !== 'exited' || run.code !== 0) return await discard(next, `the downloaded ${name} does not run (${run.kind === 'exited' ? `exit ${run.code}` : run.kind})`);
    if (options.expectedVersion && !printed.includes(options.expectedVersion)) {
      return await discard(next, `the server's ${name} is ${printed || 'of unknown version'}, not ${options.expectedVersion}`);
    }
    await rename(next, options.executable);
    return { kind: 'installed', sha256: expected, version: printed };
  } catch (error) {
    return discard(next, `download of ${base} failed: ${message(error)}`);
  }
}

async function discard(path: string, reason: string): Promise<BinaryUpdateOutcome> {
  await rm(path, { force: true });
  return { kind: 'failed', reason };
}

const message = (error: unknown) => (error instanceof Error ? error.message : String(error));

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** One GET, on node:http(s) like the heartbeat (no undici in the daemon). */
async function get(url: string, signal: AbortSignal): Promise<http.IncomingMessage> {
  const target = new URL(url);
  const send = target.protocol === 'https:' ? (await import('node:https')).request : http.request;
  return new Promise((resolve, reject) => {
    const req = send(target, { headers: { 'accept-encoding': 'gzip' }, agent: false, signal }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`HTTP ${res.statusCode}`));
        return;
      }
      resolve(res);
    });
    req.on('error', reject);
    req.end();
  });
}

const decoded = (res: http.IncomingMessage) => (res.headers['content-encoding'] === 'gzip' ? res.pipe(createGunzip()) : res);

async function fetchText(url: string, signal: AbortSignal): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of decoded(await get(url, signal))) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').slice(0, 1024);
}

/** Streams the body to `path` (never whole in memory: the binary is ~100 MB) and returns its SHA-256. */
async function download(url: string, path: string, signal: AbortSignal): Promise<string> {
  const res = await get(url, signal);
  const hash = createHash('sha256');
  const body = decoded(res);
  body.on('data', (chunk: Buffer) => hash.update(chunk));
  await pipeline(body, createWriteStream(path, { mode: 0o700 }), { signal });
  return hash.digest('hex');
}
