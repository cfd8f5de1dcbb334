import { resolve } from 'node:path';
import type { Durability, FleetStore } from './store.js';

/**
 * The only place that picks an engine from `DUMONT_DATABASE_URL`:
 * `sqlite:./data/dumont.db`, `sqlite::memory:`, or `postgres://…` / `postgresql://…`.
 */
export async function openStore(databaseUrl: string, options: { schema?: string; durability?: Durability } = {}): Promise<FleetStore> {
  if (databaseUrl.startsWith('sqlite:')) {
    const path = databaseUrl.slice('sqlite:'.length);
    const { SqliteStore } = await import('./sqlite-store.js');
    return SqliteStore.open(path === ':memory:' ? path : resolve(path), options);
  }
  if (/^postgres(ql)?:\/\//.test(databaseUrl)) {
    const { PostgresStore } = await import('./postgres-store.js');
    return PostgresStore.open(databaseUrl, options);
  }
  throw new Error('DUMONT_DATABASE_URL must start with sqlite: or postgres://');
}
