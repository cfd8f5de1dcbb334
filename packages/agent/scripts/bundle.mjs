#!/usr/bin/env node
/**
 * Bundles the built agent (dist/cli.js, from `tsc -b`) and everything it imports, @dumont/protocol
 * included, into one dependency-free file that the server hosts for `GET /agent/install.sh`:
 * dist/dumont-agent.mjs, plus dist/dumont-agent.mjs.sha256 in `sha256sum` format.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const AGENT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(AGENT_ROOT, 'dist');
const ENTRY = join(DIST, 'cli.js');
export const BUNDLE = join(DIST, 'dumont-agent.mjs');

/**
 * Two modules find files next to themselves, which a single file no longer has:
 * version.js reads ../package.json (inlined here instead), and install.js points the systemd unit
 * at ../cli.js (the bundle itself instead). A change to either must fail the build, not ship.
 * Exported for scripts/build-binary.mjs, which bundles the same code as CommonJS.
 */
export const singleFile = {
  name: 'single-file',
  setup(b) {
    b.onLoad({ filter: /[\\/]dist[\\/]version\.js$/ }, () => {
      const pkg = JSON.parse(readFileSync(join(AGENT_ROOT, 'package.json'), 'utf8'));
      return {
        loader: 'js',
        contents: `export const AGENT_PACKAGE = ${JSON.stringify(pkg.name)};\nexport const AGENT_VERSION = ${JSON.stringify(pkg.version)};\n`,
      };
    });
    b.onLoad({ filter: /[\\/]dist[\\/]install[\\/]install\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      const ownCli = "new URL('../cli.js', import.meta.url)";
      if (!source.includes(ownCli)) throw new Error(`${args.path}: expected ${ownCli} (how install finds the CLI changed; update scripts/bundle.mjs)`);
      return { loader: 'js', contents: source.replace(ownCli, 'new URL(import.meta.url)') };
    });
  },
};

export async function bundle() {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run \`npx tsc -b\` (or \`npm run build\`) first`);
  await build({
    entryPoints: [ENTRY],
    outfile: BUNDLE,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    legalComments: 'none',
    logLevel: 'warning',
    plugins: [singleFile],
  });
  // esbuild keeps the entry's own `#!/usr/bin/env node` line; make sure it is there exactly once.
  let text = readFileSync(BUNDLE, 'utf8');
  if (!text.startsWith('#!')) text = `#!/usr/bin/env node\n${text}`;
  writeFileSync(BUNDLE, text);
  chmodSync(BUNDLE, 0o755);
  const sha256 = createHash('sha256').update(text).digest('hex');
  writeFileSync(`${BUNDLE}.sha256`, `${sha256}  dumont-agent.mjs\n`);
  return { path: BUNDLE, sha256, bytes: Buffer.byteLength(text) };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { path, sha256, bytes } = await bundle();
  process.stdout.write(`${path}: ${bytes} bytes, sha256 ${sha256}\n`);
}
