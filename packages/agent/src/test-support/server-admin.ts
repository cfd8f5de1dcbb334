import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServerProcess } from '../../../server/src/test-support/server-process.js';

/** The server's admin API as an operator calls it, with the server's admin key; non-2xx throws. */
export async function admin<T = any>(server: ServerProcess, method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${server.adminKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Registers an instance and writes its agent token to `dir`/token (0600), as install expects it; returns that file. */
export async function registerInstance(server: ServerProcess, instanceId: number, dir: string): Promise<string> {
  const { agent_token } = await admin<{ agent_token: string }>(server, 'POST', '/api/v1/agent/instances', { instance_id: instanceId, hostname: 'e2e-host' });
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${agent_token}\n`);
  chmodSync(tokenFile, 0o600);
  return tokenFile;
}

/**
 * A server whose whole lifecycle runs in seconds: idle 1.2 s, a 1 s warning, beats every 0.3 s, the
 * sweeper every 50 ms. Tests spread it and change what they are about.
 */
export const FAST_LIFECYCLE_ENV: Readonly<Record<string, string>> = {
  DUMONT_IDLE_THRESHOLD_MINUTES: '0.02',
  DUMONT_HIBERNATION_WARNING_SECONDS: '1',
  DUMONT_HEARTBEAT_INTERVAL_SECONDS: '0.3',
  DUMONT_OFFLINE_AFTER_SECONDS: '10',
  DUMONT_SWEEP_INTERVAL_MS: '50',
};
