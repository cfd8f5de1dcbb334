import { createHmac, timingSafeEqual } from 'node:crypto';
import { DumontError } from '@dumont/protocol';
import type { FastifyRequest } from 'fastify';
import type { Clock } from '../clock.js';
import type { Operator } from '../fleet/principal.js';
import { hashSecret, newSecret, sameHash } from '../secrets.js';
import type { SessionRow, SessionStore } from '../store/sessions.js';
import type { FleetStore } from '../store/store.js';

export const ADMIN_OWNER = 'admin';

declare module 'fastify' {
  interface FastifyRequest {
    /** SHA-256 of the bearer credential, computed once per request (auth and rate limiting share it). */
    credentialHash?: string | null;
    /** Set once an API key authenticated (an operator route). */
    operator?: Operator;
    /** SHA-256 of the dashboard session cookie, computed once per request; null without one. */
    sessionHash?: string | null;
  }
}

/** The dashboard's session cookie: HttpOnly, SameSite=Strict; its value is a random token, never a key. */
export const SESSION_COOKIE = 'dumont_session';
/** Where a browser session sends its CSRF token on every state-changing request. */
export const CSRF_HEADER = 'x-csrf-token';
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The value of one cookie of the request's `Cookie` header, or undefined. */
export function cookieValue(request: FastifyRequest, name: string): string | undefined {
  const header = request.headers.cookie;
  if (typeof header !== 'string') return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The hash of the session cookie, or null without one. */
export function sessionHashOf(request: FastifyRequest): string | null {
  if (request.sessionHash !== undefined) return request.sessionHash;
  const token = cookieValue(request, SESSION_COOKIE);
  request.sessionHash = token ? hashSecret(token) : null;
  return request.sessionHash;
}

/**
 * The CSRF token of a session: derived from its secret token, so nothing more is stored and only the
 * holder of the cookie's value (the server, or the page it told) can know it.
 */
export function csrfTokenOf(sessionToken: string): string {
  return createHmac('sha256', sessionToken).update('dumont csrf v1').digest('base64url');
}

export interface OpenedSession {
  /** The cookie's value: shown to the browser once, stored only hashed. */
  token: string;
  csrfToken: string;
  owner: string;
  admin: boolean;
  expiresAt: number;
}

/** The hash of the bearer credential, or null without one; the clear value never leaves here. */
export function credentialHashOf(request: FastifyRequest): string | null {
  if (request.credentialHash !== undefined) return request.credentialHash;
  const header = request.headers.authorization;
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  request.credentialHash = match ? hashSecret(match[1]!) : null;
  return request.credentialHash;
}

export function bearerHash(request: FastifyRequest): string {
  const hash = credentialHashOf(request);
  if (hash === null) throw new DumontError('unauthorized', 'send Authorization: Bearer <API key or agent token>', 'authorization');
  return hash;
}

/**
 * Resolves operators: a bearer API key (the environment's admin key, or one stored hashed by `keys
 * create` / first start), or a dashboard session opened with one. A session is only as good as its
 * key: it ends when the key does, and a state-changing request made with it must also carry its CSRF
 * token and, when the browser names one, this server's origin.
 */
export class Authenticator {
  private readonly envAdminHash: string | null;

  constructor(
    private readonly store: FleetStore,
    adminKey: string | undefined,
    private readonly sessions?: { store: SessionStore; clock: Clock; ttlMs: number },
  ) {
    this.envAdminHash = adminKey ? hashSecret(adminKey) : null;
  }

  async operator(request: FastifyRequest): Promise<Operator> {
    if (credentialHashOf(request) === null && sessionHashOf(request) !== null) return this.sessionOperator(request);
    const hash = bearerHash(request);
    const operator = await this.keyOperator(hash);
    if (operator) return operator;
    if ((await this.store.findInstanceIdByTokenHash(hash)) !== undefined) {
      throw new DumontError('forbidden', 'an agent token can only post heartbeats; use an API key', 'authorization');
    }
    throw new DumontError('unauthorized', 'unknown API key', 'authorization');
  }

  /** The operator an API key (given by its hash) stands for, if it is one. */
  private async keyOperator(hash: string): Promise<Operator | undefined> {
    if (this.envAdminHash !== null && sameHash(hash, this.envAdminHash)) {
      return { kind: 'operator', owner: ADMIN_OWNER, admin: true };
    }
    const key = await this.store.findApiKey(hash);
    if (key && sameHash(key.key_hash, hash)) return { kind: 'operator', owner: key.owner, admin: key.is_admin === 1 };
    return undefined;
  }

  /** Logs in with an API key: a new session, or `unauthorized` naming `api_key`. */
  async openSession(apiKey: string): Promise<OpenedSession> {
    const sessions = this.requireSessions();
    const keyHash = hashSecret(apiKey);
    const operator = await this.keyOperator(keyHash);
    if (!operator) throw new DumontError('unauthorized', 'api_key: not a valid API key', 'api_key');
    const now = sessions.clock.now();
    const token = newSecret('dms');
    const expiresAt = now + sessions.ttlMs;
    await sessions.store.pruneExpired(now);
    await sessions.store.insert({
      token_hash: hashSecret(token),
      key_hash: keyHash,
      owner: operator.owner,
      is_admin: operator.admin ? 1 : 0,
      created_at: now,
      expires_at: expiresAt,
    });
    return { token, csrfToken: csrfTokenOf(token), owner: operator.owner, admin: operator.admin, expiresAt };
  }

  /** The session the request's cookie holds, with its CSRF token; `unauthorized` when there is none. */
  async currentSession(request: FastifyRequest): Promise<Omit<OpenedSession, 'token'>> {
    const { operator, session } = await this.liveSession(request, { csrf: false });
    return { csrfToken: csrfTokenOf(cookieValue(request, SESSION_COOKIE)!), owner: operator.owner, admin: operator.admin, expiresAt: session.expires_at };
  }

  /** Ends the request's session (logout); needs its CSRF token like any other change. */
  async closeSession(request: FastifyRequest): Promise<void> {
    const { session } = await this.liveSession(request);
    await this.requireSessions().store.delete(session.token_hash);
  }

  private async sessionOperator(request: FastifyRequest): Promise<Operator> {
    return (await this.liveSession(request)).operator;
  }

  /** The request's session and the operator its key stands for, read once; `unauthorized` when either is gone. */
  private async liveSession(request: FastifyRequest, options: { csrf: boolean } = { csrf: true }): Promise<{ operator: Operator; session: SessionRow }> {
    const sessions = this.requireSessions();
    const hash = sessionHashOf(request);
    const session = hash === null ? undefined : await sessions.store.find(hash, sessions.clock.now());
    if (!session) throw new DumontError('unauthorized', 'the session is over or unknown; log in again', 'cookie');
    const operator = await this.keyOperator(session.key_hash);
    if (!operator || operator.owner !== session.owner || operator.admin !== (session.is_admin === 1)) {
      await sessions.store.delete(session.token_hash);
      throw new DumontError('unauthorized', 'the API key of this session is no longer valid; log in again', 'cookie');
    }
    if (options.csrf && !SAFE_METHODS.has(request.method)) checkSameOriginAndCsrf(request);
    return { operator, session };
  }

  private requireSessions() {
    if (!this.sessions) throw new DumontError('not_found', 'sessions are not enabled on this server');
    return this.sessions;
  }
}

/** A change made with the session cookie must come from this server's page, not from another site. */
export function checkSameOriginAndCsrf(request: FastifyRequest): void {
  checkSameOrigin(request);
  const sent = request.headers[CSRF_HEADER];
  const token = cookieValue(request, SESSION_COOKIE);
  const expected = token === undefined ? '' : csrfTokenOf(token);
  const a = Buffer.from(typeof sent === 'string' ? sent : '');
  const b = Buffer.from(expected);
  if (expected === '' || a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new DumontError('forbidden', `${CSRF_HEADER}: a request made with the session cookie must carry the session's CSRF token`, CSRF_HEADER);
  }
}

/** When the browser names the page's origin, it must be this server's (scheme aside: proxies end TLS). */
export function checkSameOrigin(request: FastifyRequest): void {
  const origin = request.headers.origin;
  if (origin === undefined) return;
  let host: string | null;
  try {
    host = origin === 'null' ? null : new URL(origin).host;
  } catch {
    host = null;
  }
  const forwarded = request.headers['x-forwarded-host'];
  const hosts = [request.headers.host, typeof forwarded === 'string' ? forwarded.split(',')[0]!.trim() : undefined];
  if (host === null || !hosts.includes(host)) {
    throw new DumontError('forbidden', 'origin: requests with the session cookie must come from this server\'s own pages', 'origin');
  }
}

const FAILURE_WINDOW_MS = 60_000;

/**
 * Whom failures are counted against: an IPv4 address, or an IPv6 /64 (one host usually holds a whole
 * /64, so counting single IPv6 addresses would give it 2^64 fresh allowances).
 */
export function clientAddressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  // Embedded IPv4 (NAT64 and the like): one prefix stands for many clients, so keep the full address.
  if (!ip.includes(':') || ip.includes('.')) return ip;
  const [head = '', tail] = ip.split('%')[0]!.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

/**
 * The per-address limit on failed authentications. A rejected credential costs up to two database
 * lookups and a fresh random one is never seen twice, so a per-credential limit cannot stop a flood of
 * them: after `limit` failures in a minute from one address, its requests are refused before any
 * lookup. Failures are counted rather than requests, so thousands of agents behind one NAT address
 * beating with good tokens are never throttled; and a credential that authenticated recently still
 * passes while its address is blocked, so bad neighbours behind the same NAT do not lock it out.
 * Memory is bounded by `maxAddresses` and `maxTrusted` (oldest out).
 */
export class AuthFailureGuard {
  /** Insertion order is window-start order (a new window re-inserts), so the oldest is first. */
  private readonly failures = new Map<string, { since: number; count: number }>();
  /** Hashes of credentials that authenticated, least recently used first. */
  private readonly trusted = new Map<string, true>();

  constructor(
    private readonly limit: number,
    private readonly clock: Clock,
    private readonly maxAddresses = 50_000,
    private readonly maxTrusted = 50_000,
  ) {}

  get trackedAddresses(): number {
    return this.failures.size;
  }

  /** Seconds this request's address must wait, or 0 when it may be authenticated. */
  retryAfterSeconds(request: FastifyRequest): number {
    const entry = this.failures.get(clientAddressKey(request.ip));
    if (!entry || entry.count < this.limit) return 0;
    const left = entry.since + FAILURE_WINDOW_MS - this.clock.now();
    if (left <= 0) return 0;
    const hash = credentialHashOf(request);
    if (hash !== null && this.trusted.has(hash)) return 0;
    return Math.ceil(left / 1000);
  }

  /**
   * Learns from an answer: a 401, or a 403 before any key authenticated (an agent token of another
   * instance, or on an operator route), is a failed authentication; a 403 about what an authenticated
   * operator may do (another owner) is not.
   */
  observe(request: FastifyRequest, status: number): void {
    if (status === 401 || (status === 403 && request.operator === undefined)) this.failed(request);
    else if (request.operator !== undefined || status < 300) this.succeeded(request);
  }

  private failed(request: FastifyRequest): void {
    const hash = credentialHashOf(request);
    if (hash !== null) this.trusted.delete(hash);
    const key = clientAddressKey(request.ip);
    const now = this.clock.now();
    const entry = this.failures.get(key);
    if (entry && now < entry.since + FAILURE_WINDOW_MS) {
      entry.count += 1;
      return;
    }
    if (entry) this.failures.delete(key);
    this.evict(now);
    this.failures.set(key, { since: now, count: 1 });
  }

  private succeeded(request: FastifyRequest): void {
    const hash = credentialHashOf(request);
    if (hash === null) return;
    this.trusted.delete(hash);
    this.trusted.set(hash, true);
    if (this.trusted.size > this.maxTrusted) this.trusted.delete(this.trusted.keys().next().value!);
  }

  /** Expired windows sit at the front; under a flood from many addresses the oldest live ones go too. */
  private evict(now: number): void {
    for (const [key, entry] of this.failures) {
      if (now < entry.since + FAILURE_WINDOW_MS && this.failures.size < this.maxAddresses) break;
      this.failures.delete(key);
    }
  }
}
