import http from 'node:http';

/**
 * One HTTP request with a hard deadline, on node:http rather than fetch: fetch pulls in undici,
 * about 10 MB of resident memory for a daemon that makes one request every 30 s. No keep-alive:
 * a fresh connection per beat cannot be reset under us by a server's idle timeout.
 */
export interface HttpRequest {
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  maxBodyBytes?: number;
}

export type HttpOutcome =
  | { kind: 'response'; status: number; headers: http.IncomingHttpHeaders; body: string }
  | { kind: 'timeout'; timeoutMs: number }
  | { kind: 'network-error'; code: string; message: string };

export async function httpRequest(url: string, request: HttpRequest): Promise<HttpOutcome> {
  const max = request.maxBodyBytes ?? 1024 * 1024;
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return { kind: 'network-error', code: 'EINVALIDURL', message: `invalid URL ${JSON.stringify(url)}` };
  }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    return { kind: 'network-error', code: 'EPROTOCOL', message: `unsupported protocol ${target.protocol}` };
  }
  // TLS is loaded only by agents that talk https (about 1 MB more resident).
  const send = target.protocol === 'https:' ? (await import('node:https')).request : http.request;
  return new Promise((resolve) => {
    let done = false;
    const finish = (outcome: HttpOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const headers: Record<string, string> = { accept: 'application/json', ...request.headers };
    if (request.body !== undefined) headers['content-length'] = String(Buffer.byteLength(request.body));
    const req = send(target, { method: request.method ?? 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > max) {
          req.destroy();
          finish({ kind: 'network-error', code: 'ETOOBIG', message: `response body over ${max} bytes` });
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => finish({ kind: 'response', status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e: NodeJS.ErrnoException) => finish({ kind: 'network-error', code: e.code ?? 'EUNKNOWN', message: e.message }));
    });
    const timer = setTimeout(() => {
      finish({ kind: 'timeout', timeoutMs: request.timeoutMs });
      req.destroy();
    }, request.timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => finish({ kind: 'network-error', code: e.code ?? 'EUNKNOWN', message: e.message }));
    req.end(request.body);
  });
}

export function describeHttpFailure(outcome: Exclude<HttpOutcome, { kind: 'response' }>): string {
  return outcome.kind === 'timeout' ? `no answer within ${outcome.timeoutMs / 1000} s` : `${outcome.code}: ${outcome.message}`;
}
