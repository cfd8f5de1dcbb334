/**
 * The files `dumont-agent install` writes, as text: pure, so a test can read them whole.
 * Paths here are as seen on the installed system; `--root` only changes where they are written.
 */
export const SERVICE_NAME = 'dumont-agent.service';
export const UNIT_PATH = '/etc/systemd/system/dumont-agent.service';
export const CONFIG_DIR = '/etc/dumont-agent';
export const CONFIG_PATH = '/etc/dumont-agent/config.json';
export const TOKEN_PATH = '/etc/dumont-agent/token';

/** systemd's own quoting for ExecStart words (systemd.service(5), "Command lines"). */
export function systemdQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `"${word.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\$/g, '$$$$').replace(/%/g, '%%')}"`;
}

/**
 * V8 flags for a daemon that works for milliseconds every 30 s: a 1 MB young generation and no
 * optimizing compiler cut its resident memory by about 6 MB (measured: 54 → 49 MB peak RSS for one
 * collection); the CPU they would save is not worth the memory at one beat per 30 s.
 */
export const NODE_FLAGS = ['--max-semi-space-size=1', '--lite-mode'] as const;

/**
 * The one of NODE_FLAGS the single executable can take, through its environment (its arguments are
 * all the agent's, and node refuses --lite-mode in NODE_OPTIONS): measured 25 → 19 MB private memory.
 */
export const SINGLE_EXECUTABLE_NODE_OPTIONS = '--max-semi-space-size=1';

/** `nodePath: null`: `cliPath` is the single executable, which takes no node and no node flags. */
export function renderUnit(opts: { nodePath: string | null; cliPath: string; configPath?: string }): string {
  const runner = opts.nodePath === null ? [] : [opts.nodePath, ...NODE_FLAGS];
  const environment = opts.nodePath === null ? `Environment=NODE_OPTIONS=${SINGLE_EXECUTABLE_NODE_OPTIONS}\n` : '';
  const exec = [...runner, opts.cliPath, 'run', '--config', opts.configPath ?? CONFIG_PATH].map(systemdQuote).join(' ');
  return `# Written by \`dumont-agent install\`; \`dumont-agent uninstall\` removes it.
[Unit]
Description=Dumont agent: GPU metrics, activity and commands for the Dumont server
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
${environment}ExecStart=${exec}
Restart=on-failure
RestartSec=5
# /var/lib/dumont-agent: executed command ids and unsent results survive restarts.
StateDirectory=dumont-agent
StateDirectoryMode=0700
# SIGTERM to the agent only: it finishes or abandons a running hook itself, then exits.
KillMode=mixed
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
`;
}

/** The config file: the flags given to `install`, under their own names. */
export function renderConfig(values: Record<string, unknown>): string {
  const ordered = Object.fromEntries(Object.entries(values).sort(([a], [b]) => a.localeCompare(b)));
  return `${JSON.stringify(ordered, null, 2)}\n`;
}
