import { readFileSync } from 'node:fs';

/** Where a function lives, shortened: a package name for dependencies, a repo path for our code. */
function place(url) {
  if (!url) return '(native)';
  const path = url.replace(/^file:\/\//, '');
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(path);
  if (dep) return `${dep[1]}/${dep[2]}`;
  const ours = /(packages\/.*)$/.exec(path);
  if (ours) return ours[1];
  return path.startsWith('node:') ? path : path.split('/').slice(-2).join('/');
}

function moduleOf(url) {
  if (!url) return '(native / GC / idle)';
  const path = url.replace(/^file:\/\//, '');
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path);
  if (dep) return dep[1];
  const ours = /packages\/([^/]+)\//.exec(path);
  if (ours) return `@dumont/${ours[1]}`;
  return path.startsWith('node:') ? 'node core' : path;
}

/** Self time per function and per module from a V8 .cpuprofile (what `node --cpu-prof` writes). */
export function summarizeProfile(file, top = 15) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0;
    self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + dt);
    total += dt;
  }
  const functions = new Map();
  const modules = new Map();
  let idle = 0;
  for (const [id, us] of self) {
    const { callFrame } = byId.get(id);
    if (callFrame.functionName === '(idle)') {
      idle += us;
      continue;
    }
    const key = `${callFrame.functionName || '(anonymous)'} ${place(callFrame.url)}:${callFrame.lineNumber + 1}`;
    functions.set(key, (functions.get(key) ?? 0) + us);
    const mod = callFrame.functionName === '(garbage collector)' ? '(garbage collector)' : moduleOf(callFrame.url);
    modules.set(mod, (modules.get(mod) ?? 0) + us);
  }
  const busy = total - idle;
  const rank = (m) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: Math.round(us / 1000), percentOfBusy: Math.round((us / busy) * 1000) / 10 }));
  return { file, busyMs: Math.round(busy / 1000), idleMs: Math.round(idle / 1000), functions: rank(functions), modules: rank(modules) };
}

export function formatProfile(summary) {
  const lines = [`CPU profile ${summary.file}: ${summary.busyMs} ms busy, ${summary.idleMs} ms idle`, '', '| self % | self ms | function |', '|---:|---:|---|'];
  for (const f of summary.functions) lines.push(`| ${f.percentOfBusy} | ${f.ms} | \`${f.name}\` |`);
  lines.push('', '| self % | module |', '|---:|---|');
  for (const m of summary.modules) lines.push(`| ${m.percentOfBusy} | ${m.name} |`);
  return lines.join('\n');
}
