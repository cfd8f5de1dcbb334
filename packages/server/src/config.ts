import { resolve } from 'node:path';
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
}

type Env = Record<string, string | undefined>;

function number(env: Env, name: string, fallback: number, check: (n: number) => boolean, rule: string): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || !check(value)) throw new Error(`${name}=${raw}: must be ${rule}`);
  return value;
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
  if (fsync !== 'transitions' && fsync !== 'always') throw new Error(`DUMONT_FSYNC=${fsync}: must be transitions or always`);
  return {
    host: env.DUMONT_HOST?.trim() || '127.0.0.1',
    port: number(env, 'DUMONT_PORT', 8080, (n) => Number.isInteger(n) && n >= 0 && n < 65536, 'a port number'),
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
  };
}
