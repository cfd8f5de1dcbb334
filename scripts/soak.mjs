#!/usr/bin/env node
// Runs the adversarial suites (`*.adversarial.test.ts`) and writes what they measured to
// docs/RELIABILITY.md. `npm run soak` runs them at soak size (DUMONT_SOAK=1); `npm run soak -- --quick`
// at the size `npm test` runs them; `--render-only` rewrites the page from the figures already kept.
// Each run keeps the other size's figures (docs/reliability-figures.json).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'render-only': { type: 'boolean', default: false } } });
const mode = values.quick ? 'test' : 'soak';
const root = new URL('..', import.meta.url).pathname;
const figuresFile = join(root, 'docs/reliability-figures.json');
const reportFile = join(root, 'docs/RELIABILITY.md');
const SIZES = [
  ['test', '`npm test` size', (file) => `npx vitest run ${file}`],
  ['soak', 'soak size', (file) => `DUMONT_SOAK=1 npx vitest run ${file}`],
];

const git = (args) => spawnSync('git', args, { cwd: root, encoding: 'utf8' }).stdout.trim();
const all = existsSync(figuresFile) ? JSON.parse(readFileSync(figuresFile, 'utf8')) : {};
if (!values['render-only']) all[mode] = runSuites();
writeFileSync(figuresFile, `${JSON.stringify(all, null, 2)}\n`);
writeFileSync(reportFile, render(all));
console.log('soak: docs/RELIABILITY.md written');

function runSuites() {
  // This page and its figures are rewritten by every run; any other change means the run was not of HEAD.
  const dirty = git(['status', '--porcelain', '--', '.', ':!docs/RELIABILITY.md', ':!docs/reliability-figures.json']);
  const dir = mkdtempSync(join(tmpdir(), 'dumont-soak-'));
  const out = join(dir, 'figures.jsonl');
  const started = Date.now();
  const run = spawnSync('npx', ['vitest', 'run', 'adversarial', '--testTimeout=3600000', '--hookTimeout=600000'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, DUMONT_RELIABILITY_OUT: out, ...(mode === 'soak' ? { DUMONT_SOAK: '1' } : {}) },
  });
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  const lines = existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  rmSync(dir, { recursive: true, force: true });
  if (run.status !== 0) {
    console.error(`soak: the adversarial suites failed (exit ${run.status}); docs/RELIABILITY.md is left as it was`);
    process.exit(run.status ?? 1);
  }
  console.log(`soak: ${lines.length} figures from the ${mode} run (${minutes} min)`);
  return {
    commit: git(['rev-parse', '--short', 'HEAD']) + (dirty ? ' (with uncommitted changes)' : ''),
    date: new Date().toISOString().slice(0, 10),
    machine: `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
    minutes,
    figures: lines.map(({ suite, figure, value, note, file }) => ({ suite, figure, value, note, file })),
  };
}

function render(runs) {
  const out = [
    '# Reliability',
    '',
    'What the adversarial suites (`*.adversarial.test.ts`) measured, written by the run itself:',
    '`npm run soak` (soak size) or `npm run soak -- --quick` (the size `npm test` runs them at). A figure',
    'that states a bound (5xx answers, promises broken, beats lost) is asserted by its test: the run fails,',
    'and this page is not written, when it does not hold. Rerun one suite with the command under its table.',
    '',
    '| run | commit | date | machine | minutes |',
    '|---|---|---|---|---|',
  ];
  for (const [key, label] of SIZES) {
    const r = runs[key];
    out.push(r ? `| ${label} | ${r.commit} | ${r.date} | ${r.machine} | ${r.minutes} |` : `| ${label} | not run yet | | | |`);
  }
  const suites = [];
  for (const [key] of SIZES) for (const f of runs[key]?.figures ?? []) if (!suites.includes(f.suite)) suites.push(f.suite);
  for (const suite of suites) {
    out.push('', `## ${suite}`, '', `| figure | ${SIZES.map(([, label]) => label).join(' | ')} |`, `|---|${SIZES.map(() => '---').join('|')}|`);
    const rows = [];
    const files = new Set();
    const notes = [];
    for (const [key, label] of SIZES) {
      for (const f of runs[key]?.figures ?? []) {
        if (f.suite !== suite) continue;
        if (f.file) files.add(f.file);
        const note = f.note ? `${label}: ${f.note}` : null;
        if (note && !notes.includes(note)) notes.push(note);
        let row = rows.find((r) => r.label === f.figure);
        if (!row) rows.push((row = { label: f.figure, values: {} }));
        row.values[key] = f.value;
      }
    }
    for (const row of rows) out.push(`| ${row.label} | ${SIZES.map(([key]) => row.values[key] ?? '').join(' | ')} |`);
    if (notes.length > 0) out.push('', ...notes.map((n) => `- ${n}`));
    for (const file of files) out.push('', `Reproduce: \`${SIZES[0][2](file)}\` · soak: \`${SIZES[1][2](file)}\``);
  }
  return `${out.join('\n')}\n`;
}
