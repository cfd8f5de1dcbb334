import { KyselyRepository } from '../store/kysely-repository.js';
import type { FleetRepository } from '../store/store.js';

/**
 * The stored rows behind a store, for tests: to seed instances in any state and to check what was
 * written where. Services never see rows (the store speaks the domain).
 */
export function rowsOf(store: FleetRepository): KyselyRepository {
  if (!(store instanceof KyselyRepository)) throw new Error('this store does not keep its rows through Kysely');
  return store;
}
