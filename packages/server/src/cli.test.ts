import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { SERVER_ENTRY, startServerProcess } from './test-support/server-process.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'dumont-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('dumont-server CLI and first start', () => {
  it('first start without DUMONT_ADMIN_KEY creates an admin key, prints it once, saves it 0600, never logs it', async () => {
    const dataDir = join(dir, 'first');
    const env = { DUMONT_ADMIN_KEY: '' };
    const server = await startServerProcess({ dataDir, env });
    try {
      const file = join(dataDir, 'admin-key');
      const key = readFileSync(file, 'utf8').trim();
      expect(key).toMatch(/^dmk_/);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(server.output()).toContain(key); // printed once for the quickstart…
      const logLines = server.output().split('\n').filter((l) => l.startsWith('{'));
      expect(logLines.some((l) => l.includes(key))).toBe(false); // …but not in the JSON logs
      const res = await fetch(`${server.url}/api/v1/agent/instances`, { headers: { authorization: `Bearer ${key}` } });
      expect(res.status).toBe(200);
    } finally {
      await server.stop();
    }
    // A second start keeps the existing key and prints none.
    const again = await startServerProcess({ dataDir, env });
    await again.stop();
    expect(again.output()).not.toContain('dmk_');
  });

  it('keys create --owner prints a key scoped to that owner; --admin makes an admin key', async () => {
    const dataDir = join(dir, 'keys');
    const env = { ...process.env, DUMONT_DATABASE_URL: `sqlite:${join(dataDir, 'dumont.db')}` };
    const alice = (await run(process.execPath, [SERVER_ENTRY, 'keys', 'create', '--owner', 'alice'], { env })).stdout.trim();
    const root = (await run(process.execPath, [SERVER_ENTRY, 'keys', 'create', '--owner', 'ops', '--admin'], { env })).stdout.trim();
    expect(alice).toMatch(/^dmk_[A-Za-z0-9_-]{40,}$/);
    const server = await startServerProcess({ dataDir });
    try {
      const call = (key: string, path: string, body?: unknown) =>
        fetch(`${server.url}${path}`, {
          method: body ? 'POST' : 'GET',
          headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
          body: body ? JSON.stringify(body) : undefined,
        }).then(async (r) => ({ status: r.status, json: (await r.json()) as any }));
      expect((await call(alice, '/api/v1/agent/instances', { instance_id: 5 })).status).toBe(201);
      expect((await call(server.adminKey, '/api/v1/agent/instances', { instance_id: 6 })).status).toBe(201);
      expect((await call(alice, '/api/v1/agent/instances')).json.count).toBe(1);
      expect((await call(root, '/api/v1/agent/instances')).json.count).toBe(2);
    } finally {
      await server.stop();
    }
    // The database holds only hashes.
    const db = readFileSync(join(dataDir, 'dumont.db'));
    expect(db.includes(alice)).toBe(false);
  });

  it("the package's bin is a committed file (npm links it at install, before a build) that runs the built CLI", async () => {
    // On a fresh clone `npm install` runs before `npm run build`; a bin pointing into dist/ was not
    // linked, and the README's `npx dumont-server keys create` asked the registry instead.
    const packageDir = new URL('../', import.meta.url);
    const bin = JSON.parse(readFileSync(new URL('package.json', packageDir), 'utf8')).bin['dumont-server'] as string;
    expect(bin.startsWith('./dist/')).toBe(false);
    const binPath = new URL(bin, packageDir).pathname;
    expect(statSync(binPath).mode & 0o111).not.toBe(0);
    const env = { ...process.env, DUMONT_DATABASE_URL: `sqlite:${join(dir, 'bin.db')}` };
    expect((await run(binPath, ['keys', 'create', '--owner', 'carol'], { env })).stdout.trim()).toMatch(/^dmk_/);
  });

  it('keys create without --owner is a usage error', async () => {
    await expect(run(process.execPath, [SERVER_ENTRY, 'keys', 'create'], { env: { ...process.env, DUMONT_DATABASE_URL: `sqlite:${join(dir, 'x.db')}` } })).rejects.toMatchObject({ code: 2 });
  });
});
