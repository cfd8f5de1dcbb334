#!/usr/bin/env node
// Footprint of the built dumont-agent, in both forms it ships in: the npm agent (this node, the unit's
// V8 flags, dist/cli.js) and the single executable (dist/dumont-agent-linux-<arch>, run as it is).
// Each in turn beats against a loopback stub of the API at a short interval, so that a 20–30 s window
// holds many beats, while its resident memory and CPU are read from /proc; CPU is then scaled to the
// production cadence of one beat per 30 s. Start time is measured twice: `--version` (wall time to
// exit, median of 5) and spawn to the first heartbeat the stub receives. Run `npm run build` first.
//
//   node packages/agent/bench/agent-footprint.mjs            (BENCH_SECONDS=20, BENCH_INTERVAL=0.25)
//
// nvidia-smi is a small shell script printing eight GPUs: its CPU is reported apart (the agent's
// children), since a real nvidia-smi costs what the driver makes it cost, not what the agent does.
import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP_SECONDS = 3;
const INTERVAL = Number(process.env.BENCH_INTERVAL ?? 0.25);
const PRODUCTION_INTERVAL = 30;
const VERSION_RUNS = 5;
/** A first beat later than this means the agent is not beating at all: measuring it further is pointless. */
const FIRST_BEAT_TIMEOUT_SECONDS = 30;
const dist = (name) => fileURLToPath(new URL(`../dist/${name}`, import.meta.url));
const cli = dist('cli.js');
if (!existsSync(cli)) {
  console.error(`${cli} is missing: run npm run build first`);
  process.exit(1);
}

const tmp = mkdtempSync(join(tmpdir(), 'dumont-bench-'));
const smi = join(tmp, 'nvidia-smi');
const gpus = Array.from({ length: 8 }, (_, i) => `${i}, GPU-${i}0000000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, ${i === 0 ? 87 : 0}, 30000, 81559, 55, 350.5`).join('\n');
writeFileSync(smi, `#!/bin/sh\ncase "$*" in *compute-apps*) echo "4242, 30000, GPU-00000000-0000-0000-0000-000000000000" ;; *) cat <<'EOF_GPUS'\n${gpus}\nEOF_GPUS\n;; esac\n`);
chmodSync(smi, 0o755);
mkdirSync(join(tmp, 'jupyter'));

const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
const mb = (kb) => (kb / 1024).toFixed(1);
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

function stat(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // fields 14-17 of proc(5), counted from after the command name: utime stime cutime cstime
  return { self: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) };
}
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  const pss = Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? NaN);
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), pss };
}

/** Wall time from spawn to exit of `command … --version`, median of VERSION_RUNS runs (after one unmeasured run for the page cache). */
async function versionStart(command, prefix) {
  const once = () =>
    new Promise((resolve, reject) => {
      const started = performance.now();
      // stderr kept for a failure only: --lite-mode makes node warn on every start that it disabled wasm.
      const child = spawn(command, [...prefix, '--version'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      child.once('error', reject);
      child.once('exit', (code) =>
        code === 0 ? resolve({ ms: performance.now() - started, version: out.trim() }) : reject(new Error(`${command} --version exited with ${code}: ${err.trim().slice(-500)}`)),
      );
    });
  const first = await once();
  const times = [];
  for (let i = 0; i < VERSION_RUNS; i++) times.push((await once()).ms);
  return { ms: median(times), version: first.version };
}

/** One agent beating against its own stub for the measured window. */
async function measure(command, prefix) {
  let beats = 0;
  let firstBeatAt = null;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      beats += 1;
      firstBeatAt ??= performance.now();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ success: true, commands: [], hibernate_in_seconds: null, next_heartbeat_in: INTERVAL }));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  const stateDir = join(tmp, `state-${Date.now()}`);
  const spawnedAt = performance.now();
  const agent = spawn(
    command,
    [...prefix, '--instance-id', '1', '--api-url', url, '--nvidia-smi', smi, '--state-dir', stateDir, '--utmp-file', join(tmp, 'no-utmp'), '--jupyter-runtime-dir', join(tmp, 'jupyter'), '--log-level', 'warn'],
    { env: { ...process.env, DUMONT_AGENT_TOKEN: 'bench-token-0123456789' }, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  let exited = null;
  agent.once('exit', (code, signal) => (exited = signal ?? code));
  try {
    for (let waited = 0; firstBeatAt === null; waited += 0.01) {
      if (exited !== null) throw new Error(`the agent exited (${exited}) before its first heartbeat`);
      if (waited > FIRST_BEAT_TIMEOUT_SECONDS) throw new Error(`no heartbeat within ${FIRST_BEAT_TIMEOUT_SECONDS} s of the start`);
      await sleep(0.01);
    }
    await sleep(Math.max(0, WARMUP_SECONDS - (performance.now() - spawnedAt) / 1000));
    const start = { cpu: stat(agent.pid), beats, at: performance.now() };
    const samples = [];
    for (let t = 0; t < SECONDS; t++) {
      await sleep(1);
      if (exited !== null) throw new Error(`the agent exited (${exited}) while being measured`);
      samples.push(memory(agent.pid));
    }
    const end = { cpu: stat(agent.pid), beats, at: performance.now() };
    const wall = (end.at - start.at) / 1000;
    const n = end.beats - start.beats;
    const selfSeconds = (end.cpu.self - start.cpu.self) / ticks;
    const max = (k) => Math.max(...samples.map((s) => s[k]));
    return {
      beats: n,
      wall,
      firstBeatMs: firstBeatAt - spawnedAt,
      rss: max('rss'),
      rssLast: samples.at(-1).rss,
      anon: max('anon'),
      file: max('file'),
      pss: max('pss'),
      perBeat: selfSeconds / n,
      cpuShare: selfSeconds / wall,
      childPerBeat: (end.cpu.children - start.cpu.children) / ticks / n,
    };
  } finally {
    if (exited === null) {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.once('exit', r));
    }
    await new Promise((r) => server.close(r));
  }
}

