import { resolve } from 'node:path';
import { MAX_KEEP_ALIVE_MINUTES, MAX_THRESHOLD_MINUTES } from '@dumont/protocol';
import type { PolicySettings } from './policy/hibernation-policy.js';

export interface ServerConfig extends PolicySettings {
  host: string;
  port: number;
  databaseUrl: string;
  /** Where the generated admin key is written (the SQLite file's folder by default). */
  dataDir: string;
  adminKey: string | undefined;
  idleThresholdMinutes: number;
  heartbeatIntervalSeconds: number;
  sweepIntervalMs: number;
  /** Requests per minute per credential; 0 turns the limit off. */
  rateLimitPerMinute: number;
  /**
   * Failed authentications per minute from one client address (an IPv6 /64) before its requests are
   * refused unread; 0 turns it off. Counts failures, not requests, so a fleet behind one NAT is not throttled.
   */
  authFailuresPerMinute: number;
  /** `transitions`: fsync before answering a request that changed a status, command or event; `always`: every heartbeat too. */
  fsync: 'transitions' | 'always';
  logLevel: string;
  /** A heartbeat `timestamp` further than this ahead of the server clock is refused (400). */
  maxClockSkewSeconds: number;
  /** Share of the watched fleet going silent within one offline window that holds every hibernation. */
  massOfflineRatio: number;
  /** Fewer silent instances than this is never a mass silence (a small fleet losing one machine). */
  massOfflineMinInstances: number;
  /** A mass silence whose machines never come back is released after this long (they are gone). */
  massOfflineHoldMinutes: number;
  /** The provider of instances that name none: `none`, `vast`, `webhook` or `command`. */
  provider: string;
  vastApiUrl: string;
  vastApiKey: string | undefined;
  webhookUrl: string | undefined;
  /** `whsec_<base64>`; checked when the providers are built. */
  webhookSecret: string | undefined;
  /** An executable and its arguments (a JSON array, or words split on spaces); no shell. */
  providerStopCommand: string | undefined;
  providerStartCommand: string | undefined;
  /** One provider call (HTTP request or command) gives up after this long; it is retried. */
  providerTimeoutSeconds: number;
  /** A provider action is retried until this long after it was queued, then fails. */
  providerRetryHours: number;
  /** Every instance in dry-run: `would_hibernate` instead of a hibernation. */
  dryRun: boolean;
  notifyUrl: string | undefined;
  notifySecret: string | undefined;
  notifyFormat: 'standard' | 'slack';
  /** How people reach this server (the keep-alive command in notifications); default from host and port. */
  publicUrl: string;
  /** DUMONT_PUBLIC_URL was given (otherwise the listening address is used once known). */
  publicUrlSet: boolean;
  /** How often each process looks for due outbox rows. */
  outboxPollMs: number;
  /** A bearer token that may read `/metrics` (besides admin keys); compared in constant time. */
  metricsToken: string | undefined;
  /** `DUMONT_HISTORY=off` keeps no metrics history (the benchmark's baseline); on by default. */
  historyEnabled: boolean;
  /** Raw per-GPU samples are kept this long (then only their 5-minute rollups). */
  historyRawHours: number;
  /** 5-minute rollups are kept this long; also the longest range one metrics query may span. */
  historyDays: number;
  /** A dashboard login lasts this long (then the key is asked for again). */
  sessionHours: number;
  /** The longest idle threshold an owner may set (admins may set more); see fleet/admin-limits.ts. */
  maxThresholdMinutes: number;
  /** The longest keep-alive an owner may ask in one request. */
  maxKeepAliveMinutes: number;
  /** Keep-alive minutes owners may grant one instance per rolling 24 h; null = unlimited. */
  keepAliveBudgetMinutes: number | null;
  /** Whether an owner may turn hibernation off (`enabled: false`) or put an instance in dry-run. */
  ownerMayDisable: boolean;
}

type Env = Record<string, string | undefined>;

function number(env: Env, name: string, fallback: number, check: (n: number) => boolean, rule: string): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || !check(value)) throw new Error(`${name}=${raw}: must be ${rule}`);
  return value;
}

