// Fixed-rate (open-loop) load: request k is due at t0 + k/rate whether or not earlier ones were answered,
// and its latency counts from that planned time, so a stalled server cannot hide its stall by slowing the
// sender (no coordinated omission). HTTP/1.1 is spoken over raw keep-alive sockets: node:http's client
// costs ~0.25 ms of CPU per request, most of a core at 3,333/s on a 2-core machine shared with the target.
// Usage: node bench/open-loop.mjs URL REQUEST_FILE RATE SECONDS [CONNECTIONS] [WARMUP_SECONDS]
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';

const [url, file, rateArg, secondsArg, connectionsArg = '64', warmupArg = '2'] = process.argv.slice(2);
const target = new URL(url);
if (!(target.hostname === 'localhost' || target.hostname.startsWith('127.'))) throw new Error('open-loop load goes to this machine only');
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const warmup = Number(warmupArg);
const connections = Number(connectionsArg);
if (!(rate > 0 && rate <= 100_000 && seconds > 0 && seconds <= 600 && warmup >= 0 && warmup <= 60 && connections >= 1 && connections <= 1024)) {
  throw new Error('bad rate, duration or connection count');
}

const entries = readFileSync(file, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((line) => {
    const [method, path, authorization, contentType, prefix, suffix, stamp] = line.split('\t');
    const unescape = (s) => s.replace(/\x01/g, '\n');
    const head = `${method} ${path} HTTP/1.1\r\nHost: ${target.host}\r\nContent-Type: ${contentType}\r\n${authorization ? `Authorization: ${authorization}\r\n` : ''}`;
    return { head, prefix: unescape(prefix), suffix: unescape(suffix), stamp: stamp === '1', last: 0 };
  });

const total = Math.round(rate * (warmup + seconds));
const measuredFrom = Math.round(rate * warmup);
const latencies = new Float64Array(total);
let measured = 0;
let answered = 0;
let errors = 0;
let non2xx = 0;
let position = 0;
let lastAnsweredAt = 0;

function nextRequest() {
  const e = entries[position];
  position = (position + 1) % entries.length;
  let body = e.prefix;
  if (e.stamp) {
    // The server ignores a beat that is not newer than the last one of its instance.
    const ms = Math.max(Date.now(), e.last + 1);
    e.last = ms;
    body = e.prefix + new Date(ms).toISOString() + e.suffix;
  }
  return Buffer.from(`${e.head}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

// Due requests waiting for a free connection, oldest first (a head index: shift() would be quadratic
// once an overloaded server lets thousands pile up).
const queue = [];
let queueHead = 0;
const waiting = () => queue.length - queueHead;
const idle = [];

function finish(request, ok, status) {
  answered += 1;
  if (!ok) errors += 1;
  else if (status < 200 || status >= 300) non2xx += 1;
  if (request.record) {
    lastAnsweredAt = performance.now();
    latencies[measured++] = lastAnsweredAt - request.plannedAt;
  }
}

/** One keep-alive connection answering one request at a time (responses carry Content-Length). */
function openConnection() {
  const conn = { socket: connect({ host: target.hostname, port: Number(target.port) }), buffer: Buffer.alloc(0), current: null, closed: false };
  conn.socket.setNoDelay(true);
  conn.socket.on('connect', () => pump(conn));
  conn.socket.on('data', (chunk) => {
    conn.buffer = conn.buffer.length ? Buffer.concat([conn.buffer, chunk]) : chunk;
    for (;;) {
      const end = conn.buffer.indexOf('\r\n\r\n');
      if (end < 0 || !conn.current) return;
      const head = conn.buffer.toString('latin1', 0, end);
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (conn.buffer.length < end + 4 + length) return;
      const status = Number(head.slice(9, 12));
      conn.buffer = conn.buffer.subarray(end + 4 + length);
      const request = conn.current;
      conn.current = null;
      finish(request, true, status);
      pump(conn);
    }
  });
  const fail = () => {
    if (conn.closed) return;
    conn.closed = true;
    if (conn.current) finish(conn.current, false, 0);
    conn.current = null;
    const i = idle.indexOf(conn);
    if (i >= 0) idle.splice(i, 1);
    if (!stopping) setTimeout(() => idle.push(openConnection()), 100);
  };
  conn.socket.on('error', fail);
  conn.socket.on('close', fail);
  return conn;
}

function pump(conn) {
  if (conn.closed || conn.current) return;
  const request = queueHead < queue.length ? queue[queueHead++] : undefined;
  if (queueHead > 4096 && queueHead * 2 > queue.length) {
    queue.splice(0, queueHead);
    queueHead = 0;
  }
  if (!request) {
    if (!idle.includes(conn)) idle.push(conn);
    return;
  }
  conn.current = request;
  conn.socket.write(nextRequest());
}

let stopping = false;
for (let i = 0; i < connections; i++) openConnection();

const interval = 1000 / rate;
const t0 = performance.now() + 200;
let k = 0;
await new Promise((resolve) => {
  const tick = () => {
    const now = performance.now();
    while (k < total && t0 + k * interval <= now) {
      queue.push({ plannedAt: t0 + k * interval, record: k >= measuredFrom });
      k += 1;
    }
    while (waiting() > 0 && idle.length > 0) pump(idle.pop());
    if (k < total) setTimeout(tick, Math.max(0, Math.min(1, t0 + k * interval - now)));
    else resolve();
  };
  setTimeout(tick, Math.max(0, t0 - performance.now()));
});
const sendEnd = performance.now();
const drainDeadline = sendEnd + 15_000;
while (answered < total && performance.now() < drainDeadline) {
  while (waiting() > 0 && idle.length > 0) pump(idle.pop());
  await new Promise((r) => setTimeout(r, 5));
}
stopping = true;
const unanswered = total - answered;

const sorted = latencies.slice(0, measured).sort();
const pct = (p) => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]);
const measuredStart = t0 + measuredFrom * interval;
process.stdout.write(
  `${JSON.stringify({
    rate,
    sentPerSecond: (total - measuredFrom) / ((sendEnd - measuredStart) / 1000),
    answeredPerSecond: measured / Math.max(0.001, (lastAnsweredAt - measuredStart) / 1000),
    requests: measured,
    unanswered,
    errors,
    non2xx,
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    p999: pct(99.9),
    max: sorted.length ? sorted[sorted.length - 1] : 0,
    seconds: (sendEnd - measuredStart) / 1000,
  })}\n`,
);
process.exit(0);
