import { DEFAULT_INSTANCE_SORT, DumontError, type InstanceSort } from '@dumont/protocol';
import type { InstanceSortValue } from '../store/store.js';

/** Opaque page cursors: clients pass back what they got; we keep the freedom to change the inside. */
export function encodeCursor(position: number): string {
  return Buffer.from(JSON.stringify({ p: position })).toString('base64url');
}

/** As registration and heartbeats accept. */
const MAX_HOSTNAME_LENGTH = 255;

const notACursor = () => new DumontError('invalid_request', 'cursor: not a cursor this server issued', 'cursor');

function parse(cursor: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // fall through to the error below
  }
  throw notACursor();
}

export function decodeCursor(cursor: string): number {
  const p = parse(cursor).p;
  if (typeof p === 'number' && Number.isSafeInteger(p)) return p;
  throw notACursor();
}

/** Where the next page of a sorted instance list starts: after this key value and instance id. */
export interface InstancePosition {
  value: InstanceSortValue;
  instanceId: number;
}

/**
 * A cursor of a sorted instance list: `{p}` for the default order (what every cursor was before sorts
 * existed, so those keep working), `{s, k, p}` for any other: the sort it belongs to, the last row's key
 * value and id.
 */
export function encodeInstanceCursor(sort: InstanceSort, position: InstancePosition): string {
  if (sort === DEFAULT_INSTANCE_SORT) return encodeCursor(position.instanceId);
  const body = sort.endsWith('instance_id') ? { s: sort, p: position.instanceId } : { s: sort, k: position.value, p: position.instanceId };
  return Buffer.from(JSON.stringify(body)).toString('base64url');
}

/** A key value that the sort could have issued: the store binds it as a parameter of that column's type. */
function validValue(sort: InstanceSort, value: unknown): value is InstanceSortValue {
  if (value === null) return true;
  switch (sort.replace(/^-/, '')) {
    case 'hostname':
      return typeof value === 'string' && value.length <= MAX_HOSTNAME_LENGTH && !value.includes('\u0000');
    case 'gpu_utilization':
      return typeof value === 'number' && Number.isFinite(value);
    default:
      // Times and seconds: integers, which PostgreSQL compares as bigint.
      return typeof value === 'number' && Number.isSafeInteger(value);
  }
}

/** The position a cursor holds; a 400 on `cursor` when it was not issued for this sort. */
export function decodeInstanceCursor(sort: InstanceSort, cursor: string): InstancePosition {
  const body = parse(cursor);
  const issuedFor = body.s === undefined ? DEFAULT_INSTANCE_SORT : body.s;
  if (issuedFor !== sort) {
    throw new DumontError('invalid_request', `cursor: issued for sort ${String(issuedFor)}, not ${sort}; start again without a cursor`, 'cursor');
  }
  const p = body.p;
  if (typeof p !== 'number' || !Number.isSafeInteger(p)) throw notACursor();
  if (sort.endsWith('instance_id')) return { value: p, instanceId: p };
  if (!validValue(sort, body.k)) throw notACursor();
  return { value: body.k, instanceId: p };
}
