#!/usr/bin/env node
import { runAgent } from './agent.js';
import { createBeatCollector } from './collect.js';
import { CommandJournal } from './commands/journal.js';
import { COMMANDS, ConfigError, OPTIONS, parseCommandLine, resolveConfig, type AgentConfig } from './config.js';
import { install, uninstall } from './install/install.js';
import { createLogger } from './log.js';
import { AGENT_VERSION } from './version.js';

/** Exit codes: 0 done, 1 failure, 2 bad usage; `run` may also exit 75 to be restarted (update). */
const USAGE_ERROR = 2;

function usage(): string {
  const flags = Object.entries(OPTIONS)
    .filter(([, spec]) => !('deprecated' in spec))
    .map(([name, spec]) => `  --${name.padEnd(28)} ${spec.help}`)
    .join('\n');
  return `dumont-agent ${AGENT_VERSION}: reports GPU metrics and activity to a Dumont server and runs its commands.

usage:
  dumont-agent [run] --instance-id N --api-url URL --token-file FILE   run forever (the default command)
  dumont-agent collect [--instance-id N]                               print one heartbeat body and exit
  dumont-agent install [--dry-run] [--root DIR] --instance-id N --api-url URL --token-file FILE
                                                                       write the systemd unit and config, enable and start it
  dumont-agent uninstall [--dry-run] [--root DIR] [--purge]            stop, disable and remove it

options (each also a key of the --config JSON file):
${flags}
  --help, --version
`;
}

/** The command being run, once known: how a failure is reported depends on it. */
let command = 'run';

async function main(argv: string[]): Promise<number> {
  const line = parseCommandLine(argv);
  command = line.command;
  if (line.help) {
    process.stdout.write(usage());
    return 0;
  }
  if (line.version) {
    process.stdout.write(`${AGENT_VERSION}\n`);
    return 0;
  }
  const config: AgentConfig = resolveConfig(line.values, process.env, { readToken: line.command === 'run' || line.command === 'install' });
  const log = createLogger({ level: config.logLevel, secrets: config.token ? [config.token] : [] });
  for (const warning of config.warnings) log.warn(warning);
  const print = (text: string) => process.stdout.write(text);

  switch (line.command as (typeof COMMANDS)[number]) {
    case 'collect': {
      const collector = createBeatCollector(config, { log, now: Date.now, env: process.env });
      const { body } = await collector.collect(CommandJournal.peek(config.stateDir).pending());
      print(`${JSON.stringify(body, null, 2)}\n`);
      return 0;
    }
    case 'install':
      install(config, { root: line.root, dryRun: line.dryRun, print });
      return 0;
    case 'uninstall':
      uninstall({ root: line.root, dryRun: line.dryRun, purge: line.purge, print });
      return 0;
    case 'run': {
      const { instanceId, apiUrl, token } = config;
      if (instanceId === null) throw new ConfigError('--instance-id is required');
      if (apiUrl === null) throw new ConfigError('--api-url is required');
      if (token === null) throw new ConfigError('no agent token: give --token-file FILE, DUMONT_AGENT_TOKEN, or "token-file" in the config file');
      const crash = (err: unknown) => {
        log.error('unexpected error: exiting so that the service manager restarts the agent', { error: String((err as Error)?.stack ?? err) });
        process.exit(1);
      };
      process.on('uncaughtException', crash);
      process.on('unhandledRejection', crash);
      return runAgent({ ...config, instanceId, apiUrl, token }, { log, env: process.env });
    }
  }
}

// process.exit, not exitCode: a hook started by the agent (the warning hook) must not keep it alive.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`dumont-agent: ${err.message}\n(see dumont-agent --help)\n`);
      process.exit(USAGE_ERROR);
    }
    if (command === 'install' || command === 'uninstall' || command === 'collect') {
      // Interactive commands: a sentence for the operator (EACCES without sudo, systemctl failing).
      process.stderr.write(`dumont-agent ${command}: ${(err as Error)?.message ?? String(err)}\n`);
    } else {
      process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'dumont-agent failed', error: String((err as Error)?.stack ?? err) })}\n`);
    }
    process.exit(1);
  },
);
