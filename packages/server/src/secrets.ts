import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * API keys and agent tokens are 256-bit random strings, so a fast hash is enough to store them: there
 * is nothing to brute-force. Only the hash is kept; the clear value is shown once.
 */
export function newSecret(prefix: 'dmk' | 'dmt' | 'dms'): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Compares two hex hashes without leaking where they differ. */
export function sameHash(a: string, b: string): boolean {
  const ba = Buffer.from(a, 'hex');
  const bb = Buffer.from(b, 'hex');
  return ba.length === bb.length && ba.length > 0 && timingSafeEqual(ba, bb);
}
