import type { ServerConfig } from '../config.js';
import { createCommandProvider, parseCommandLine } from './command.js';
import { noneProvider, type Provider } from './provider.js';
import { parseWebhookSecret } from './standard-webhooks.js';
import { createVastProvider } from './vast.js';
import { createWebhookProvider } from './webhook.js';

/** The server's own secrets: a stop command (a cloud CLI, a script) has no use for them. */
const SERVER_SECRETS = ['DUMONT_ADMIN_KEY', 'DUMONT_VAST_API_KEY', 'DUMONT_WEBHOOK_SECRET', 'DUMONT_NOTIFY_SECRET', 'DUMONT_DATABASE_URL'];

/** The environment a provider command runs with: the server's, less its secrets. */
export function commandEnvironment(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const copy = { ...env };
  for (const name of SERVER_SECRETS) delete copy[name];
  return copy;
}

/**
 * The providers this server is configured for, by name. `none` always; the others when their
 * settings are present. An instance may name only one of these.
 */
export class Providers {
  private constructor(private readonly byName: ReadonlyMap<string, Provider>) {}

  /** Throws at start-up, naming the variable, when a setting is malformed or the default is unconfigured. */
  static fromConfig(config: ServerConfig): Providers {
    const byName = new Map<string, Provider>([['none', noneProvider]]);
    if (config.vastApiKey !== undefined) {
      byName.set('vast', createVastProvider({ apiUrl: config.vastApiUrl, apiKey: config.vastApiKey }));
    }
    if (config.webhookUrl !== undefined || config.webhookSecret !== undefined) {
      if (config.webhookUrl === undefined || config.webhookSecret === undefined) {
        throw new Error('DUMONT_WEBHOOK_URL and DUMONT_WEBHOOK_SECRET: set both for the webhook provider');
      }
      byName.set('webhook', createWebhookProvider({ url: config.webhookUrl, secret: parseWebhookSecret(config.webhookSecret, 'DUMONT_WEBHOOK_SECRET') }));
    }
    if (config.providerStopCommand !== undefined) {
      byName.set(
        'command',
        createCommandProvider({
          stop: parseCommandLine(config.providerStopCommand, 'DUMONT_PROVIDER_STOP_COMMAND'),
          start: config.providerStartCommand === undefined ? null : parseCommandLine(config.providerStartCommand, 'DUMONT_PROVIDER_START_COMMAND'),
          env: commandEnvironment(),
        }),
      );
    } else if (config.providerStartCommand !== undefined) {
      throw new Error('DUMONT_PROVIDER_START_COMMAND: set DUMONT_PROVIDER_STOP_COMMAND too (the command provider needs a stop)');
    }
    if (!byName.has(config.provider)) {
      throw new Error(`DUMONT_PROVIDER=${config.provider}: ${Providers.missing(config.provider)}`);
    }
    return new Providers(byName);
  }

  /** What is missing for a provider name to be usable (for error messages). */
  static missing(name: string): string {
    switch (name) {
      case 'vast':
        return 'not configured (set DUMONT_VAST_API_KEY)';
      case 'webhook':
        return 'not configured (set DUMONT_WEBHOOK_URL and DUMONT_WEBHOOK_SECRET)';
      case 'command':
        return 'not configured (set DUMONT_PROVIDER_STOP_COMMAND)';
      default:
        return 'unknown provider (none, vast, webhook or command)';
    }
  }

  get(name: string): Provider | undefined {
    return this.byName.get(name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }
}
