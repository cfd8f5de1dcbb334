import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { BuiltFiles } from './file-cache.js';

/** The page's own scripts and styles only; uPlot sets inline style attributes, nothing runs inline. */
export const DASHBOARD_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** What `npm run build` leaves in @dumont/dashboard's dist (packages/dashboard/scripts/build.mjs). */
export function defaultDashboardDir(): string {
  return join(dirname(createRequire(import.meta.url).resolve('@dumont/dashboard/package.json')), 'dist');
}

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

/**
 * The dashboard: `/` is the page, `/ui/app.js` and `/ui/app.css` its assets, all from the build, no CDN.
 * No credential (they hold no data; the page logs in through /api/v1/session) and no rate limit.
 * Revalidated on every load by ETag, so a rebuild is seen at once; gzip when the client takes it.
 */
export function dashboardRoutes(app: FastifyInstance, options: { distDir?: string | undefined } = {}): void {
  const distDir = options.distDir ?? defaultDashboardDir();
  const files = new BuiltFiles();

  /** The file, its ETag, and its gzip twin unless that is older (left from an earlier build). */
  async function load(name: string) {
    const path = join(distDir, name);
    const file = await files.read(path);
    if (!file) return null;
    const twin = await files.read(`${path}.gz`);
    const gzip = twin && twin.mtimeMs >= file.mtimeMs ? twin.bytes : null;
    return { bytes: file.bytes, gzip, etag: `"${Buffer.from(file.sha256, 'hex').toString('base64url').slice(0, 27)}"` };
  }

  async function send(name: string, request: FastifyRequest, reply: FastifyReply) {
    const file = await load(name);
    if (!file) {
      return reply.code(503).send({
        error: 'unavailable',
        message: 'the dashboard has not been built on this server: run `npm run build` (it writes packages/dashboard/dist)',
      });
    }
    reply
      .header('content-type', FILES[name]!)
      .header('cache-control', 'no-cache')
      .header('etag', file.etag)
      .header('vary', 'accept-encoding')
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer');
    if (name === 'index.html') reply.header('content-security-policy', DASHBOARD_CSP).header('x-frame-options', 'DENY');
    if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
    if (file.gzip && /\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''))) {
      return reply.header('content-encoding', 'gzip').send(file.gzip);
    }
    return reply.send(file.bytes);
  }

  const route = { config: { rateLimit: false }, schema: { hide: true } } as const;
  app.get('/', route, (request, reply) => send('index.html', request, reply));
  app.get('/ui/app.js', route, (request, reply) => send('app.js', request, reply));
  app.get('/ui/app.css', route, (request, reply) => send('app.css', request, reply));
}
