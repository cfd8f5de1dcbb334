import type { FastifyInstance } from 'fastify';
import { ensureAdminKey } from './admin-key.js';
import { systemClock, type Clock } from './clock.js';
import type { ServerConfig } from './config.js';
import { MassSilenceGuard } from './fleet/mass-silence.js';
import { HistoryRecorder } from './fleet/history-recorder.js';
import { HistoryStore } from './store/history.js';
import { Sweeper } from './fleet/sweeper.js';
import { buildApp } from './http/app.js';
import { openStore } from './store/open-store.js';
import type { FleetStore } from './store/store.js';
import { OutboxWorker } from './fleet/outbox-worker.js';
import { PolicyBook } from './fleet/policy-book.js';
import { SignalBoard } from './fleet/signal-board.js';
import { Notifier } from './notify/notifier.js';
import { Providers } from './providers/registry.js';
import { parseWebhookSecret } from './providers/standard-webhooks.js';

export interface RunningServer {
  app: FastifyInstance;
  store: FleetStore;
  sweeper: Sweeper;
  outbox: OutboxWorker;
  /** Batches every beat's metrics into the history; tests call `flush()` and `maintain()` themselves. */
  history: HistoryRecorder;
  /** External activity signals; tests call `pollDue()` themselves when they drive the clock. */
  signals: SignalBoard;
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
    /** false: the outbox worker does not poll (tests drain it themselves). Default: as `sweep`. */
    outbox?: boolean;
    /** The outbox's retry jitter (tests make it predictable). */
    random?: () => number;
    /** The built dashboard's folder (default: @dumont/dashboard's dist). */
    dashboardDir?: string;
    /** The agent's build outputs' folder (default: @dumont/agent's dist). */
    agentDistDir?: string;
  } = {},
): Promise<RunningServer> {
  const clock = options.clock ?? systemClock;
  // Misconfigured providers or notifications stop the start-up, before anything is opened.
  const providers = Providers.fromConfig(config);
  const notifySecret = config.notifySecret === undefined ? null : parseWebhookSecret(config.notifySecret, 'DUMONT_NOTIFY_SECRET');
  const notifierFor = (publicUrl: string) =>
    config.notifyUrl ? new Notifier({ url: config.notifyUrl, secret: notifySecret, format: config.notifyFormat, publicUrl }) : null;
  notifierFor(config.publicUrl); // built once now: a malformed URL stops the start-up
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
  const history = new HistoryRecorder(new HistoryStore(store.kysely, store.dialect), clock, config, {
    minSampleIntervalMs: (config.heartbeatIntervalSeconds * 1000) / 2,
    onError: (error, what) => log?.error({ err: error }, `metrics history ${what} failed`),
  });
  const policies = new PolicyBook(store, clock, (error) => log?.error({ err: error }, 'reading the policies failed'));
  // Before the first beat: an instance must never be judged by the defaults while its policy is unread.
  await policies.load();
  const signals = new SignalBoard(clock);
  const app = await buildApp({ store, clock, config, massSilence, providers, policies, signals, ...(config.historyEnabled ? { history } : {}), logger: options.logger ?? true, ...(options.dashboardDir ? { dashboardDir: options.dashboardDir } : {}), ...(options.agentDistDir ? { agentDistDir: options.agentDistDir } : {}) });
  log = app.log;
  const sweeper = new Sweeper(store, clock, config, policies, (error) => app.log.error({ err: error }, 'sweep failed'), massSilence);
  const address = await app.listen({ host: config.host, port: config.port });
  // Notifications name this server in the keep-alive command they suggest: its real address by default.
  const notifier = notifierFor(config.publicUrlSet ? config.publicUrl : address);
  const outbox = new OutboxWorker(store, clock, config, policies, providers, notifier, (level, message, data) => app.log[level](data, message), options.random);
  if (options.sweep ?? true) sweeper.start();
  // With the sweeper: tests that drive the clock by hand flush and maintain the history themselves.
  if ((options.sweep ?? true) && config.historyEnabled) history.start();
  if (options.outbox ?? options.sweep ?? true) outbox.start();
  if (options.sweep ?? true) signals.start();
  return {
    app,
    store,
    sweeper,
    outbox,
    history,
    url: address,
    signals,
    async close() {
      await signals.stop();
      await sweeper.stop();
      await outbox.stop();
      await app.close();
      // After the last beat was answered, before the store closes: the batch is written.
      await history.stop();
      await store.close();
    },
  };
}