/** The floor: an idle node process on this machine, for comparison. */
async function bareNodeRss() {
  const idle = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await sleep(1.5);
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${idle.pid}/status`, 'utf8'))?.[1] ?? NaN);
  idle.kill();
  return rss;
}

/** The single executable for this machine, or why there is none to measure. */
function singleExecutable() {
  const arch = { x64: 'x64', arm64: 'arm64' }[process.arch];
  if (process.platform !== 'linux' || !arch) return { skip: `no single executable is built for ${process.platform}-${process.arch}` };
  const name = `dumont-agent-linux-${arch}`;
  const path = dist(name);
  if (!existsSync(path)) return { skip: `dist/${name} is not built (\`npm run build\` makes it on a Linux x64 or arm64 host)` };
  const gz = existsSync(`${path}.gz`) ? statSync(`${path}.gz`).size : null;
  let builtWith = null;
  try {
    builtWith = JSON.parse(readFileSync(`${path}.stamp`, 'utf8')).node ?? null;
  } catch {
    // no stamp: the node it embeds is not known here
  }
  return { name, path, bytes: statSync(path).size, gz, builtWith };
}

// Run as the systemd unit runs each: node with the unit's V8 flags for the npm agent; the executable bare.
const { NODE_FLAGS } = await import(new URL('../dist/install/systemd.js', import.meta.url).href);
const binary = singleExecutable();
const agents = [{ label: `npm agent (node ${NODE_FLAGS.join(' ')} dist/cli.js)`, command: process.execPath, prefix: [...NODE_FLAGS, cli] }];
if (binary.path) agents.push({ label: `single executable (dist/${binary.name})`, command: binary.path, prefix: [] });

try {
  const rows = [];
  for (const agent of agents) {
    const version = await versionStart(agent.command, agent.prefix);
    rows.push({ ...agent, version, ...(await measure(agent.command, agent.prefix)) });
  }
  const bare = await bareNodeRss();
  const cadence = (r) => `${r.beats} beats in ${r.wall.toFixed(1)} s`;

  console.log(`\n## dumont-agent footprint (node ${process.version}, ${rows.map(cadence).join(' and ')}, one every ${INTERVAL} s)\n`);
  console.log(`| agent | RSS (VmRSS), max | PSS, max | private (RssAnon), max | CPU per beat (utime+stime) | CPU at one beat per ${PRODUCTION_INTERVAL} s (extrapolated) | \`--version\`, median of ${VERSION_RUNS} | spawn to first heartbeat |`);
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.label} | ${mb(r.rss)} MB | ${mb(r.pss)} MB | ${mb(r.anon)} MB | ${(r.perBeat * 1000).toFixed(2)} ms | ` +
        `${((r.perBeat / PRODUCTION_INTERVAL) * 100).toFixed(3)} % of a core | ${r.version.ms.toFixed(0)} ms | ${r.firstBeatMs.toFixed(0)} ms |`,
    );
  }
  console.log('');
  for (const r of rows) {
    console.log(
      `- ${r.label}, version ${r.version.version}: RSS last ${mb(r.rssLast)} MB, of which file-backed (RssFile, shared with other processes mapping the same file) ${mb(r.file)} MB max; ` +
        `${(r.cpuShare * 100).toFixed(2)} % of a core at this cadence; children (fake nvidia-smi scripts, not the agent) ${(r.childPerBeat * 1000).toFixed(2)} ms of CPU per beat.`,
    );
  }
  console.log(`- for comparison: an idle \`node -e 'setInterval(…)'\`: VmRSS ${mb(bare)} MB.`);
  // PSS charges each shared page to the processes mapping it in equal parts: the node binary's pages
  // are split with this script's own node (and any other node running here); the executable's are not.
  console.log('- PSS splits shared pages among the processes that map them: the npm agent shares the node binary with the node running this benchmark and any other node on the machine; the single executable is mapped by the agent alone.');
  if (binary.path) {
    const gz = binary.gz === null ? 'no .gz beside it' : `${binary.gz.toLocaleString('en-US')} bytes gzipped`;
    console.log(`- dist/${binary.name}: ${binary.bytes.toLocaleString('en-US')} bytes (${gz})${binary.builtWith ? `, node ${binary.builtWith} inside` : ''}; it runs without the npm agent's V8 flags (${NODE_FLAGS.join(' ')}): every argument goes to the agent, and node refuses --lite-mode in NODE_OPTIONS.`);
  } else {
    console.log(`- single executable not measured: ${binary.skip}.`);
  }
  console.log(`\ntargets: RSS ≤ 40 MB, CPU ≤ 0.5 % of a core at one beat per ${PRODUCTION_INTERVAL} s`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
