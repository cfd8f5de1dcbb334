import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One request as it arrived: what a provider or a notification really sent. */
export interface RecordedRequest {
  method: string;
  /** Path and query, as sent. */
  path: string;
  /** Lower-case names, as Node delivers them. */
  headers: Record<string, string>;
  body: string;
  /** Date.now() when it arrived. */
  at: number;
}

/** How the recorder answers: a status (with headers and a body), a hang, or a dropped connection. */
export type Reply =
  | { status: number; headers?: Record<string, string>; body?: string }
  | { hang: true }
  | { destroy: true };

export type ReplyRule = Reply | ((request: RecordedRequest) => Reply);

/**
 * A real HTTP server on loopback that records every request and answers as told: the counterpart of
 * the providers' and notifications' tests (no mocked fetch).
 */
export class HttpRecorder {
  readonly requests: RecordedRequest[] = [];
  private readonly once: ReplyRule[] = [];
  private rule: ReplyRule = { status: 200, headers: { 'content-type': 'application/json' }, body: '{"success": true}' };
  private readonly sockets = new Set<Socket>();
  private readonly waiters: (() => void)[] = [];

  private constructor(private readonly server: Server) {
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  static async start(): Promise<HttpRecorder> {
    const server = createServer();
    const recorder = new HttpRecorder(server);
    server.on('request', (req, res) => void recorder.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return recorder;
  }

  get url(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  /** How every later request is answered (until changed). */
  reply(rule: ReplyRule): this {
    this.rule = rule;
    return this;
  }

  /** How the next request is answered (queued; then back to `reply`). */
  replyOnce(rule: ReplyRule): this {
    this.once.push(rule);
    return this;
  }

  /** Resolves once at least `count` requests have arrived; rejects after `timeoutMs`. */
  async waitFor(count: number, timeoutMs = 10_000): Promise<RecordedRequest[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.requests.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`expected ${count} requests, got ${this.requests.length}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.requests;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    const recorded: RecordedRequest = {
      method: req.method ?? '',
      path: req.url ?? '',
      headers,
      body: Buffer.concat(chunks).toString('utf8'),
      at: Date.now(),
    };
    this.requests.push(recorded);
    for (const wake of this.waiters.splice(0)) wake();
    const rule = this.once.shift() ?? this.rule;
    const reply = typeof rule === 'function' ? rule(recorded) : rule;
    if ('hang' in reply) return; // the socket is destroyed by close()
    if ('destroy' in reply) {
      req.socket.destroy();
      return;
    }
    res.writeHead(reply.status, reply.headers ?? {});
    res.end(reply.body ?? '');
  }
}

/** A loopback URL where nothing listens: connections are refused. */
export async function refusingUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
