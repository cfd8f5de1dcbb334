#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { assertLoopback } from './api-client.js';
import { parseMix } from './profiles.js';
import { runSimulation, type SimulationOptions } from './simulation.js';
import { formatSummary } from './summary.js';
import { readTokensFile, writeTokensFile } from './tokens-file.js';

const USAGE = `usage: dumont-simulate [options]

  --api-url URL            server to load (loopback only)            [http://127.0.0.1:8080]
  --admin-key KEY          registers the agents (or DUMONT_ADMIN_KEY)
  --agents N               simulated agents, each its own instance   [1000]
  --duration S             seconds of beating after registration     [60]
  --seed N                 repeat a run exactly (printed when random)
  --concurrency N          requests in flight at once                [64]
  --first-instance-id N    instance ids are N, N+1, …                [1000000]
  --mix busy=35,idle=20,…  profile weights: busy idle bursty diurnal goes-offline flaky
  --day-seconds S          length of the diurnal profile's day       [600]
  --jitter F               wait = next_heartbeat_in × (1 ± F)        [0.1]
  --ramp S                 spread the first beats over S seconds     [min(10, duration/4)]
  --beats-per-agent N      each agent stops after N beats
  --wake-after S           hibernated agents come back after S seconds (default: they stay down)
  --register-only          register, write --tokens-out, and exit
  --tokens-out FILE        write instance ids and agent tokens (JSON lines, mode 0600)
  --tokens-in FILE         reuse agents registered earlier instead of registering
  --json                   print the summary as JSON
  --quiet                  no progress lines
  -h, --help`;

const LIMITS = { agents: 1_000_000, duration: 86_400, concurrency: 4096 };

function numberOption(values: Record<string, unknown>, name: string, fallback: number, check: (n: number) => boolean, rule: string): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || !check(n)) throw new Error(`--${name} ${String(raw)}: must be ${rule}`);
  return n;
}

const whole = (min: number, max: number) => (n: number) => Number.isInteger(n) && n >= min && n <= max;

/** Parses argv into simulation options; throws with a message for the user on bad input. */
export function parseCli(argv: string[], env: Record<string, string | undefined> = process.env) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      'api-url': { type: 'string' },
      'admin-key': { type: 'string' },
      agents: { type: 'string' },
      duration: { type: 'string' },
      seed: { type: 'string' },
      concurrency: { type: 'string' },
      'first-instance-id': { type: 'string' },
      mix: { type: 'string' },
      'day-seconds': { type: 'string' },
      jitter: { type: 'string' },
      ramp: { type: 'string' },
      'beats-per-agent': { type: 'string' },
      'wake-after': { type: 'string' },
      'register-only': { type: 'boolean', default: false },
      'tokens-out': { type: 'string' },
      'tokens-in': { type: 'string' },
      json: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const v = values as Record<string, unknown>;
  const options: SimulationOptions = {
    apiUrl: values['api-url'] ?? env.DUMONT_API_URL ?? 'http://127.0.0.1:8080',
    agents: numberOption(v, 'agents', 1000, whole(1, LIMITS.agents), `a whole number in [1, ${LIMITS.agents}]`),
    durationSeconds: numberOption(v, 'duration', 60, (n) => n > 0 && n <= LIMITS.duration, `in (0, ${LIMITS.duration}] seconds`),
    seed: numberOption(v, 'seed', randomInt(0, 2 ** 31), whole(0, 2 ** 32 - 1), 'a whole number in [0, 2^32)'),
    concurrency: numberOption(v, 'concurrency', 64, whole(1, LIMITS.concurrency), `a whole number in [1, ${LIMITS.concurrency}]`),
    firstInstanceId: numberOption(v, 'first-instance-id', 1_000_000, whole(1, Number.MAX_SAFE_INTEGER - LIMITS.agents), 'a whole number ≥ 1'),
    daySeconds: numberOption(v, 'day-seconds', 600, (n) => n > 0, 'a positive number of seconds'),
    jitter: numberOption(v, 'jitter', 0.1, (n) => n >= 0 && n < 1, 'in [0, 1)'),
    registerOnly: values['register-only'] ?? false,
  };
  assertLoopback(options.apiUrl);
  const adminKey = values['admin-key'] ?? env.DUMONT_ADMIN_KEY;
  if (adminKey) options.adminKey = adminKey;
  if (values.mix !== undefined) options.mix = parseMix(values.mix);
  if (values.ramp !== undefined) options.rampSeconds = numberOption(v, 'ramp', 0, (n) => n >= 0, 'a number of seconds ≥ 0');
  if (values['beats-per-agent'] !== undefined) {
    options.beatsPerAgent = numberOption(v, 'beats-per-agent', 0, whole(1, Number.MAX_SAFE_INTEGER), 'a whole number ≥ 1');
  }
  if (values['wake-after'] !== undefined) options.wakeAfterSeconds = numberOption(v, 'wake-after', 0, (n) => n > 0, 'a positive number of seconds');
  if (values['tokens-in'] !== undefined) options.tokens = readTokensFile(values['tokens-in']);
  if (options.registerOnly && values['tokens-out'] === undefined) throw new Error('--register-only needs --tokens-out FILE');
  if (!options.adminKey && !options.tokens) throw new Error('give --admin-key (or DUMONT_ADMIN_KEY) to register agents, or --tokens-in');
  return {
    options,
    help: values.help ?? false,
    json: values.json ?? false,
    quiet: values.quiet ?? false,
    tokensOut: values['tokens-out'],
  };
}

/** `dumont-simulate`; returns the exit code (1 when nothing got through to the server). */
export async function runCli(argv: string[], out = process.stdout, err = process.stderr): Promise<number> {
  let parsed;
  try {
    if (argv.includes('-h') || argv.includes('--help')) {
      out.write(`${USAGE}\n`);
      return 0;
    }
    parsed = parseCli(argv);
  } catch (error) {
    err.write(`dumont-simulate: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { options } = parsed;
  const log = parsed.quiet ? undefined : (line: string) => err.write(`${line}\n`);
  log?.(`dumont-simulate: seed ${options.seed}, ${options.agents} agents against ${options.apiUrl}`);
  try {
    const result = await runSimulation(log ? { ...options, log } : options);
    if (parsed.tokensOut) {
      writeTokensFile(parsed.tokensOut, result.tokens);
      log?.(`wrote ${result.tokens.length} agent tokens to ${parsed.tokensOut}`);
    }
    out.write(parsed.json ? `${JSON.stringify(result.summary, null, 2)}\n` : `${formatSummary(result.summary)}\n`);
    const { registration, beats } = result.summary;
    const nothingRegistered = registration !== null && registration.registered === 0 && registration.requested > 0;
    const nothingAnswered = !options.registerOnly && beats.sent > 0 && beats.ok === 0;
    return nothingRegistered || nothingAnswered ? 1 : 0;
  } catch (error) {
    err.write(`dumont-simulate: ${(error as Error).message}\n`);
    return 1;
  }
}

function invokedDirectly(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  process.exitCode = await runCli(process.argv.slice(2));
}
