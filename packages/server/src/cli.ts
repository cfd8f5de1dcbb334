import { parseArgs } from 'node:util';
import { createApiKey } from './admin-key.js';
import { loadConfig } from './config.js';
import { startServer } from './server.js';
import { openStore } from './store/open-store.js';

const USAGE = `usage:
  dumont-server [serve]                          run the server (configured by DUMONT_* environment variables)
  dumont-server keys create --owner NAME [--admin] [--label TEXT]
                                                 print a new API key for NAME (stored hashed)`;

/** `dumont-server`: serve (default) or manage API keys. Returns the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  try {
    if (command === 'serve') return await serve();
    if (command === 'keys') return await keys(rest);
    if (command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    process.stderr.write(`dumont-server: unknown command ${command}\n${USAGE}\n`);
    return 2;
  } catch (error) {
    process.stderr.write(`dumont-server: ${(error as Error).message}\n`);
    return 1;
  }
}

async function serve(): Promise<number> {
  const config = loadConfig();
  const server = await startServer(config);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  server.app.log.info('shutting down');
  await server.close();
  return 0;
}

async function keys(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { owner: { type: 'string' }, admin: { type: 'boolean', default: false }, label: { type: 'string' } },
  });
  if (positionals[0] !== 'create' || !values.owner) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (!/^[A-Za-z0-9._@-]{1,128}$/.test(values.owner)) {
    process.stderr.write('dumont-server: --owner must be 1-128 letters, digits or ._@-\n');
    return 2;
  }
  const config = loadConfig();
  const store = await openStore(config.databaseUrl);
  try {
    const key = await createApiKey(store, values.owner, values.admin ?? false, Date.now(), values.label ?? null);
    process.stdout.write(`${key}\n`);
    return 0;
  } finally {
    await store.close();
  }
}
