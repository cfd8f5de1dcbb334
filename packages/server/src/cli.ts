import { parseArgs } from 'node:util';
import { DumontError, type ReplayResponse } from '@dumont/protocol';
import { createApiKey } from './admin-key.js';
import { systemClock } from './clock.js';
import { loadConfig } from './config.js';
import type { Operator } from './fleet/principal.js';
import { ReplayService } from './fleet/replay-service.js';
import { ADMIN_OWNER } from './http/auth.js';
import { instanceIdList, numberList, timeOf } from './http/replay-routes.js';
import { HistoryStore } from './store/history.js';
import { startServer } from './server.js';
import { openStore } from './store/open-store.js';

const USAGE = `usage:
  dumont-server [serve]                          run the server (configured by DUMONT_* environment variables)
  dumont-server keys create --owner NAME [--admin] [--label TEXT]
                                                 print a new API key for NAME (stored hashed)
  dumont-server replay [--threshold-minutes 15[,30…]] [--utilization-percent 5] [--warning-seconds 300]
                       [--regret-minutes 60] [--from ISO] [--to ISO] [--instance ID[,ID…]]… [--owner NAME] [--json]
                                                 replay the hibernation policy over the recorded history
                                                 (default threshold: DUMONT_IDLE_THRESHOLD_MINUTES)`;

/** `dumont-server`: serve (default) or manage API keys. Returns the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  try {
    if (command === 'serve') return await serve();
    if (command === 'keys') return await keys(rest);
    if (command === 'replay') return await replayCommand(rest);
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

function oneNumber(text: string | undefined, flag: string, what: string, valid: (n: number) => boolean): number | undefined {
  if (text === undefined) return undefined;
  const [n, ...more] = numberList(text, flag, what);
  if (more.length > 0 || !valid(n!)) throw new Error(`${flag}: ${what}`);
  return n;
}

/** The replay's flags, read and checked; throws (naming the flag) on bad input. */
function replayArgs(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      'threshold-minutes': { type: 'string' },
      'utilization-percent': { type: 'string' },
      'warning-seconds': { type: 'string' },
      'regret-minutes': { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      instance: { type: 'string', multiple: true },
      owner: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const thresholds = values['threshold-minutes'];
  const instances = values.instance;
  const query = {
    thresholdMinutes:
      thresholds === undefined ? undefined : numberList(thresholds, '--threshold-minutes', 'one or more numbers of minutes > 0'),
    utilizationPercent: oneNumber(values['utilization-percent'], '--utilization-percent', 'a number in (0, 100]', (n) => n > 0 && n <= 100),
    warningSeconds: oneNumber(values['warning-seconds'], '--warning-seconds', 'a number of seconds ≥ 0', () => true),
    regretMinutes: oneNumber(values['regret-minutes'], '--regret-minutes', 'a number of minutes ≥ 0', () => true),
    from: timeOf(values.from, '--from'),
    to: timeOf(values.to, '--to'),
    instanceIds: instances === undefined ? undefined : instanceIdList(instances, '--instance'),
  };
  if (query.thresholdMinutes?.some((t) => t <= 0)) throw new Error('--threshold-minutes: one or more numbers of minutes > 0');
  if (values.owner !== undefined && !/^[A-Za-z0-9._@-]{1,128}$/.test(values.owner)) {
    throw new Error('--owner must be 1-128 letters, digits or ._@-');
  }
  return { query, owner: values.owner, json: values.json ?? false };
}

async function replayCommand(argv: string[]): Promise<number> {
  let args: ReturnType<typeof replayArgs>;
  try {
    args = replayArgs(argv);
  } catch (error) {
    // Every message names its flag (parseArgs names an unknown or malformed one itself).
    process.stderr.write(`dumont-server replay: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { query, owner, json } = args;

  const config = loadConfig();
  const operator: Operator = owner === undefined ? { kind: 'operator', owner: ADMIN_OWNER, admin: true } : { kind: 'operator', owner, admin: false };
  const store = await openStore(config.databaseUrl);
  try {
    const service = new ReplayService(store, new HistoryStore(store.kysely, store.dialect), systemClock, config);
    const response = await service.replay(operator, { ...query, thresholdMinutes: query.thresholdMinutes ?? [config.idleThresholdMinutes] });
    process.stdout.write(json ? `${JSON.stringify(response)}\n` : replayTable(response));
    return 0;
  } catch (error) {
    if (!(error instanceof DumontError)) throw error;
    process.stderr.write(`dumont-server replay: ${error.message}\n`);
    return 1;
  } finally {
    await store.close();
  }
}

/** One row per replayed threshold, then what actually ran, in aligned columns. */
export function replayTable(response: ReplayResponse): string {
  const header = ['threshold (min)', 'hibernations', 'GPU-hours saved', 'USD saved', 'regrets'];
  const rows = [
    ...response.policies.map((p) => [String(p.threshold_minutes), String(p.hibernations), String(p.gpu_hours_saved), p.usd_saved.toFixed(2), String(p.regrets.length)]),
    ['actual', String(response.actual.hibernations), String(response.actual.gpu_hours_saved), response.actual.usd_saved.toFixed(2), String(response.actual.regrets.length)],
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd();
  const rolledUp = response.raw_from > response.from ? [`before ${response.raw_from}: beats rebuilt from 5-minute rollups (each GPU at its maximum)`] : [];
  return [`replay ${response.from} .. ${response.to}`, line(header), ...rows.map(line), ...rolledUp, ''].join('\n');
}
