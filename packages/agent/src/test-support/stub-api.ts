import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

/** A request the stub received, with the time it arrived (real clock, for spacing checks). */
export interface Received {
  at: number;
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: unknown;
  /** The status the stub answered with (undefined for a dropped connection). */
  status?: number;
}

export type Reply = { status: number; body?: unknown; headers?: Record<string, string>; destroy?: boolean; delayMs?: number };

/**
 * A real HTTP server on 127.0.0.1 standing in for the Dumont API where a test needs to control the
 * answers exactly (failures, Retry-After, malformed bodies). `reply` decides each answer.
 */
export interface StubApi {
  url: string;
  received: Received[];
  reply: (req: Received) => Reply;
  /** Stop accepting connections (refused), keeping the port for `resume`. */
  close(): Promise<void>;
  resume(): Promise<void>;
}

export const okReply = (over: Record<string, unknown> = {}): Reply => ({
  status: 200,
  body: { success: true, commands: [], hibernate_in_seconds: null, next_heartbeat_in: 30, ...over },
});

export async function startStubApi(reply: (req: Received) => Reply = () => okReply(), tls?: { key: string; cert: string }): Promise<StubApi> {
  let port = 0;
  let server: http.Server;
  const sockets = new Set<import('node:net').Socket>();
  const stub: StubApi = {
    url: '',
    received: [],
    reply,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
    async resume() {
      await listen();
    },
  };
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const handler: http.RequestListener = (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          let body: unknown = null;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            body = Buffer.concat(chunks).toString('utf8');
          }
          const received: Received = { at: Date.now(), method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
          stub.received.push(received);
          const r = stub.reply(received);
          if (!r.destroy) received.status = r.status;
          const send = () => {
            if (r.destroy) {
              req.socket.destroy();
              return;
            }
            res.writeHead(r.status, { 'content-type': 'application/json', ...r.headers });
            res.end(r.body === undefined ? '' : typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
          };
          if (r.delayMs) setTimeout(send, r.delayMs);
          else send();
        });
      };
      server = tls ? https.createServer(tls, handler) : http.createServer(handler);
      server.on('connection', (s) => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        port = (server.address() as AddressInfo).port;
        stub.url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
        resolve();
      });
    });
  await listen();
  return stub;
}
