import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describeHttpFailure, httpRequest } from '../http-json.js';
import { pidAlive, userName, type PasswdEntry } from './proc.js';

/**
 * Running Jupyter servers, found the way `jupyter server list` finds them: the `jpserver-<pid>.json`
 * (Jupyter Server) and `nbserver-<pid>.json` (classic Notebook) files each server writes in its
 * runtime directory, with its URL and token. Each live one is asked, with its own token:
 *   GET /api/status                           — `last_activity`, `connections`; never counted as activity
 *   GET /api/kernels?no_track_activity=1      — `execution_state` of each kernel
 * Without `no_track_activity`, the agent's own polling would count as user activity and keep the
 * host awake forever.
 */
export interface JupyterServer {
  pid: number;
  url: string;
  owner: string | null;
  /** The server's own notion: kernel messages, API requests from clients, terminals, start time. */
  lastActivity: number | null;
  kernels: number;
  busyKernels: number;
  /** Open kernel connections: someone has a notebook open. */
  connections: number;
}

export interface JupyterReading {
  servers: JupyterServer[];
  /** Servers that could not be asked; their activity is unknown. */
  errors: string[];
}

interface RuntimeInfo {
  url?: string;
  token?: string;
  pid?: number;
  sock?: string;
  hostname?: string;
  port?: number;
  base_url?: string;
  secure?: boolean;
}

const RUNTIME_FILE = /^(?:jpserver|nbserver)-\d+\.json$/;

/** The default search path: $JUPYTER_RUNTIME_DIR, then each user's ~/.local/share/jupyter/runtime. */
export function defaultRuntimeDirs(env: NodeJS.ProcessEnv, passwd: readonly PasswdEntry[]): string[] {
  const dirs = new Set<string>();
  if (env.JUPYTER_RUNTIME_DIR) dirs.add(env.JUPYTER_RUNTIME_DIR);
  for (const p of passwd) {
    if (p.home && p.home !== '/' && (p.uid === 0 || p.uid >= 1000)) dirs.add(join(p.home, '.local/share/jupyter/runtime'));
  }
  return [...dirs];
}

const parseTime = (value: unknown): number | null => {
  if (typeof value !== 'string') return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
};

function baseUrl(info: RuntimeInfo): string | null {
  if (info.url) {
    const url = info.url.split('?')[0]!; // never carry a token in a URL we log
    return url.endsWith('/') ? url : `${url}/`;
  }
  if (!info.port) return null;
  const host = !info.hostname || info.hostname === '0.0.0.0' ? '127.0.0.1' : info.hostname;
  const path = info.base_url ?? '/';
  return `${info.secure ? 'https' : 'http'}://${host}:${info.port}${path.endsWith('/') ? path : `${path}/`}`;
}

async function getJson(url: string, token: string | undefined, timeoutMs: number): Promise<{ ok: true; body: unknown } | { ok: false; message: string }> {
  const outcome = await httpRequest(url, { timeoutMs, headers: token ? { authorization: `token ${token}` } : {} });
  if (outcome.kind !== 'response') return { ok: false, message: describeHttpFailure(outcome) };
  if (outcome.status !== 200) return { ok: false, message: `HTTP ${outcome.status}` };
  try {
    return { ok: true, body: JSON.parse(outcome.body) };
  } catch {
    return { ok: false, message: 'answer is not JSON' };
  }
}

export async function readJupyter(options: {
  runtimeDirs: readonly string[];
  timeoutMs: number;
  passwd: readonly PasswdEntry[];
  procRoot?: string;
}): Promise<JupyterReading> {
  const servers: JupyterServer[] = [];
  const errors: string[] = [];
  const seen = new Set<string>();
  for (const dir of options.runtimeDirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => RUNTIME_FILE.test(n)).sort();
    } catch {
      continue; // most users never ran Jupyter
    }
    for (const name of names) {
      const file = join(dir, name);
      let info: RuntimeInfo;
      let owner: string | null = null;
      try {
        info = JSON.parse(await readFile(file, 'utf8')) as RuntimeInfo;
        owner = userName((await stat(file)).uid, options.passwd);
      } catch {
        continue; // being written or removed right now
      }
      // A server killed without cleanup leaves its file behind.
      if (typeof info.pid !== 'number' || !pidAlive(info.pid, options.procRoot)) continue;
      const url = baseUrl(info);
      if (info.sock || !url) {
        errors.push(`${file}: unix-socket servers are not supported`);
        continue;
      }
      if (seen.has(url)) continue;
      seen.add(url);
      const status = await getJson(`${url}api/status`, info.token, options.timeoutMs);
      if (!status.ok) {
        errors.push(`server pid ${info.pid} at ${url}: /api/status: ${status.message}`);
        continue;
      }
      const kernels = await getJson(`${url}api/kernels?no_track_activity=1`, info.token, options.timeoutMs);
      if (!kernels.ok) {
        errors.push(`server pid ${info.pid} at ${url}: /api/kernels: ${kernels.message}`);
        continue;
      }
      const s = (status.body ?? {}) as { last_activity?: unknown; connections?: unknown };
      const list = Array.isArray(kernels.body) ? (kernels.body as Array<{ execution_state?: unknown; last_activity?: unknown }>) : [];
      const times = [parseTime(s.last_activity), ...list.map((k) => parseTime(k.last_activity))].filter((t): t is number => t !== null);
      servers.push({
        pid: info.pid,
        url,
        owner,
        lastActivity: times.length > 0 ? Math.max(...times) : null,
        kernels: list.length,
        busyKernels: list.filter((k) => k.execution_state === 'busy').length,
        connections: typeof s.connections === 'number' ? s.connections : 0,
      });
    }
  }
  return { servers, errors };
}
