import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_STATE_DIR, OPTIONS, type AgentConfig, type OptionName } from '../config.js';
import { isSingleExecutable, ownExecutable } from '../runtime.js';
import { CONFIG_DIR, CONFIG_PATH, SERVICE_NAME, TOKEN_PATH, UNIT_PATH, renderConfig, renderUnit } from './systemd.js';

export interface InstallOptions {
  /** Where `/` is: the real root, or a directory for images and tests (then systemctl --root). */
  root: string;
  dryRun: boolean;
  purge?: boolean;
  print: (text: string) => void;
  /** null: `cliPath` is a single executable, run without node. */
  nodePath?: string | null;
  cliPath?: string;
  /** The systemctl program (tests pass a stand-in). */
  systemctl?: string;
  /**
   * Act on the running system (daemon-reload, enable --now, disable --now) rather than on an image
   * (systemctl --root). Defaults to root === '/'; tests set it to check that sequence elsewhere.
   */
  live?: boolean;
}

interface Step {
  describe: string;
  run: () => void;
  /** A failure is reported and the next steps still run (stopping a unit that is not there). */
  optional?: boolean;
}

const under = (root: string, path: string) => (root === '/' ? path : join(root, path));

function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode); // writeFileSync's mode is masked by the umask
  renameSync(tmp, path);
}

