import { DumontError } from '@dumont/protocol';
import type { FastifyRequest } from 'fastify';
import type { Operator } from '../fleet/principal.js';
import { hashSecret, sameHash } from '../secrets.js';
import type { FleetStore } from '../store/store.js';

export const ADMIN_OWNER = 'admin';

declare module 'fastify' {
  interface FastifyRequest {
    /** SHA-256 of the bearer credential, computed once per request (auth and rate limiting share it). */
    credentialHash?: string | null;
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
