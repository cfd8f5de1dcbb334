import { execFileSync } from 'node:child_process';
import { runCommand } from './processes.mjs';

export function which(binary) {
  try {
    return execFileSync('sh', ['-c', `command -v ${binary}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

/** Debian package → the binary it brings. */
export const TOOLS = {
  wrk: 'wrk',
  'etcd-server': 'etcd',
  'prometheus-pushgateway': 'prometheus-pushgateway',
};

/**
 * Installs whichever of `packages` is missing with apt-get, saying so. Returns, per package, the binary
 * path or the reason it is not there (the caller skips that peer instead of failing the run).
 */
export async function ensureTools(packages, say) {
  const missing = packages.filter((p) => !which(TOOLS[p]));
  if (missing.length > 0) {
    say(`installing ${missing.join(', ')} with apt-get (not found on this machine)…`);
    const env = { DEBIAN_FRONTEND: 'noninteractive' };
    let result = await runCommand('apt-get', ['install', '-y', '-q', ...missing], { env, timeoutMs: 300_000 }).catch((e) => ({ code: -1, stderr: e.message }));
    if (result.code !== 0) {
      // A fresh machine may have no package lists yet.
      say('apt-get install failed; running apt-get update and trying once more…');
      await runCommand('apt-get', ['update', '-q'], { env, timeoutMs: 300_000 }).catch(() => null);
      result = await runCommand('apt-get', ['install', '-y', '-q', ...missing], { env, timeoutMs: 300_000 }).catch((e) => ({ code: -1, stderr: e.message }));
    }
    if (result.code !== 0) say(`apt-get could not install ${missing.join(', ')}: ${(result.stderr || '').trim().split('\n').slice(-2).join(' ')}`);
  }
  const found = {};
  for (const p of packages) {
    const path = which(TOOLS[p]);
    found[p] = path ? { path } : { missing: `${TOOLS[p]} not installed (apt-get install ${p} failed)` };
  }
  return found;
}
