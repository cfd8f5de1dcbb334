import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FleetStore } from './store/store.js';
import { hashSecret, newSecret } from './secrets.js';
import { ADMIN_OWNER } from './http/auth.js';

/**
 * First start without DUMONT_ADMIN_KEY: create one admin key so the quickstart works, print it once
 * and leave it in `<data dir>/admin-key` (0600). Later starts find an admin key and do nothing.
 */
export async function ensureAdminKey(store: FleetStore, dataDir: string, now: number): Promise<{ key: string; file: string } | null> {
  if ((await store.countAdminKeys()) > 0) return null;
  const key = await createApiKey(store, ADMIN_OWNER, true, now, 'created on first start');
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'admin-key');
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { key, file };
}

export async function createApiKey(store: FleetStore, owner: string, admin: boolean, now: number, label: string | null = null): Promise<string> {
  const key = newSecret('dmk');
  await store.transaction(async (repo) => {
    await repo.insertApiKey({ key_hash: hashSecret(key), owner, is_admin: admin ? 1 : 0, label, created_at: now });
    await repo.requireDurableCommit();
  });
  return key;
}
