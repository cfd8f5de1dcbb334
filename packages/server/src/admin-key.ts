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
  const key = newSecret('dmk');
  await store.insertApiKey({ key_hash: hashSecret(key), owner: ADMIN_OWNER, is_admin: 1, label: 'created on first start', created_at: now });
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'admin-key');
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { key, file };
}

export async function createApiKey(store: FleetStore, owner: string, admin: boolean, now: number, label: string | null = null): Promise<string> {
  const key = newSecret('dmk');
  await store.insertApiKey({ key_hash: hashSecret(key), owner, is_admin: admin ? 1 : 0, label, created_at: now });
  await store.syncDurable();
  return key;
}
