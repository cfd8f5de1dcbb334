import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testRunnerConfig } from '../test-support/runner-config.js';
import { updateBinary } from './binary-update.js';
import { executeCommand, RESTART_EXIT_CODE } from './runner.js';

/**
 * The single executable's self-update against a real HTTP server on loopback, with real executables
 * (small shell scripts standing in for the ~100 MB binary): the new file replaces the running one only
 * when its checksum matches and it runs; otherwise the old one stays, byte for byte.
 */

const script = (version: string) => `#!/bin/sh\necho "dumont-agent ${version}"\n`;
const sha = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');

describe('binary self-update', () => {
  let dir: string;
  let server: Server;
  let url: string;
  /** What the server serves now; `sha` may lie to simulate a corrupted download. */
  let served: { body: Buffer; sha: string; gzip: boolean; status?: number };
  const requests: string[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dumont-binary-update-'));
    requests.length = 0;
    server = createServer((req, res) => {
      requests.push(`${req.url} ${req.headers['accept-encoding'] ?? ''}`);
      if (served.status) return res.writeHead(served.status).end('nope');
      if (req.url === '/agent/dumont-agent-linux-x64.sha256') return res.end(`${served.sha}  dumont-agent-linux-x64\n`);
      if (req.url === '/agent/dumont-agent-linux-x64') {
        if (served.gzip) return res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(served.body));
        return res.end(served.body);
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  const installed = (version: string) => {
    const path = join(dir, 'dumont-agent');
    writeFileSync(path, script(version));
    chmodSync(path, 0o755);
    return path;
  };
  const update = (executable: string, expectedVersion: string | null = null) =>
    updateBinary({ apiUrl: `${url}/`, executable, arch: 'x64', timeoutMs: 10_000, expectedVersion });

  it('replaces the running file with the server binary once it is verified and runs; compressed on the wire', async () => {
    const exe = installed('0.1.0');
    const next = Buffer.from(script('0.2.0'));
    served = { body: next, sha: sha(next), gzip: true };
    const outcome = await update(exe, '0.2.0');
    expect(outcome).toEqual({ kind: 'installed', sha256: sha(next), version: 'dumont-agent 0.2.0' });
    expect(readFileSync(exe)).toEqual(next);
    expect(requests).toContain('/agent/dumont-agent-linux-x64 gzip');
    // No temporary file is left beside it.
    expect(readdirSync(dir)).toEqual(['dumont-agent']);
    // Asked again, it is current: nothing is downloaded.
    requests.length = 0;
    expect(await update(exe)).toEqual({ kind: 'current', sha256: sha(next) });
    expect(requests).toEqual(['/agent/dumont-agent-linux-x64.sha256 gzip']);
  });

  it('keeps the old binary on a checksum mismatch, a binary that does not run, the wrong version, or a failed download', async () => {
    const exe = installed('0.1.0');
    const old = readFileSync(exe);
    const good = Buffer.from(script('0.2.0'));
    const cases: [typeof served, string | null, RegExp][] = [
      [{ body: good, sha: sha('something else'), gzip: false }, null, /checksum mismatch/],
      [{ body: Buffer.from('#!/bin/sh\nexit 3\n'), sha: sha('#!/bin/sh\nexit 3\n'), gzip: false }, null, /does not run \(exit 3\)/],
      [{ body: good, sha: sha(good), gzip: false }, '0.3.0', /not 0\.3\.0/],
      [{ body: good, sha: sha(good), gzip: false, status: 503 }, null, /could not read .*HTTP 503/],
      [{ body: good, sha: 'not-a-sha', gzip: false }, null, /not a SHA-256 line/],
    ];
    for (const [serve, expected, reason] of cases) {
      served = serve;
      const outcome = await update(exe, expected);
      expect(outcome.kind).toBe('failed');
      expect(outcome.kind === 'failed' && outcome.reason).toMatch(reason);
      expect(readFileSync(exe)).toEqual(old);
      expect(readdirSync(dir)).toEqual(['dumont-agent']);
    }
  });

  it("is what the `update` command does on a single executable: restart on success, the old file on failure", async () => {
    const exe = installed('0.1.0');
    const next = Buffer.from(script('0.2.0'));
    const config = testRunnerConfig(dir, { binary: { apiUrl: url, executable: exe, arch: 'x64' } });
    const cmd = (args: Record<string, unknown>) => ({ id: `c-${Math.random()}`, type: 'update' as const, args, issued_at: new Date().toISOString() });
    served = { body: next, sha: sha('tampered'), gzip: false };
    const refused = await executeCommand(cmd({}), config, new AbortController().signal);
    expect(refused).toMatchObject({ status: 'failed' });
    expect(refused.detail).toMatch(/checksum mismatch.*still running/);
    expect(refused.exitCode).toBeUndefined();
    expect(readFileSync(exe, 'utf8')).toBe(script('0.1.0'));
    served = { body: next, sha: sha(next), gzip: true };
    const done = await executeCommand(cmd({ version: '0.2.0' }), config, new AbortController().signal);
    expect(done).toMatchObject({ status: 'succeeded', exitCode: RESTART_EXIT_CODE });
    expect(readFileSync(exe)).toEqual(next);
  });
});
