import { readFileSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { MAX_SIGNAL_HOOKS, parseSignalHook, type SignalHook } from './collectors/signal-hooks.js';
import { isLogLevel, type LogLevel } from './log.js';

/**
 * The agent's settings. Every flag is also a key of the JSON config file, spelled the same
 * (`{"instance-id": 456789, "api-url": "http://host:8080", "token-file": "/etc/dumont-agent/token"}`).
 * Precedence, highest first: command-line flags, environment (DUMONT_AGENT_TOKEN), config file,
 * defaults. For the token: --token, --token-file, DUMONT_AGENT_TOKEN, then the file's "token" and
 * "token-file".
 */
type Kind = 'string' | 'number' | 'int' | 'list';
interface OptionSpec {
  kind: Kind;
  help: string;
  /** Not a config-file key (only meaningful on the command line). */
  flagOnly?: boolean;
  /** Still accepted so that old configs keep working, but ignored with this warning; left out of --help. */
  deprecated?: string;
}

export const OPTIONS = {
  'instance-id': { kind: 'int', help: 'numeric id of this instance (required for run and collect)' },
  'api-url': { kind: 'string', help: 'base URL of the Dumont server, e.g. http://host:8080 (required for run)' },
  token: { kind: 'string', help: 'agent token (visible in ps: prefer --token-file or DUMONT_AGENT_TOKEN)' },
  'token-file': { kind: 'string', help: 'file holding the agent token' },
  config: { kind: 'string', help: 'JSON config file; its keys are these flags', flagOnly: true },
  'nvidia-smi': { kind: 'string', help: 'nvidia-smi program (default: nvidia-smi on PATH)' },
  'nvidia-smi-timeout-seconds': { kind: 'number', help: 'kill nvidia-smi after this long (default 10)' },
  'state-dir': { kind: 'string', help: 'where executed command ids and unsent results are kept (default $STATE_DIRECTORY, else /var/lib/dumont-agent)' },
  'hibernate-hook': { kind: 'string', help: 'shell command run for the hibernate command (/bin/sh -c)' },
  'snapshot-hook': { kind: 'string', help: 'shell command run for the snapshot command' },
  'restart-hook': { kind: 'string', help: 'shell command run for the restart command' },
  'warning-hook': { kind: 'string', help: 'shell command run once when a hibernation is scheduled' },
  'restart-service': { kind: 'list', help: 'systemd unit restarted by the restart command when no restart hook is set (repeatable)' },
  'hook-timeout-seconds': { kind: 'number', help: 'kill a hook after this long (default 300)' },
  'signal-hook': {
    kind: 'list',
    help: 'KEY=COMMAND: shell command run on every beat and reported as activity signal KEY: exit 0 active, 1 idle, anything else unavailable (counts as active); the first line of its output is the detail (repeatable)',
  },
  'signal-timeout-seconds': { kind: 'number', help: 'kill a signal hook after this long; the beat does not wait longer (default 5)' },
  'idle-utilization-percent': {
    kind: 'number',
    help: 'ignored',
    deprecated:
      '--idle-utilization-percent is ignored: the server decides which GPU utilization counts as idle (its DUMONT_IDLE_UTILIZATION_PERCENT), and the agent no longer counts GPU utilization as activity',
  },
  'max-backoff-seconds': { kind: 'number', help: 'cap of the retry backoff when the server is unreachable (default 300)' },
  'request-timeout-seconds': { kind: 'number', help: 'heartbeat request timeout (default 10)' },
  'interval-seconds': { kind: 'number', help: 'beat interval until the server says otherwise (default 30)' },
  'hibernated-quiet-seconds': {
    kind: 'number',
    help: 'after the server confirmed a hibernation, send no beat for this long (the machine is being stopped; a beat would wake it) (default 900)',
  },
  'utmp-file': { kind: 'string', help: 'utmp file to read sessions from (default /var/run/utmp)' },
  'jupyter-runtime-dir': { kind: 'list', help: 'where to look for Jupyter servers (repeatable; default $JUPYTER_RUNTIME_DIR and every ~/.local/share/jupyter/runtime)' },
  npm: { kind: 'string', help: 'npm program used by the update command (default: npm on PATH)' },
  'stop-grace-seconds': { kind: 'number', help: 'on SIGTERM, how long a running command may finish before it is abandoned (default 20)' },
  'log-level': { kind: 'string', help: 'debug, info, warn or error (default info)' },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;
type Values = Partial<Record<OptionName, string | number | string[]>>;

export const DEFAULT_STATE_DIR = '/var/lib/dumont-agent';

export interface AgentConfig {
  instanceId: number | null;
  apiUrl: string | null;
  token: string | null;
  /** Where the token came from, for the startup log (never the token itself). */
  tokenSource: string | null;
  nvidiaSmi: string;
  nvidiaSmiTimeoutMs: number;
  stateDir: string;
  hooks: { hibernate: string | null; snapshot: string | null; restart: string | null; warning: string | null };
  restartServices: string[];
  hookTimeoutMs: number;
  signalHooks: SignalHook[];
  signalTimeoutMs: number;
  maxBackoffMs: number;
  requestTimeoutMs: number;
  intervalMs: number;
  hibernatedQuietMs: number;
  utmpFile: string;
  jupyterRuntimeDirs: string[] | null;
  npm: string;
  stopGraceMs: number;
  logLevel: LogLevel;
  /** The values that were set, by name (for `install`, which writes them to the config file). */
  explicit: Values;
  warnings: string[];
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface CommandLine {
  command: string;
  values: Values;
  help: boolean;
  version: boolean;
  /** Flags of install/uninstall. */
  dryRun: boolean;
  root: string;
  purge: boolean;
}

export const COMMANDS = ['run', 'collect', 'install', 'uninstall'] as const;

export function parseCommandLine(argv: readonly string[]): CommandLine {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {
    help: { type: 'boolean' },
    version: { type: 'boolean' },
    'dry-run': { type: 'boolean' },
    root: { type: 'string' },
    purge: { type: 'boolean' },
  };
  for (const [name, spec] of Object.entries(OPTIONS)) {
    options[name] = spec.kind === 'list' ? { type: 'string', multiple: true } : { type: 'string' };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const [command = 'run', ...rest] = parsed.positionals;
  if (!(COMMANDS as readonly string[]).includes(command)) throw new ConfigError(`unknown command ${JSON.stringify(command)} (expected ${COMMANDS.join(', ')})`);
  if (rest.length > 0) throw new ConfigError(`unexpected argument ${JSON.stringify(rest[0])}`);
  const values: Values = {};
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    const v = parsed.values[name];
    if (v !== undefined) values[name] = v as string | string[];
  }
  return {
    command,
    values,
    help: parsed.values.help === true,
    version: parsed.values.version === true,
    dryRun: parsed.values['dry-run'] === true,
    root: typeof parsed.values.root === 'string' ? parsed.values.root : '/',
    purge: parsed.values.purge === true,
  };
}

function readConfigFile(path: string): Values {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`config file ${path} must hold a JSON object`);
  const values: Values = {};
  for (const [key, value] of Object.entries(json)) {
    const spec = (OPTIONS as Record<string, OptionSpec>)[key];
    if (!spec || spec.flagOnly) throw new ConfigError(`config file ${path}: unknown key ${JSON.stringify(key)}`);
    if (value === null) continue;
    const ok =
      spec.kind === 'list'
        ? Array.isArray(value) && value.every((v) => typeof v === 'string')
        : typeof value === 'string' || (typeof value === 'number' && spec.kind !== 'string');
    if (!ok) throw new ConfigError(`config file ${path}: ${key} has the wrong type`);
    values[key as OptionName] = value as string | number | string[];
  }
  return values;
}

function num(name: OptionName, value: unknown, fallback: number, { int = false, min = 0 } = {}): number {
  if (value === undefined) return fallback;
  const n = typeof value === 'number' ? value : Number(String(value).trim());
  if (!Number.isFinite(n) || n < min || (int && !Number.isSafeInteger(n)) || String(value).trim() === '') {
    throw new ConfigError(`--${name} must be ${int ? 'an integer' : 'a number'} ≥ ${min}, got ${JSON.stringify(value)}`);
  }
  return n;
}

const str = (value: unknown): string | null => (typeof value === 'string' && value.trim() !== '' ? value : null);

/** Each key once, within the protocol's limits: a beat the server refuses would take the instance offline. */
function parseSignalHooks(values: unknown): SignalHook[] {
  if (!Array.isArray(values)) return [];
  const hooks: SignalHook[] = [];
  for (const text of values as string[]) {
    let hook: SignalHook;
    try {
      hook = parseSignalHook(text);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
    if (hooks.some((h) => h.key === hook.key)) throw new ConfigError(`--signal-hook ${hook.key} is given twice`);
    hooks.push(hook);
  }
  if (hooks.length > MAX_SIGNAL_HOOKS) throw new ConfigError(`at most ${MAX_SIGNAL_HOOKS} --signal-hook, got ${hooks.length}`);
  return hooks;
}

/** Reads and trims a token file; warns (does not refuse) when other users can read it. */
export function readTokenFile(path: string, warnings: string[]): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
    if ((statSync(path).mode & 0o004) !== 0) warnings.push(`token file ${path} is readable by every user; chmod 600 it`);
  } catch (err) {
    throw new ConfigError(`cannot read token file ${path}: ${(err as Error).message}`);
  }
  if (token === '') throw new ConfigError(`token file ${path} is empty`);
  return token;
}

export function normalizeApiUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`--api-url must be a URL like http://host:8080, got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`--api-url must be http or https, got ${url.protocol}`);
  return url.toString().replace(/\/+$/, '');
}

/** The heartbeat endpoint; an --api-url that already ends in /api/v1 is accepted too. */
export function statusEndpoint(apiUrl: string): string {
  return /\/api\/v1$/.test(apiUrl) ? `${apiUrl}/agent/status` : `${apiUrl}/api/v1/agent/status`;
}

/** `readToken: false` for commands that never send (`collect`, `uninstall`): no token file is read. */
export function resolveConfig(flags: Values, env: NodeJS.ProcessEnv, { readToken = true } = {}): AgentConfig {
  const warnings: string[] = [];
  const configPath = str(flags.config);
  const file = configPath ? readConfigFile(configPath) : {};
  const v: Values = { ...file, ...flags };
  for (const [name, spec] of Object.entries(OPTIONS) as Array<[OptionName, OptionSpec]>) {
    if (spec.deprecated && v[name] !== undefined) warnings.push(spec.deprecated);
  }

  let token: string | null = null;
  let tokenSource: string | null = null;
  if (!readToken) {
    // nothing: the token is not needed
  } else if (str(flags.token)) {
    token = String(flags.token).trim();
    tokenSource = '--token';
    warnings.push('the token was given with --token, which other users can see in ps; prefer --token-file');
  } else if (str(flags['token-file'])) {
    token = readTokenFile(String(flags['token-file']), warnings);
    tokenSource = `--token-file ${String(flags['token-file'])}`;
  } else if (str(env.DUMONT_AGENT_TOKEN)) {
    token = String(env.DUMONT_AGENT_TOKEN).trim();
    tokenSource = 'DUMONT_AGENT_TOKEN';
  } else if (str(file.token)) {
    token = String(file.token).trim();
    tokenSource = `config file ${configPath}`;
  } else if (str(file['token-file'])) {
    token = readTokenFile(String(file['token-file']), warnings);
    tokenSource = `token-file ${String(file['token-file'])}`;
  }

  const instanceId = v['instance-id'] === undefined ? null : num('instance-id', v['instance-id'], 0, { int: true, min: 1 });
  const apiUrl = str(v['api-url']) ? normalizeApiUrl(String(v['api-url'])) : null;
  const logLevel = str(v['log-level']) ?? 'info';
  if (!isLogLevel(logLevel)) throw new ConfigError(`--log-level must be debug, info, warn or error, got ${JSON.stringify(logLevel)}`);
  const seconds = (name: OptionName, fallback: number, min = 0) => Math.round(num(name, v[name], fallback, { min }) * 1000);

  return {
    instanceId,
    apiUrl,
    token,
    tokenSource,
    nvidiaSmi: str(v['nvidia-smi']) ?? 'nvidia-smi',
    nvidiaSmiTimeoutMs: seconds('nvidia-smi-timeout-seconds', 10, 0.05),
    // systemd's StateDirectory= exports STATE_DIRECTORY: the default when running as the service.
    stateDir: str(v['state-dir']) ?? str(env.STATE_DIRECTORY?.split(':')[0]) ?? DEFAULT_STATE_DIR,
    hooks: {
      hibernate: str(v['hibernate-hook']),
      snapshot: str(v['snapshot-hook']),
      restart: str(v['restart-hook']),
      warning: str(v['warning-hook']),
    },
    restartServices: Array.isArray(v['restart-service']) ? v['restart-service'].filter((s) => s.trim() !== '') : [],
    hookTimeoutMs: seconds('hook-timeout-seconds', 300, 0.05),
    signalHooks: parseSignalHooks(v['signal-hook']),
    signalTimeoutMs: seconds('signal-timeout-seconds', 5, 0.05),
    maxBackoffMs: seconds('max-backoff-seconds', 300, 0.05),
    requestTimeoutMs: seconds('request-timeout-seconds', 10, 0.05),
    intervalMs: seconds('interval-seconds', 30, 0.05),
    hibernatedQuietMs: seconds('hibernated-quiet-seconds', 900, 0),
    utmpFile: str(v['utmp-file']) ?? '/var/run/utmp',
    jupyterRuntimeDirs: Array.isArray(v['jupyter-runtime-dir']) ? v['jupyter-runtime-dir'] : null,
    npm: str(v.npm) ?? 'npm',
    stopGraceMs: seconds('stop-grace-seconds', 20, 0),
    logLevel,
    explicit: v,
    warnings,
  };
}
