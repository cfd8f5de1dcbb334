// Bundles the dashboard into dist/ (or `--outdir DIR`): app.js, app.css, index.html, their gzip twins and
// a manifest of sizes and hashes. The server serves the three files from there.
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync, constants } from 'node:zlib';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ui = join(root, 'src', 'ui');
const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const dist = values.outdir ? resolve(values.outdir) : join(root, 'dist');

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const common = { bundle: true, minify: true, sourcemap: false, logLevel: 'warning', legalComments: 'none' };
const BUNDLED = ['preact', 'uplot'];
await build({
  ...common,
  entryPoints: [join(ui, 'main.tsx')],
  outfile: join(dist, 'app.js'),
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  // Only wire types come from the protocol package; a value import would drag TypeBox into the page.
  external: ['@sinclair/typebox'],
  banner: { js: '/*! Preact (MIT) and uPlot (MIT): see LICENSES.txt */' },
});
await build({
  ...common,
  entryPoints: [join(ui, 'app.css')],
  outfile: join(dist, 'app.css'),
  target: ['chrome100', 'firefox100', 'safari15'],
});
copyFileSync(join(ui, 'index.html'), join(dist, 'index.html'));
// Minified bundles drop the libraries' licence headers; their licences ship beside the bundle instead.
const require = createRequire(import.meta.url);
const licences = BUNDLED.map((name) => {
  const dir = dirname(require.resolve(`${name}/package.json`));
  return `${name}\n${'-'.repeat(name.length)}\n${readFileSync(join(dir, 'LICENSE'), 'utf8').trim()}\n`;
});
writeFileSync(join(dist, 'LICENSES.txt'), licences.join('\n'));

const manifest = { files: {} };
for (const name of ['app.js', 'app.css', 'index.html']) {
  const bytes = readFileSync(join(dist, name));
  const gzipped = gzipSync(bytes, { level: constants.Z_BEST_COMPRESSION });
  writeFileSync(join(dist, `${name}.gz`), gzipped);
  manifest.files[name] = {
    bytes: bytes.length,
    gzip_bytes: gzipped.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}
writeFileSync(join(dist, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const js = manifest.files['app.js'];
const css = manifest.files['app.css'];
console.log(
  `dashboard: ${kb(js.gzip_bytes + css.gzip_bytes)} gzipped JS+CSS (app.js ${kb(js.gzip_bytes)}, app.css ${kb(css.gzip_bytes)}) in ${relative(process.cwd(), dist) || '.'}`,
);
