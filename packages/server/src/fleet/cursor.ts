import { DumontError } from '@dumont/protocol';

/** Opaque page cursors: clients pass back what they got; we keep the freedom to change the inside. */
export function encodeCursor(position: number): string {
  return Buffer.from(JSON.stringify({ p: position })).toString('base64url');
}

export function decodeCursor(cursor: string): number {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    const p = (parsed as { p?: unknown }).p;
    if (typeof p === 'number' && Number.isSafeInteger(p)) return p;
  } catch {
    // fall through to the error below
  }
  throw new DumontError('invalid_request', 'cursor: not a cursor this server issued', 'cursor');
}
