import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { renderInstallScript } from '../agent-install-script.js';
import { BuiltFiles } from './file-cache.js';

/** Where `npm run build` leaves the agent bundle (packages/agent/scripts/bundle.mjs). */
export const DEFAULT_AGENT_BUNDLE = fileURLToPath(new URL('../../../agent/dist/dumont-agent.mjs', import.meta.url));

export interface AgentDownloadOptions {
  /** The server's public URL (config.publicUrl). */
  publicUrl: string;
  /** DUMONT_PUBLIC_URL was set: use it; otherwise the URL the script was fetched from. */
  publicUrlSet: boolean;
  bundlePath?: string;
}

/** A host name or address with an optional port: anything else is not put into the script. */
const SAFE_HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/;

/**
 * The URL clients reach this server at: DUMONT_PUBLIC_URL when set, else the one this request was
 * sent to (a server listening on 0.0.0.0 knows no better), else the configured default.
 */
export function publicUrlOf(request: FastifyRequest, options: Pick<AgentDownloadOptions, 'publicUrl' | 'publicUrlSet'>): string {
  if (options.publicUrlSet) return options.publicUrl;
  const host = request.host;
  return SAFE_HOST.test(host) ? `${request.protocol}://${host}` : options.publicUrl;
}

/**
 * The agent bundle, its SHA-256 and the install script, without authentication: they hold no
 * secret, and a GPU host has only its token file when it fetches them. Not rate limited, like
 * /healthz: a fleet being provisioned fetches them all at once.
 */
export function agentDownloadRoutes(app: FastifyInstance, options: AgentDownloadOptions): void {
  const bundlePath = options.bundlePath ?? DEFAULT_AGENT_BUNDLE;
  const files = new BuiltFiles();
  const loadBundle = () => files.read(bundlePath);

  const missing = {
    error: 'unavailable',
    message: 'the agent bundle has not been built on this server: run `npm run build` (it writes packages/agent/dist/dumont-agent.mjs)',
  };

  const route = { config: { rateLimit: false }, schema: { hide: true } } as const;

  app.get('/agent/dumont-agent.mjs', route, async (_request, reply) => {
    const bundle = await loadBundle();
    if (!bundle) return reply.code(503).send(missing);
    return reply.type('text/javascript; charset=utf-8').header('x-content-sha256', bundle.sha256).send(bundle.bytes);
  });

  app.get('/agent/dumont-agent.mjs.sha256', route, async (_request, reply) => {
    const bundle = await loadBundle();
    if (!bundle) return reply.code(503).send(missing);
    // sha256sum's own format, so `sha256sum -c` can check a manual download.
    return reply.type('text/plain; charset=utf-8').send(`${bundle.sha256}  dumont-agent.mjs\n`);
  });

  app.get('/agent/install.sh', route, async (request, reply) => {
    // Served even without a bundle: the script's download then fails with the 503 message above.
    return reply.type('text/x-shellscript; charset=utf-8').send(renderInstallScript(publicUrlOf(request, options)));
  });
}