function optionalNumber(env: Env, name: string, check: (n: number) => boolean, rule: string): number | null {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return null;
  return number(env, name, 0, check, rule);
}

function url(env: Env, name: string): string | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new Error(`${name}: not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error(`${name}: must be an http or https URL`);
  return raw;
}

function flag(env: Env, name: string): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '' || raw === '0' || raw === 'false' || raw === 'no') return false;
  if (raw === '1' || raw === 'true' || raw === 'yes') return true;
  throw new Error(`${name}=${env[name]}: must be 1 or 0`);
}

function onOff(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if (raw === 'on') return true;
  if (raw === 'off') return false;
  throw new Error(`${name}=${env[name]}: must be on or off`);
}

const positive = (n: number) => n > 0;
const nonNegative = (n: number) => n >= 0;

/** Reads the operator interface (README, docs/OPERATIONS.md) from the environment; throws on bad values. */
export function loadConfig(env: Env = process.env): ServerConfig {
  const databaseUrl = env.DUMONT_DATABASE_URL?.trim() || 'sqlite:./data/dumont.db';
  const sqlitePath = databaseUrl.startsWith('sqlite:') ? databaseUrl.slice('sqlite:'.length) : null;
  const dataDir = resolve(
    env.DUMONT_DATA_DIR?.trim() || (sqlitePath && sqlitePath !== ':memory:' ? resolve(sqlitePath, '..') : './data'),
  );
  const fsync = env.DUMONT_FSYNC?.trim() || 'transitions';
  const notifyFormat = env.DUMONT_NOTIFY_FORMAT?.trim() || 'standard';
  if (notifyFormat !== 'standard' && notifyFormat !== 'slack') throw new Error(`DUMONT_NOTIFY_FORMAT=${notifyFormat}: must be standard or slack`);
  const host = env.DUMONT_HOST?.trim() || '127.0.0.1';
  const port = number(env, 'DUMONT_PORT', 8080, (n) => Number.isInteger(n) && n >= 0 && n < 65536, 'a port number');
  if (fsync !== 'transitions' && fsync !== 'always') throw new Error(`DUMONT_FSYNC=${fsync}: must be transitions or always`);
  return {
    host,
    port,
    databaseUrl,
    dataDir,
    adminKey: env.DUMONT_ADMIN_KEY?.trim() || undefined,
    idleUtilizationPercent: number(env, 'DUMONT_IDLE_UTILIZATION_PERCENT', 5, (n) => n > 0 && n <= 100, 'in (0, 100]'),
    idleThresholdMinutes: number(env, 'DUMONT_IDLE_THRESHOLD_MINUTES', 30, positive, 'a positive number of minutes'),
    hibernationWarningSeconds: number(env, 'DUMONT_HIBERNATION_WARNING_SECONDS', 300, nonNegative, 'a number of seconds ≥ 0'),
    heartbeatIntervalSeconds: number(env, 'DUMONT_HEARTBEAT_INTERVAL_SECONDS', 30, positive, 'a positive number of seconds'),
    offlineAfterSeconds: number(env, 'DUMONT_OFFLINE_AFTER_SECONDS', 90, positive, 'a positive number of seconds'),
    hibernateTimeoutSeconds: number(env, 'DUMONT_HIBERNATE_TIMEOUT_SECONDS', 600, positive, 'a positive number of seconds'),
    freshnessSeconds: number(env, 'DUMONT_FRESHNESS_SECONDS', 30, positive, 'a positive number of seconds'),
    maxClockSkewSeconds: number(env, 'DUMONT_MAX_CLOCK_SKEW_SECONDS', 3600, positive, 'a positive number of seconds'),
    massOfflineRatio: number(env, 'DUMONT_MASS_OFFLINE_RATIO', 0.5, (n) => n > 0 && n <= 1, 'in (0, 1]'),
    massOfflineMinInstances: number(env, 'DUMONT_MASS_OFFLINE_MIN_INSTANCES', 10, (n) => Number.isInteger(n) && n >= 1, 'an integer ≥ 1'),
    massOfflineHoldMinutes: number(env, 'DUMONT_MASS_OFFLINE_HOLD_MINUTES', 30, positive, 'a positive number of minutes'),
    sweepIntervalMs: number(env, 'DUMONT_SWEEP_INTERVAL_MS', 1000, (n) => n >= 10, 'at least 10 ms'),
    rateLimitPerMinute: number(env, 'DUMONT_RATE_LIMIT_PER_MINUTE', 600, (n) => Number.isInteger(n) && n >= 0, 'an integer ≥ 0'),
    authFailuresPerMinute: number(env, 'DUMONT_AUTH_FAILURES_PER_MINUTE', 120, (n) => Number.isInteger(n) && n >= 0, 'an integer ≥ 0'),
    fsync,
    logLevel: env.DUMONT_LOG_LEVEL?.trim() || 'info',
    wakeTimeoutSeconds: number(env, 'DUMONT_WAKE_TIMEOUT_SECONDS', 900, positive, 'a positive number of seconds'),
    provider: env.DUMONT_PROVIDER?.trim() || 'none',
    vastApiUrl: url(env, 'DUMONT_VAST_API_URL') ?? 'https://console.vast.ai',
    vastApiKey: env.DUMONT_VAST_API_KEY?.trim() || undefined,
    webhookUrl: url(env, 'DUMONT_WEBHOOK_URL'),
    webhookSecret: env.DUMONT_WEBHOOK_SECRET?.trim() || undefined,
    providerStopCommand: env.DUMONT_PROVIDER_STOP_COMMAND?.trim() || undefined,
    providerStartCommand: env.DUMONT_PROVIDER_START_COMMAND?.trim() || undefined,
    providerTimeoutSeconds: number(env, 'DUMONT_PROVIDER_TIMEOUT_SECONDS', 30, positive, 'a positive number of seconds'),
    providerRetryHours: number(env, 'DUMONT_PROVIDER_RETRY_HOURS', 24, positive, 'a positive number of hours'),
    dryRun: flag(env, 'DUMONT_DRY_RUN'),
    notifyUrl: url(env, 'DUMONT_NOTIFY_URL'),
    notifySecret: env.DUMONT_NOTIFY_SECRET?.trim() || undefined,
    notifyFormat,
    publicUrlSet: url(env, 'DUMONT_PUBLIC_URL') !== undefined,
    publicUrl: (url(env, 'DUMONT_PUBLIC_URL') ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}`).replace(/\/+$/, ''),
    outboxPollMs: number(env, 'DUMONT_OUTBOX_POLL_MS', 1000, (n) => n >= 10, 'at least 10 ms'),
    metricsToken: env.DUMONT_METRICS_TOKEN?.trim() || undefined,
    historyEnabled: onOff(env, 'DUMONT_HISTORY', true),
    historyRawHours: number(env, 'DUMONT_HISTORY_RAW_HOURS', 24, positive, 'a positive number of hours'),
    historyDays: number(env, 'DUMONT_HISTORY_DAYS', 30, positive, 'a positive number of days'),
    sessionHours: number(env, 'DUMONT_SESSION_HOURS', 12, positive, 'a positive number of hours'),
    maxThresholdMinutes: number(env, 'DUMONT_MAX_THRESHOLD_MINUTES', MAX_THRESHOLD_MINUTES, (n) => n > 0 && n <= MAX_THRESHOLD_MINUTES, `in (0, ${MAX_THRESHOLD_MINUTES}]`),
    maxKeepAliveMinutes: number(env, 'DUMONT_MAX_KEEP_ALIVE_MINUTES', MAX_KEEP_ALIVE_MINUTES, (n) => Number.isInteger(n) && n >= 1 && n <= MAX_KEEP_ALIVE_MINUTES, `an integer in [1, ${MAX_KEEP_ALIVE_MINUTES}]`),
    keepAliveBudgetMinutes: optionalNumber(env, 'DUMONT_KEEP_ALIVE_BUDGET_MINUTES', (n) => Number.isInteger(n) && n >= 0, 'an integer ≥ 0 (or empty: no budget)'),
    ownerMayDisable: onOff(env, 'DUMONT_OWNER_MAY_DISABLE', true),
  };
}
