#!/usr/bin/env node
/**
 * Builds the agent as one Linux executable that needs no Node on the host (Node's single executable
 * applications): the built agent (dist/cli.js) bundled as CommonJS into dist/dumont-agent.cjs, made
 * into a SEA blob and injected into a copy of the node running this script. Writes
 * dist/dumont-agent-linux-<arch>, its `sha256sum` line (.sha256) and a gzip copy (.gz) for the server
 * to serve compressed. Does nothing when the stamp says the same bundle was built by the same node.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { singleFile } from './bundle.mjs';

const AGENT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(AGENT_ROOT, 'dist');
const ENTRY = join(DIST, 'cli.js');
export const CJS_BUNDLE = join(DIST, 'dumont-agent.cjs');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const ARCH_NAMES = { x64: 'x64', arm64: 'arm64' };
/** Measured on the 99 MB x64 binary: level 9 takes 6.3 s (6: 2.0 s) for 35.29 MB (6: 35.43 MB); paid once per build, saved per download. */
const GZIP_LEVEL = 9;

/** The binary's name on this build host, or null where none is made (not Linux, or another arch). */
export function binaryName(platform = process.platform, arch = process.arch) {
  return platform === 'linux' && ARCH_NAMES[arch] ? `dumont-agent-linux-${ARCH_NAMES[arch]}` : null;
}

class StepError extends Error {}

async function step(name, work) {
  try {
    return await work();
  } catch (err) {
    if (err instanceof StepError) throw err;
    const detail = String(err?.message ?? err).split('\n').map((l) => l.trim()).filter(Boolean).join('; ');
    throw new StepError(`${name} failed: ${detail}`);
  }
}

const sha256Hex = (data) => createHash('sha256').update(data).digest('hex');

/**
 * esbuild's CommonJS output leaves `import.meta` empty. Every use of `import.meta.url` in the agent
 * means "this file", which for the bundle is `__filename` (the SEA runs its main script with
 * `__filename` = the executable). Any other use of import.meta fails the build instead of shipping.
 */
const IMPORT_META_URL = '__dumont_import_meta_url';

async function bundleCommonJs() {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run \`npx tsc -b\` (or \`npm run build\`) first`);
  const result = await build({
    entryPoints: [ENTRY],
    bundle: true,
    write: false,
    outfile: CJS_BUNDLE,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    legalComments: 'none',
    logLevel: 'silent',
    define: { 'import.meta.url': IMPORT_META_URL },
    banner: { js: `const ${IMPORT_META_URL} = require('node:url').pathToFileURL(__filename).href;` },
    plugins: [singleFile],
  });
  const importMeta = result.warnings.filter((w) => w.text.includes('import.meta'));
  if (importMeta.length) {
    const where = importMeta.map((w) => `${w.location?.file}:${w.location?.line}`).join(', ');
    throw new Error(`import.meta would be empty in the CommonJS bundle at ${where} (handle it in scripts/build-binary.mjs)`);
  }
  // The SEA compiles its main script as a CommonJS function body, where a `#!` line is a syntax error.
  return result.outputFiles[0].text.replace(/^#![^\n]*\n/, '');
}

/**
 * @returns null where no binary is made for this host; otherwise the binary, its sha256 and size,
 * and whether it was already up to date.
 */
export async function buildBinary({ log = (line) => process.stdout.write(`${line}\n`) } = {}) {
  const name = binaryName();
  if (!name) {
    log(`build-binary: no single executable for ${process.platform}-${process.arch} (only linux x64 and arm64); skipped`);
    return null;
  }
  const binary = join(DIST, name);
  const stampPath = join(DIST, `${name}.stamp`);
  const shaPath = `${binary}.sha256`;
  const gzPath = `${binary}.gz`;

  const cjs = await step('bundle (esbuild, CommonJS)', bundleCommonJs);
  // This script's own text too: a change to how the binary is made (SEA config, fuse) must rebuild it.
  const recipe = sha256Hex(readFileSync(fileURLToPath(import.meta.url)));
  const stamp = `${JSON.stringify({ cjs_sha256: sha256Hex(cjs), node: process.version, script_sha256: recipe })}\n`;
  const outputs = [binary, shaPath, gzPath, stampPath];
  if (outputs.every((p) => existsSync(p)) && readFileSync(stampPath, 'utf8') === stamp) {
    const sha256 = readFileSync(shaPath, 'utf8').split(' ')[0];
    const bytes = statSync(binary).size;
    log(`${binary}: up to date (${bytes} bytes, sha256 ${sha256})`);
    return { path: binary, sha256, bytes, upToDate: true };
  }

  // A stale stamp must never vouch for a half-rebuilt binary.
  rmSync(stampPath, { force: true });
  await step(`write ${CJS_BUNDLE}`, () => writeFileSync(CJS_BUNDLE, cjs));
  const work = mkdtempSync(join(tmpdir(), 'dumont-sea-'));
  try {
    const blob = join(work, 'sea-prep.blob');
    await step('make the SEA blob (node --experimental-sea-config)', () => {
      const config = join(work, 'sea-config.json');
      writeFileSync(config, JSON.stringify({ main: CJS_BUNDLE, output: blob, disableExperimentalSEAWarning: true }));
      run(process.execPath, ['--experimental-sea-config', config]);
      if (!existsSync(blob)) throw new Error('no blob written');
    });
    const copy = join(work, name);
    await step(`copy ${process.execPath}`, () => {
      copyFileSync(process.execPath, copy);
      chmodSync(copy, 0o755);
    });
    await step('inject the blob (postject)', () => {
      const postjectCli = join(dirname(createRequire(import.meta.url).resolve('postject')), 'cli.js');
      run(process.execPath, [postjectCli, copy, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE]);
    });
    const data = await step('read the binary back', () => readFileSync(copy));
    const sha256 = sha256Hex(data);
    await step(`write ${gzPath}`, () => writeFileSync(`${gzPath}.tmp`, gzipSync(data, { level: GZIP_LEVEL })));
    await step(`write ${binary}`, () => {
      // Copied, not renamed: the temp dir may be another filesystem. The final rename is atomic.
      copyFileSync(copy, `${binary}.tmp`);
      chmodSync(`${binary}.tmp`, 0o755);
      renameSync(`${binary}.tmp`, binary);
      renameSync(`${gzPath}.tmp`, gzPath);
      writeFileSync(shaPath, `${sha256}  ${name}\n`);
      writeFileSync(stampPath, stamp);
    });
    log(`${binary}: ${data.length} bytes, sha256 ${sha256}`);
    return { path: binary, sha256, bytes: data.length, upToDate: false };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Runs a build tool quietly (postject prints LIEF warnings on success) and reports its output on failure. */
function run(file, args) {
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    const output = `${r.stderr}\n${r.stdout}`.split('\n').filter((l) => l.trim() && !/^warning: Can't find string offset/.test(l));
    throw new Error(`exited with ${r.status ?? r.signal}${output.length ? `: ${output.slice(-3).join('; ')}` : ''}`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    const started = Date.now();
    const built = await buildBinary();
    if (built && !built.upToDate) process.stdout.write(`built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  } catch (err) {
    process.stderr.write(`build-binary: ${err instanceof StepError ? err.message : `failed: ${err?.message ?? err}`}\n`);
    process.exit(1);
  }
}
