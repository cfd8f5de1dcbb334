import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_SIGNAL_BODY_BYTES, probeSignal } from './signal-probe.js';

/** A real HTTP server on loopback; each path is one behaviour of a signal endpoint. */
const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
  '/true': (_, res) => json(res, 200, '{"active": true, "detail": "2 kernels busy"}'),
  '/false': (_, res) => json(res, 200, '{"active": false}'),
  '/long-detail': (_, res) => json(res, 200, JSON.stringify({ active: false, detail: 'd'.repeat(1000) })),
  '/500': (_, res) => json(res, 500, '{"active": false}'),
  '/503': (_, res) => json(res, 503, 'maintenance'),
  '/hang': () => {
    // Never answers: only the probe's deadline ends it.
  },
  '/hang-body': (_, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"active": ');
  },
  '/malformed': (_, res) => json(res, 200, '{"active": fal'),
  '/yes': (_, res) => json(res, 200, '{"active": "yes"}'),
  '/array': (_, res) => json(res, 200, '[true]'),
  '/bad-detail': (_, res) => json(res, 200, '{"active": false, "detail": 3}'),
  '/302': (_, res) => {
    res.writeHead(302, { location: '/false' });
    res.end();
  },
  '/big': (_, res) => json(res, 200, JSON.stringify({ active: false, pad: 'x'.repeat(MAX_SIGNAL_BODY_BYTES) })),
  '/big-chunked': (_, res) => {
    // No content-length: the cap has to be enforced while reading.
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write(`{"active": false, "pad": "${'x'.repeat(MAX_SIGNAL_BODY_BYTES)}`);
    res.end('"}');
  },
  '/just-under': (_, res) => {
    const head = '{"active": true, "pad": "';
    json(res, 200, `${head}${'x'.repeat(MAX_SIGNAL_BODY_BYTES - head.length - 2)}"}`);
  },
};
const seen: { path: string; accept: string | undefined }[] = [];
const json = (res: ServerResponse, status: number, body: string) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(body);
};

let server: Server;
let base: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ path: req.url ?? '', accept: req.headers.accept });
    const route = routes[req.url ?? ''];
    if (route) route(req, res);
    else json(res, 404, '{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe('probeSignal', () => {
  it('{"active": true} is active with its detail, asking for JSON', async () => {
    expect(await probeSignal(`${base}/true`, 2000)).toEqual({ state: 'active', detail: '2 kernels busy' });
    expect(seen.find((s) => s.path === '/true')?.accept).toBe('application/json');
  });

  it('{"active": false} is idle', async () => {
    expect(await probeSignal(`${base}/false`, 2000)).toEqual({ state: 'idle', detail: '' });
  });

  it('a long detail is cut to 256 characters', async () => {
    const result = await probeSignal(`${base}/long-detail`, 2000);
    expect(result.state).toBe('idle');
    expect(result.detail).toHaveLength(256);
  });

  it('a non-2xx status is unavailable, whatever the body says', async () => {
    expect(await probeSignal(`${base}/500`, 2000)).toEqual({ state: 'unavailable', detail: 'HTTP 500' });
    expect(await probeSignal(`${base}/503`, 2000)).toEqual({ state: 'unavailable', detail: 'HTTP 503' });
  });

  it('no answer within the timeout is unavailable, and the probe returns at the deadline', async () => {
    for (const path of ['/hang', '/hang-body']) {
      const started = performance.now();
      expect(await probeSignal(`${base}${path}`, 200)).toEqual({ state: 'unavailable', detail: 'timed out after 0.2 s' });
      expect(performance.now() - started).toBeLessThan(2000);
    }
  });

  it('a body that is not JSON, or not the expected shape, is unavailable', async () => {
    expect(await probeSignal(`${base}/malformed`, 2000)).toEqual({ state: 'unavailable', detail: 'not JSON' });
    expect(await probeSignal(`${base}/yes`, 2000)).toEqual({ state: 'unavailable', detail: '"active" is not a boolean' });
    expect(await probeSignal(`${base}/array`, 2000)).toEqual({ state: 'unavailable', detail: 'not a JSON object' });
    expect(await probeSignal(`${base}/bad-detail`, 2000)).toEqual({ state: 'unavailable', detail: '"detail" is not a string' });
  });

  it('a redirect is not followed', async () => {
    const before = seen.filter((s) => s.path === '/false').length;
    const result = await probeSignal(`${base}/302`, 2000);
    expect(result.state).toBe('unavailable');
    expect(result.detail).toMatch(/^HTTP 302/);
    expect(seen.filter((s) => s.path === '/false')).toHaveLength(before);
  });

  it('a body over 64 KiB is unavailable, declared or streamed; one just under is read', async () => {
    expect(await probeSignal(`${base}/big`, 2000)).toEqual({ state: 'unavailable', detail: 'body over 64 KiB' });
    expect(await probeSignal(`${base}/big-chunked`, 2000)).toEqual({ state: 'unavailable', detail: 'body over 64 KiB' });
    expect((await probeSignal(`${base}/just-under`, 2000)).state).toBe('active');
  });

  it('a refused connection is unavailable', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    expect(await probeSignal(`http://127.0.0.1:${port}/busy`, 2000)).toEqual({ state: 'unavailable', detail: 'connection refused' });
  });

  it('an unusable URL is unavailable, not a throw', async () => {
    expect(await probeSignal('http:///busy?host=', 2000)).toMatchObject({ state: 'unavailable' });
    expect(await probeSignal('not a url', 2000)).toEqual({ state: 'unavailable', detail: 'invalid URL' });
  });
});
