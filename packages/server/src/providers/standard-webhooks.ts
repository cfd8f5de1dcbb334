import { createHmac, randomBytes } from 'node:crypto';

/**
 * Signing as the Standard Webhooks spec says (https://www.standardwebhooks.com), so receivers can
 * verify our calls with any of its libraries instead of code written for Dumont.
 */

const PREFIX = 'whsec_';
/** The spec recommends 24 to 64 bytes; a shorter key than 16 is a typo or a placeholder, not a secret. */
const MIN_KEY_BYTES = 16;
const NEW_KEY_BYTES = 32;
const BASE64_ALPHABET = /^[A-Za-z0-9+/]+$/;

const HOW_TO_MAKE_ONE = 'whsec_ followed by standard base64 of 24 to 64 random bytes, e.g. whsec_$(openssl rand -base64 32)';

/**
 * The key inside a `whsec_<base64>` secret. Errors name the variable and never repeat the secret: they
 * end up in logs. Standard base64 with or without padding is accepted, as the reference library does;
 * the URL-safe alphabet is not, because receivers' libraries would refuse it.
 */
export function parseWebhookSecret(secret: string, variable: string): Buffer {
  // A trailing newline from an env file or `echo` is not part of anyone's secret.
  const trimmed = secret.trim();
  if (!trimmed.startsWith(PREFIX)) {
    throw new Error(`${variable} must be a Standard Webhooks secret: ${HOW_TO_MAKE_ONE}`);
  }
  const encoded = trimmed.slice(PREFIX.length);
  if (!isBase64(encoded)) {
    throw new Error(`${variable} is not valid base64 after whsec_; expected ${HOW_TO_MAKE_ONE}`);
  }
  const key = Buffer.from(encoded, 'base64');
  if (key.length < MIN_KEY_BYTES) {
    throw new Error(`${variable} holds a ${key.length}-byte key; at least ${MIN_KEY_BYTES} bytes are needed: ${HOW_TO_MAKE_ONE}`);
  }
  return key;
}

/** Node's decoder skips stray characters silently; a secret with them would sign with another key. */
function isBase64(encoded: string): boolean {
  const data = encoded.replace(/=+$/, '');
  const padding = encoded.length - data.length;
  if (data === '' || !BASE64_ALPHABET.test(data) || data.length % 4 === 1) return false;
  return padding === 0 || (encoded.length % 4 === 0 && padding <= 2);
}

/** A fresh secret in the `whsec_` form, for the docs and the CLI. */
export function newWebhookSecret(): string {
  return `${PREFIX}${randomBytes(NEW_KEY_BYTES).toString('base64')}`;
}

/**
 * The three headers of a signed call. `id` must stay the same across retries (receivers dedupe on it);
 * the timestamp is the time of this attempt, since receivers refuse ones older than a few minutes.
 */
export function signedHeaders(key: Buffer, id: string, timestampSeconds: number, body: string): Record<string, string> {
  // Receivers parse the header as an integer and sign with that; a fraction would never verify.
  const timestamp = String(Math.floor(timestampSeconds));
  const signature = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`, 'utf8').digest('base64');
  return {
    'webhook-id': id,
    'webhook-timestamp': timestamp,
    'webhook-signature': `v1,${signature}`,
  };
}
