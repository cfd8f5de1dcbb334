#!/usr/bin/env node
// Footprint of the built dumont-agent: resident memory and CPU while it beats against a loopback
// stub of the API, at a short interval so that a 20–30 s window holds many beats. CPU is then
// scaled to the production cadence of one beat per 30 s. Run `npm run build` first.
//
//   node packages/agent/bench/agent-footprint.mjs            (BENCH_SECONDS=20, BENCH_INTERVAL=0.25)
//
// nvidia-smi is a small shell script printing eight GPUs: its CPU is reported apart (the agent's
// children), since a real nvidia-smi costs what the driver makes it cost, not what the agent does.
import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP_SECONDS = 3;
const INTERVAL = Number(process.env.BENCH_INTERVAL ?? 0.25);
const PRODUCTION_INTERVAL = 30;
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
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

let beats = 0;
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    beats += 1;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ success: true, commands: [], hibernate_in_seconds: null, next_heartbeat_in: INTERVAL }));
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}`;

// Run as the systemd unit runs it: with the same V8 flags.
const { NODE_FLAGS } = await import(new URL('../dist/install/systemd.js', import.meta.url).href);
const agent = spawn(
  process.execPath,
  [...NODE_FLAGS, cli, '--instance-id', '1', '--api-url', url, '--nvidia-smi', smi, '--state-dir', join(tmp, 'state'), '--utmp-file', join(tmp, 'no-utmp'), '--jupyter-runtime-dir', join(tmp, 'jupyter'), '--log-level', 'warn'],
  { env: { ...process.env, DUMONT_AGENT_TOKEN: 'bench-token-0123456789' }, stdio: ['ignore', 'ignore', 'inherit'] },
);

const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const stat = () => {
  const s = readFileSync(`/proc/${agent.pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // fields 14-17 of proc(5), counted from after the command name: utime stime cutime cstime
  return { self: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) };
};
const memory = () => {
  const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
  const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  const pss = Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${agent.pid}/smaps_rollup`, 'utf8'))?.[1] ?? NaN);
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), pss };
};
const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

/** The floor: an idle node process on this machine, for comparison. */
async function bareNodeRss() {
  const idle = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await sleep(1.5);
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${idle.pid}/status`, 'utf8'))?.[1] ?? NaN);
  idle.kill();
  return rss;
}

try {
  await sleep(WARMUP_SECONDS);
  const start = { cpu: stat(), beats, at: performance.now() };
  const samples = [];
  for (let t = 0; t < SECONDS; t++) {
    await sleep(1);
    samples.push(memory());
  }
  const end = { cpu: stat(), beats, at: performance.now() };
  const wall = (end.at - start.at) / 1000;
  const n = end.beats - start.beats;
  const selfSeconds = (end.cpu.self - start.cpu.self) / ticks;
  const childSeconds = (end.cpu.children - start.cpu.children) / ticks;
  const perBeat = selfSeconds / n;
  const mb = (kb) => (kb / 1024).toFixed(1);
  const max = (k) => Math.max(...samples.map((s) => s[k]));
  const last = samples.at(-1);
  const bare = await bareNodeRss();

  console.log(`\n## dumont-agent footprint (node ${process.version}, ${n} beats in ${wall.toFixed(1)} s, one every ${INTERVAL} s)\n`);
  console.log('| measure | value |');
  console.log('|---|---|');
  console.log(`| RSS (VmRSS), max / last | ${mb(max('rss'))} / ${mb(last.rss)} MB |`);
  console.log(`| of which private (RssAnon), max | ${mb(max('anon'))} MB |`);
  console.log(`| of which file-backed (RssFile: node binary, shared), max | ${mb(max('file'))} MB |`);
  console.log(`| PSS, max | ${mb(max('pss'))} MB |`);
  console.log(`| for comparison: an idle \`node -e 'setInterval(…)'\` (VmRSS) | ${mb(bare)} MB |`);
  console.log(`| agent CPU per beat (utime+stime) | ${(perBeat * 1000).toFixed(2)} ms |`);
  console.log(`| agent CPU at this cadence | ${((selfSeconds / wall) * 100).toFixed(2)} % of a core |`);
  console.log(`| agent CPU at one beat per ${PRODUCTION_INTERVAL} s (extrapolated) | ${((perBeat / PRODUCTION_INTERVAL) * 100).toFixed(3)} % of a core |`);
  console.log(`| children CPU per beat (fake nvidia-smi scripts, not the agent) | ${((childSeconds / n) * 1000).toFixed(2)} ms |`);
  console.log(`\ntargets: RSS ≤ 40 MB, CPU ≤ 0.5 % of a core at one beat per ${PRODUCTION_INTERVAL} s`);
} finally {
  agent.kill('SIGTERM');
  await new Promise((r) => agent.once('exit', r));
  server.close();
  rmSync(tmp, { recursive: true, force: true });
}
