import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BUILD_SCRIPT = fileURLToPath(new URL('../scripts/build.mjs', import.meta.url));
/** What the page may weigh on the wire, JavaScript alone (Preact and uPlot are about 25 KB of it; the Policy page about 3 KB). */
const JS_GZIP_BUDGET = 44 * 1024;

interface Manifest {
  files: Record<string, { bytes: number; gzip_bytes: number; sha256: string }>;
}

describe('dashboard build', () => {
  let out: string;
  let printed: string;
  beforeAll(() => {
    out = mkdtempSync(join(tmpdir(), 'dumont-dashboard-build-'));
    printed = execFileSync(process.execPath, [BUILD_SCRIPT, '--outdir', out], { encoding: 'utf8' });
  });
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('writes the page, its assets, their gzip twins and a manifest that matches them byte for byte', () => {
    expect(readdirSync(out).sort()).toEqual(
      ['LICENSES.txt', 'app.css', 'app.css.gz', 'app.js', 'app.js.gz', 'index.html', 'index.html.gz', 'manifest.json'].sort(),
    );
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as Manifest;
    expect(Object.keys(manifest.files).sort()).toEqual(['app.css', 'app.js', 'index.html']);
    for (const [name, entry] of Object.entries(manifest.files)) {
      const bytes = readFileSync(join(out, name));
      const gzipped = readFileSync(join(out, `${name}.gz`));
      expect(entry, name).toEqual({ bytes: bytes.length, gzip_bytes: gzipped.length, sha256: createHash('sha256').update(bytes).digest('hex') });
      expect(gunzipSync(gzipped).equals(bytes), `${name}.gz holds ${name}`).toBe(true);
    }
  });

  it('prints one line with the gzipped size of JS and CSS, and stays within the budget', () => {
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as Manifest;
    const js = manifest.files['app.js']!;
    const css = manifest.files['app.css']!;
    const lines = printed.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`${((js.gzip_bytes + css.gzip_bytes) / 1024).toFixed(1)} KB gzipped JS+CSS`);
    expect(js.gzip_bytes).toBeLessThan(JS_GZIP_BUDGET);
  });

  it('bundles Preact, uPlot and its CSS, and no TypeBox (the page imports wire types only)', async () => {
    const js = readFileSync(join(out, 'app.js'), 'utf8');
    const css = readFileSync(join(out, 'app.css'), 'utf8');
    // One self-contained module: esbuild reads it back and finds no import, static or dynamic. (A pattern
    // over the text would take the page's own strings, such as the query field "from", for an import.)
    const probe = await build({ stdin: { contents: js, loader: 'js' }, bundle: true, write: false, metafile: true, format: 'esm', logLevel: 'silent', external: ['*'] });
    expect(Object.values(probe.metafile.inputs).flatMap((input) => input.imports)).toEqual([]);
    expect(js).not.toContain('sinclair');
    expect(js).not.toContain('TypeBox');
    expect(js).not.toContain('sourceMappingURL');
    expect(css).toContain('.uplot');
    expect(css).toContain('.status-tabs');
    expect(readFileSync(join(out, 'LICENSES.txt'), 'utf8')).toMatch(/preact[\s\S]*MIT[\s\S]*uplot[\s\S]*MIT/i);
  });

  it('ships an index.html that the strict CSP allows: no inline script or style, assets under /ui/', () => {
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    expect(html).toMatch(/<html lang="en">/);
    expect(html).toContain('<link rel="stylesheet" href="/ui/app.css" />');
    expect(html).toContain('<script type="module" src="/ui/app.js"></script>');
    // Every script has a src and is empty; no <style> element and no style attribute.
    expect([...html.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)].every((m) => /\ssrc=/.test(m[0]) && m[1]!.trim() === '')).toBe(true);
    expect(html).not.toMatch(/<style\b|\sstyle=|\son[a-z]+=/i);
  });
});
