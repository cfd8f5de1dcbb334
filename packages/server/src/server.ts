import type { FastifyInstance } from 'fastify';
import { ensureAdminKey } from './admin-key.js';
import { systemClock, type Clock } from './clock.js';
import type { ServerConfig } from './config.js';
import { MassSilenceGuard } from './fleet/mass-silence.js';
import { Sweeper } from './fleet/sweeper.js';
import { buildApp } from './http/app.js';
import { openStore } from './store/open-store.js';
import type { FleetStore } from './store/store.js';
import type { HibernationProvider } from './fleet/heartbeat-service.js';

export interface RunningServer {
  app: FastifyInstance;
  store: FleetStore;
  sweeper: Sweeper;
  url: string;
  close(): Promise<void>;
}

/** Opens the store, migrates, makes sure an admin key exists, serves, and sweeps. */
export async function startServer(
  config: ServerConfig,
  options: {
    clock?: Clock;
    logger?: boolean;
    store?: FleetStore;
    sweep?: boolean;
    announce?: (line: string) => void;
    provider?: HibernationProvider;
  } = {},
): Promise<RunningServer> {
  const clock = options.clock ?? systemClock;
  const store = options.store ?? (await openStore(config.databaseUrl, { durability: config.fsync === 'always' ? 'always' : 'transitions' }));
  if (!config.adminKey) {
    const created = await ensureAdminKey(store, config.dataDir, clock.now());
    if (created) {
      // Printed, not logged: a secret never goes into the structured logs.
      (options.announce ?? ((line) => process.stderr.write(`${line}\n`)))(
        `dumont: created an admin API key (also saved to ${created.file}):\n\n    ${created.key}\n`,
      );
    }
  }
  let log: FastifyInstance['log'] | null = null;
  const massSilence = new MassSilenceGuard(config, (level, message, data) => log?.[level](data, message));
  const app = await buildApp({ store, clock, config, massSilence, logger: options.logger ?? true, ...(options.provider ? { provider: options.provider } : {}) });
  log = app.log;
  const sweeper = new Sweeper(store, clock, config, (error) => app.log.error({ err: error }, 'sweep failed'), massSilence);
  const address = await app.listen({ host: config.host, port: config.port });
  if (options.sweep ?? true) sweeper.start();
  return {
    app,
    store,
    sweeper,
    url: address,
    async close() {
      await sweeper.stop();
      await app.close();
      await store.close();
    },
  };
}
