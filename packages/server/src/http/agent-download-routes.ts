import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { renderInstallScript } from '../agent-install-script.js';
import { BuiltFiles } from './file-cache.js';

/** Where the agent's builds leave what this server hands out: packages/agent/dist. */
export const DEFAULT_AGENT_DIST = fileURLToPath(new URL('../../../agent/dist/', import.meta.url));
/** Where `npm run build` leaves the agent bundle (packages/agent/scripts/bundle.mjs). */
export const DEFAULT_AGENT_BUNDLE = join(DEFAULT_AGENT_DIST, 'dumont-agent.mjs');

/** The architectures `npm run build:agent-binary` builds the single-executable agent for. */
export const AGENT_BINARY_ARCHES = ['x64', 'arm64'] as const;

export interface AgentDownloadOptions {
  /** The server's public URL (config.publicUrl). */
  publicUrl: string;
  /** DUMONT_PUBLIC_URL was set: use it; otherwise the URL the script was fetched from. */
  publicUrlSet: boolean;
  /** Where the agent's build outputs are (default: DEFAULT_AGENT_DIST). */
  distDir?: string;
  /** Default: dumont-agent.mjs in `distDir`. */
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

const PUBLIC_DOWNLOAD = { config: { rateLimit: false }, schema: { hide: true } } as const;

/**
 * The agent (bundle and single executables), their SHA-256s and the install script, without
 * authentication: they hold no secret, and a GPU host has only its token file when it fetches them.
 * Not rate limited, like /healthz: a fleet being provisioned fetches them all at once.
 */
export function agentDownloadRoutes(app: FastifyInstance, options: AgentDownloadOptions): void {
  const distDir = options.distDir ?? DEFAULT_AGENT_DIST;
  const bundlePath = options.bundlePath ?? join(distDir, 'dumont-agent.mjs');
  const files = new BuiltFiles();
  const loadBundle = () => files.read(bundlePath);

  const missing = {
    error: 'unavailable',
    message: 'the agent bundle has not been built on this server: run `npm run build` (it writes packages/agent/dist/dumont-agent.mjs)',
  };

  app.get('/agent/dumont-agent.mjs', PUBLIC_DOWNLOAD, async (_request, reply) => {
    const bundle = await loadBundle();
    if (!bundle) return reply.code(503).send(missing);
    return reply.type('text/javascript; charset=utf-8').header('x-content-sha256', bundle.sha256).send(bundle.bytes);
  });

  app.get('/agent/dumont-agent.mjs.sha256', PUBLIC_DOWNLOAD, async (_request, reply) => {
    const bundle = await loadBundle();
    if (!bundle) return reply.code(503).send(missing);
    // sha256sum's own format, so `sha256sum -c` can check a manual download.
    return reply.type('text/plain; charset=utf-8').send(`${bundle.sha256}  dumont-agent.mjs\n`);
  });

  app.get('/agent/install.sh', PUBLIC_DOWNLOAD, async (request, reply) => {
    // Served even without a bundle: the script's download then fails with the 503 message above.
    return reply.type('text/x-shellscript; charset=utf-8').send(renderInstallScript(publicUrlOf(request, options)));
  });

  for (const arch of AGENT_BINARY_ARCHES) agentBinaryRoutes(app, distDir, arch);
}

/**
 * One architecture's single-executable agent (~100 MB), streamed from disk: never held in memory,
 * and opened anew for each request so that a rebuild is served at once.
 */
function agentBinaryRoutes(app: FastifyInstance, distDir: string, arch: (typeof AGENT_BINARY_ARCHES)[number]): void {
  const name = `dumont-agent-linux-${arch}`;
  const binaryPath = join(distDir, name);
  const notBuilt = {
    error: 'not_found',
    message: `the agent binary for linux-${arch} has not been built on this server: run \`npm run build:agent-binary\` (it writes packages/agent/dist/${name})`,
  };
  const noChecksum = {
    error: 'not_found',
    message: `the agent binary for linux-${arch} has no valid ${name}.sha256 next to it: run \`npm run build:agent-binary\` again`,
  };
  app.route({
    method: ['GET', 'HEAD'],
    url: `/agent/${name}`,
    ...PUBLIC_DOWNLOAD,
    handler: async (request, reply) => {
      const chosen = await openBinary(binaryPath, acceptsGzip(request.headers['accept-encoding']));
      if (!chosen) return reply.code(404).send(notBuilt);
      let streaming = false;
      try {
        const sha256 = await sha256Of(`${binaryPath}.sha256`);
        if (!sha256) return reply.code(404).send(noChecksum);
        reply
          .type('application/octet-stream')
          .header('content-length', chosen.size)
          // Of the binary itself, also when it is sent gzipped: what the installer checks after decoding.
          .header('x-content-sha256', sha256)
          .header('content-disposition', `attachment; filename="${name}"`)
          .header('vary', 'accept-encoding');
        if (chosen.gzip) reply.header('content-encoding', 'gzip');
        // Declared with GET, not left to Fastify's implicit HEAD: that one reads a streamed body to the end.
        if (request.method === 'HEAD') return reply.send();
        streaming = true;
        return reply.send(chosen.handle.createReadStream());
      } finally {
        if (!streaming) await chosen.handle.close();
      }
    },
  });

  app.get(`/agent/${name}.sha256`, PUBLIC_DOWNLOAD, async (_request, reply) => {
    if (!(await isFile(binaryPath))) return reply.code(404).send(notBuilt);
    const sha256 = await sha256Of(`${binaryPath}.sha256`);
    if (!sha256) return reply.code(404).send(noChecksum);
    return reply.type('text/plain; charset=utf-8').send(`${sha256}  ${name}\n`);
  });
}

interface OpenedBinary {
  /** Open before its size is taken, so a rebuild that replaces the file cannot make the two disagree. */
  handle: FileHandle;
  size: number;
  gzip: boolean;
}

/**
 * The binary, or its `.gz` when the client takes gzip and one exists; null when not built. No check
 * that the .gz is of the same build (build-binary.mjs writes it before the binary, so mtimes cannot
 * tell): the installer checks what it decoded against the checksum, and refuses a mismatch.
 */
async function openBinary(path: string, gzipWanted: boolean): Promise<OpenedBinary | null> {
  const raw = await openFile(path);
  if (!raw) return null;
  const gz = gzipWanted ? await openFile(`${path}.gz`) : null;
  if (!gz) return { ...raw, gzip: false };
  await raw.handle.close();
  return { ...gz, gzip: true };
}

async function openFile(path: string): Promise<{ handle: FileHandle; size: number } | null> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch {
    return null;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new Error('not a file');
    return { handle, size: info.size };
  } catch {
    await handle.close();
    return null;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** The hex digest from a `sha256sum` line, read each time (a few bytes): the file changes with each build. */
async function sha256Of(path: string): Promise<string | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return null;
  }
  return /^([0-9a-fA-F]{64})(\s|$)/.exec(text)?.[1]?.toLowerCase() ?? null;
}

/**
 * Whether an Accept-Encoding header takes gzip (RFC 9110 §12.5.3): `gzip;q=0` refuses it, `*` takes it
 * unless gzip is named; a malformed weight counts as a refusal, since the plain bytes always do.
 */
export function acceptsGzip(header: string | string[] | undefined): boolean {
  if (header === undefined) return false;
  let gzip: number | undefined;
  let any: number | undefined;
  for (const entry of (Array.isArray(header) ? header.join(',') : header).split(',')) {
    const [coding = '', ...params] = entry.split(';').map((part) => part.trim().toLowerCase());
    const weight = weightOf(params);
    if (coding === 'gzip' || coding === 'x-gzip') gzip = Math.max(gzip ?? 0, weight);
    else if (coding === '*') any = weight;
  }
  return (gzip ?? any ?? 0) > 0;
}

function weightOf(params: string[]): number {
  const q = params.find((param) => /^q\s*=/.test(param));
  if (q === undefined) return 1;
  const value = q.replace(/^q\s*=\s*/, '');
  return /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(value) ? Number(value) : 0;
}
