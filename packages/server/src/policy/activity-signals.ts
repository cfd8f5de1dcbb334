/**
 * External activity signals of a policy: things outside the GPU and the sessions that say a machine is in
 * use (a batch scheduler's queue, a hub's kernels). They can only add activity, never take it away, and a
 * signal that cannot be read counts as activity: hibernating a machine someone uses costs far more than
 * keeping an idle one up a while longer. Everything here is pure; the polling lives in fleet/signal-probe.
 */

export type SignalSpec =
  | { name: string; type: 'agent'; key: string }
  | { name: string; type: 'http'; url: string; timeout_seconds?: number; interval_seconds?: number };
export type HttpSignalSpec = Extract<SignalSpec, { type: 'http' }>;
export type SignalState = 'active' | 'idle' | 'unavailable';
export interface SignalReading {
  state: SignalState;
  detail: string;
  /** ms, server clock, when read */
  at: number;
}
export interface SignalVerdict {
  name: string;
  state: SignalState;
  detail: string;
}
export interface AgentSignalReport {
  key: string;
  state: SignalState;
  detail?: string;
}

export const DEFAULT_SIGNAL_INTERVAL_SECONDS = 60;
export const DEFAULT_SIGNAL_TIMEOUT_SECONDS = 5;
export const MAX_SIGNALS = 8;
export const MAX_SIGNAL_URL_LENGTH = 2048;
/**
 * A reading older than this many intervals is stale: one missed poll is ordinary (a slow endpoint, a
 * restart), three in a row means the signal is not being read at all.
 */
const STALE_AFTER_INTERVALS = 3;
/** Floor of the staleness window, so a short interval does not turn one slow poll into "stale". */
const MIN_STALE_MS = 90_000;

const NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const PLACEHOLDERS = ['instance_id', 'hostname', 'provider_instance_id'] as const;
type UrlVars = { instance_id: string; hostname: string | null; provider_instance_id: string };

/** How long an HTTP signal's reading stays good. */
export function signalStaleAfterMs(spec: HttpSignalSpec): number {
  const interval = spec.interval_seconds ?? DEFAULT_SIGNAL_INTERVAL_SECONDS;
  return Math.max(STALE_AFTER_INTERVALS * interval * 1000, MIN_STALE_MS);
}

function agentVerdict(spec: Extract<SignalSpec, { type: 'agent' }>, reports: readonly AgentSignalReport[] | undefined): SignalVerdict {
  const report = reports?.find((r) => r.key === spec.key);
  if (!report) {
    return { name: spec.name, state: 'unavailable', detail: `the agent did not report signal ${spec.key}; does it run --signal-hook ${spec.key}=…?` };
  }
  return { name: spec.name, state: report.state, detail: report.detail ?? '' };
}

function httpVerdict(spec: HttpSignalSpec, reading: SignalReading | undefined, now: number): SignalVerdict {
  if (!reading) return { name: spec.name, state: 'unavailable', detail: 'not read yet' };
  const age = now - reading.at;
  if (age > signalStaleAfterMs(spec)) {
    return { name: spec.name, state: 'unavailable', detail: `stale: last read ${Math.round(age / 1000)} s ago` };
  }
  return { name: spec.name, state: reading.state, detail: reading.detail };
}

