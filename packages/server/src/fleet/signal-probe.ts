/**
 * Reads one HTTP activity signal. The answer feeds a decision to hibernate, so anything short of a clear
 * `{"active": false}` from the URL that was configured is `unavailable` (which keeps the machine up):
 * a redirect is not followed (it may lead anywhere), and a slow or huge answer is cut off rather than
 * waited for. Never throws.
 */

export type ProbeState = 'active' | 'idle' | 'unavailable';
export interface ProbeResult {
  state: ProbeState;
  detail: string;
}

export const MAX_SIGNAL_BODY_BYTES = 64 * 1024;
export const MAX_SIGNAL_DETAIL = 256;

class BodyTooLarge extends Error {}

const unavailable = (detail: string): ProbeResult => ({ state: 'unavailable', detail });
const clip = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

function formatSeconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : Number(s.toFixed(1))} s`;
}

/** Reads at most `max` bytes; one more and the rest is not downloaded. */
async function readCapped(response: Response, max: number): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max) {
    await response.body?.cancel().catch(() => undefined);
    throw new BodyTooLarge();
  }
  if (!response.body) return Buffer.alloc(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw new BodyTooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

function describeFailure(error: unknown, timeoutMs: number): string {
  const e = error as Error & { cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return `timed out after ${formatSeconds(timeoutMs)}`;
  const code = e.cause?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return 'connection reset';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host not found';
  if (code === 'ERR_INVALID_URL') return 'invalid URL';
  return clip(code ?? e.cause?.message ?? e.message, MAX_SIGNAL_DETAIL);
}

function judgeBody(bytes: Buffer): ProbeResult {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    return unavailable('not JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return unavailable('not a JSON object');
  const { active, detail } = json as { active?: unknown; detail?: unknown };
  if (typeof active !== 'boolean') return unavailable('"active" is not a boolean');
  if (detail !== undefined && detail !== null && typeof detail !== 'string') return unavailable('"detail" is not a string');
  return { state: active ? 'active' : 'idle', detail: clip(typeof detail === 'string' ? detail.trim() : '', MAX_SIGNAL_DETAIL) };
}

/** GETs a signal URL; the whole exchange, body included, ends within `timeoutMs`. */
export async function probeSignal(url: string, timeoutMs: number): Promise<ProbeResult> {
  try {
    const response = await fetch(url, {
      method: 'GET',
      headers: { accept: 'application/json' },
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.status < 200 || response.status > 299) {
      await response.body?.cancel().catch(() => undefined);
      return unavailable(response.status >= 300 && response.status < 400 ? `HTTP ${response.status} (redirects are not followed)` : `HTTP ${response.status}`);
    }
    return judgeBody(await readCapped(response, MAX_SIGNAL_BODY_BYTES));
  } catch (error) {
    if (error instanceof BodyTooLarge) return unavailable(`body over ${MAX_SIGNAL_BODY_BYTES / 1024} KiB`);
    return unavailable(describeFailure(error, timeoutMs));
  }
}