function systemctl(program: string, args: string[]): void {
  const r = spawnSync(program, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw new Error(`systemctl ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`systemctl ${args.join(' ')} exited with ${r.status}: ${(r.stderr || r.stdout).trim()}`);
}

/**
 * Where a file under `root` will be once the image boots: an executable the installer put at
 * ROOT/usr/local/bin/dumont-agent runs from /usr/local/bin/dumont-agent there.
 */
function onInstalledSystem(path: string, root: string): string {
  if (root === '/') return path;
  const prefix = root.endsWith('/') ? root : `${root}/`;
  return path.startsWith(prefix) ? `/${path.slice(prefix.length)}` : path;
}

function ownCliPath(): string {
  const cli = fileURLToPath(new URL('../cli.js', import.meta.url));
  return existsSync(cli) ? realpathSync(cli) : cli;
}

/** The config file's values: what was given, with the token moved to a 0600 file of its own. */
function configValues(config: AgentConfig): { values: Record<string, unknown>; token: string | null } {
  const values: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config.explicit) as Array<[OptionName, unknown]>) {
    if (k === 'config' || k === 'token' || k === 'token-file') continue;
    // A new install does not carry an ignored setting forward (its warning was logged already).
    if ('deprecated' in OPTIONS[k]) continue;
    values[k] = v;
  }
  if (config.instanceId === null) throw new ConfigError('install needs --instance-id');
  if (config.apiUrl === null) throw new ConfigError('install needs --api-url');
  values['instance-id'] = config.instanceId;
  values['api-url'] = config.apiUrl;
  const tokenFile = typeof config.explicit['token-file'] === 'string' ? config.explicit['token-file'] : null;
  if (tokenFile && !config.explicit.token) {
    values['token-file'] = tokenFile;
    return { values, token: null };
  }
  if (!config.token) throw new ConfigError('install needs the agent token: --token-file FILE, DUMONT_AGENT_TOKEN or --token');
  values['token-file'] = TOKEN_PATH;
  return { values, token: config.token };
}

function perform(steps: Step[], options: InstallOptions): void {
  for (const step of steps) {
    if (options.dryRun) {
      options.print(`would: ${step.describe}\n`);
      continue;
    }
    try {
      step.run();
    } catch (err) {
      if (!step.optional) throw err;
      options.print(`warning: ${(err as Error).message}; continuing\n`);
    }
  }
}

export function install(config: AgentConfig, options: InstallOptions): void {
  const { root } = options;
  const { values, token } = configValues(config);
  // A single executable has no node beside it and no cli.js inside a package: it runs itself.
  const binary = isSingleExecutable();
  const unit = renderUnit({
    nodePath: options.nodePath !== undefined ? options.nodePath : binary ? null : process.execPath,
    cliPath: options.cliPath ?? (binary ? onInstalledSystem(ownExecutable(), root) : ownCliPath()),
  });
  const configText = renderConfig(values);

  if (options.dryRun) {
    options.print(`# ${UNIT_PATH}\n${unit}`);
    options.print(`# ${CONFIG_PATH} (mode 0600)\n${configText}`);
    if (token) options.print(`# ${TOKEN_PATH} (mode 0600): the agent token, not shown\n`);
  }
  const steps: Step[] = [
    { describe: `create ${CONFIG_DIR}`, run: () => mkdirSync(under(root, CONFIG_DIR), { recursive: true, mode: 0o755 }) },
  ];
  if (token) steps.push({ describe: `write ${TOKEN_PATH} (mode 0600)`, run: () => writeAtomic(under(root, TOKEN_PATH), `${token}\n`, 0o600) });
  steps.push(
    { describe: `write ${CONFIG_PATH} (mode 0600)`, run: () => writeAtomic(under(root, CONFIG_PATH), configText, 0o600) },
    {
      describe: `write ${UNIT_PATH}`,
      run: () => {
        mkdirSync(under(root, '/etc/systemd/system'), { recursive: true });
        writeAtomic(under(root, UNIT_PATH), unit, 0o644);
      },
    },
  );
  const sc = options.systemctl ?? 'systemctl';
  if (options.live ?? root === '/') {
    steps.push(
      { describe: 'systemctl daemon-reload', run: () => systemctl(sc, ['daemon-reload']) },
      { describe: `systemctl enable --now ${SERVICE_NAME}`, run: () => systemctl(sc, ['enable', '--now', SERVICE_NAME]) },
    );
  } else {
    steps.push({ describe: `systemctl --root=${root} enable ${SERVICE_NAME}`, run: () => systemctl(sc, [`--root=${root}`, 'enable', SERVICE_NAME]) });
  }
  perform(steps, options);
  if (!options.dryRun) {
    options.print(
      `dumont-agent installed${(options.live ?? root === '/') ? ' and started' : ` under ${root} (enabled, not started)`}.\n` +
        `  status: systemctl status dumont-agent\n  logs:   journalctl -u dumont-agent\n`,
    );
  }
}

export function uninstall(options: InstallOptions): void {
  const { root } = options;
  const steps: Step[] = [];
  const sc = options.systemctl ?? 'systemctl';
  const live = options.live ?? root === '/';
  if (live) steps.push({ describe: `systemctl disable --now ${SERVICE_NAME}`, run: () => systemctl(sc, ['disable', '--now', SERVICE_NAME]), optional: true });
  else steps.push({ describe: `systemctl --root=${root} disable ${SERVICE_NAME}`, run: () => systemctl(sc, [`--root=${root}`, 'disable', SERVICE_NAME]), optional: true });
  steps.push({ describe: `remove ${UNIT_PATH}`, run: () => rmSync(under(root, UNIT_PATH), { force: true }) });
  if (live) steps.push({ describe: 'systemctl daemon-reload', run: () => systemctl(sc, ['daemon-reload']) });
  if (options.purge) {
    steps.push(
      { describe: `remove ${CONFIG_DIR} (config and token)`, run: () => rmSync(under(root, CONFIG_DIR), { recursive: true, force: true }) },
      { describe: `remove ${DEFAULT_STATE_DIR} (command journal)`, run: () => rmSync(under(root, DEFAULT_STATE_DIR), { recursive: true, force: true }) },
    );
  }
  perform(steps, options);
  if (!options.dryRun) options.print(`dumont-agent uninstalled${options.purge ? '' : `; ${CONFIG_DIR} kept (use --purge to remove it)`}.\n`);
}