/** A policy's signals on one beat. Any signal not clearly idle keeps the machine active; the reason names it. */
export function judgeSignals(
  specs: readonly SignalSpec[],
  agentReports: readonly AgentSignalReport[] | undefined,
  httpReadings: (spec: HttpSignalSpec) => SignalReading | undefined,
  now: number,
): { active: boolean; reason: string | null; verdicts: SignalVerdict[] } {
  const verdicts = specs.map((spec) => (spec.type === 'agent' ? agentVerdict(spec, agentReports) : httpVerdict(spec, httpReadings(spec), now)));
  const busy = verdicts.filter((v) => v.state !== 'idle');
  const reason = busy.length === 0 ? null : busy.map((v) => `signal ${JSON.stringify(v.name)} ${v.state}${v.detail ? `: ${v.detail}` : ''}`).join('; ');
  return { active: busy.length > 0, reason, verdicts };
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isIntIn = (value: unknown, min: number, max: number) => typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;

function urlProblem(url: unknown): string | null {
  if (typeof url !== 'string' || url === '') return 'must be an http(s) URL';
  if (url.length > MAX_SIGNAL_URL_LENGTH) return `must be at most ${MAX_SIGNAL_URL_LENGTH} characters`;
  for (const [, name] of url.matchAll(/\{([^{}]*)\}/g)) {
    if (!(PLACEHOLDERS as readonly string[]).includes(name!)) {
      return `unknown placeholder {${name}}; the placeholders are ${PLACEHOLDERS.map((p) => `{${p}}`).join(', ')}`;
    }
  }
  // The host is the admin's choice: an agent reports its own hostname, and must not pick which
  // server (an internal one, say) the server sends requests to.
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(url)?.[1] ?? '';
  if (authority.includes('{')) return 'placeholders may appear only in the path and the query, not in the host: the host is the admin\'s to choose';
  // Checked as it will be requested, with stand-ins that are valid wherever a placeholder may sit.
  const sample = expandSignalUrl(url, { instance_id: '1', hostname: 'host', provider_instance_id: 'p' })!;
  if (/[{}]/.test(sample)) return 'has an unmatched { or }';
  let parsed: URL;
  try {
    parsed = new URL(sample);
  } catch {
    return 'must be an absolute http(s) URL';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `must be http or https, not ${parsed.protocol.replace(/:$/, '')}`;
  // The URL is shown in the policy and in events; a password in it would be shown too.
  if (parsed.username !== '' || parsed.password !== '') return 'must not hold credentials (user:password@)';
  return null;
}

const AGENT_FIELDS = new Set(['name', 'type', 'key']);
const HTTP_FIELDS = new Set(['name', 'type', 'url', 'timeout_seconds', 'interval_seconds']);

/** The first problem of a policy's `signals`, naming the field (`signals[2].url`); null when they are fine. */
export function signalSpecProblem(specs: unknown[]): { field: string; message: string } | null {
  if (specs.length > MAX_SIGNALS) return { field: 'signals', message: `at most ${MAX_SIGNALS} signals per policy, got ${specs.length}` };
  const seen = new Set<string>();
  for (const [i, spec] of specs.entries()) {
    const at = `signals[${i}]`;
    if (!isRecord(spec)) return { field: at, message: 'must be an object' };
    if (typeof spec.name !== 'string' || !NAME.test(spec.name)) {
      return { field: `${at}.name`, message: "a signal name is 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit" };
    }
    if (seen.has(spec.name)) return { field: `${at}.name`, message: `duplicate signal name ${JSON.stringify(spec.name)}` };
    seen.add(spec.name);
    if (spec.type !== 'agent' && spec.type !== 'http') return { field: `${at}.type`, message: 'must be "agent" or "http"' };
    const known = spec.type === 'agent' ? AGENT_FIELDS : HTTP_FIELDS;
    const unknown = Object.keys(spec).find((k) => !known.has(k));
    if (unknown !== undefined) return { field: `${at}.${unknown}`, message: `unknown field for a signal of type ${spec.type}` };
    if (spec.type === 'agent') {
      if (typeof spec.key !== 'string' || !NAME.test(spec.key)) {
        return { field: `${at}.key`, message: "an agent signal key is 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit" };
      }
      continue;
    }
    const problem = urlProblem(spec.url);
    if (problem) return { field: `${at}.url`, message: problem };
    if (spec.timeout_seconds !== undefined && !isIntIn(spec.timeout_seconds, 1, 30)) {
      return { field: `${at}.timeout_seconds`, message: 'must be an integer from 1 to 30' };
    }
    if (spec.interval_seconds !== undefined && !isIntIn(spec.interval_seconds, 10, 3600)) {
      return { field: `${at}.interval_seconds`, message: 'must be an integer from 10 to 3600' };
    }
  }
  return null;
}

/**
 * The URL to poll for one instance; values are URL-encoded, an unknown hostname is empty. null when a
 * value is "." or "..": a URL parser takes those (encoded or not) for path segments, so such a URL
 * would read another path than the instance's. The signal then goes unread, which counts as active.
 */
export function expandSignalUrl(url: string, vars: UrlVars): string | null {
  let segment = false;
  const expanded = url.replace(/\{(instance_id|hostname|provider_instance_id)\}/g, (_, name: (typeof PLACEHOLDERS)[number]) => {
    const value = vars[name] ?? '';
    if (value === '.' || value === '..') segment = true;
    return encodeURIComponent(value);
  });
  return segment ? null : expanded;
}
