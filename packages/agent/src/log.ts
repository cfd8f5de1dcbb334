/**
 * A tiny structured logger: one JSON object per line on stderr, so stdout stays free for `collect`'s
 * output and journald keeps every line. Secrets handed to `createLogger` are masked in every line,
 * whatever field they end up in (an error message quoting a header, say).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Mask this value from now on (the token, once it is known). */
  addSecret(secret: string): void;
}

export interface LoggerOptions {
  level?: LogLevel;
  write?: (line: string) => void;
  now?: () => number;
  secrets?: string[];
}

export const REDACTED = '[redacted]';

export function isLogLevel(value: string): value is LogLevel {
  return value in RANK;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const min = RANK[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const now = options.now ?? Date.now;
  // Very short secrets would mask innocent substrings; tokens are long.
  const secrets = (options.secrets ?? []).filter((s) => s.length >= 8);

  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (RANK[level] < min) return;
    let line = JSON.stringify({ time: new Date(now()).toISOString(), level, msg, ...fields }, errorReplacer);
    for (const secret of secrets) {
      line = line.split(secret).join(REDACTED);
      // The same secret as it appears inside a JSON string (escaped quotes, backslashes).
      const escaped = JSON.stringify(secret).slice(1, -1);
      if (escaped !== secret) line = line.split(escaped).join(REDACTED);
    }
    write(`${line}\n`);
  };

  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    addSecret: (secret) => {
      if (secret.length >= 8 && !secrets.includes(secret)) secrets.push(secret);
    },
  };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  return value;
}

/** A logger that drops everything; for library callers that pass none. */
export const silentLogger: Logger = createLogger({ write: () => {} });
