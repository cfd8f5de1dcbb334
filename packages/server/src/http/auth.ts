import { DumontError } from '@dumont/protocol';
import type { FastifyRequest } from 'fastify';
import type { Clock } from '../clock.js';
import type { Operator } from '../fleet/principal.js';
import { hashSecret, sameHash } from '../secrets.js';
import type { FleetStore } from '../store/store.js';

export const ADMIN_OWNER = 'admin';

declare module 'fastify' {
  interface FastifyRequest {
    /** SHA-256 of the bearer credential, computed once per request (auth and rate limiting share it). */
    credentialHash?: string | null;
    /** Set once an API key authenticated (an operator route). */
    operator?: Operator;
  }
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

/** Resolves API keys: the environment's admin key, or one stored (hashed) by `keys create` / first start. */
export class Authenticator {
  private readonly envAdminHash: string | null;

  constructor(
    private readonly store: FleetStore,
    adminKey: string | undefined,
  ) {
    this.envAdminHash = adminKey ? hashSecret(adminKey) : null;
  }

  async operator(request: FastifyRequest): Promise<Operator> {
    const hash = bearerHash(request);
    if (this.envAdminHash !== null && sameHash(hash, this.envAdminHash)) {
      return { kind: 'operator', owner: ADMIN_OWNER, admin: true };
    }
    const key = await this.store.findApiKey(hash);
    if (key && sameHash(key.key_hash, hash)) return { kind: 'operator', owner: key.owner, admin: key.is_admin === 1 };
    if ((await this.store.findInstanceIdByTokenHash(hash)) !== undefined) {
      throw new DumontError('forbidden', 'an agent token can only post heartbeats; use an API key', 'authorization');
    }
    throw new DumontError('unauthorized', 'unknown API key', 'authorization');
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
