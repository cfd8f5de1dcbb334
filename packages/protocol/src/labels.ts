import { Type, type Static } from '@sinclair/typebox';
import { DumontError } from './errors.js';

// Instance labels and the selector that picks instances by them. Shared by the server (validation,
// list/savings filters) and by whatever later selects by label (policies), so both read terms alike.

/** Lowercase letters, digits, `.`, `_`, `-`; starts and ends with a letter or digit; at most 63 characters. */
export const LABEL_KEY_PATTERN = '^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$';
/** As a key but upper case allowed; the empty string is a value too. */
export const LABEL_VALUE_PATTERN = '^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$';
export const MAX_LABEL_LENGTH = 63;
/** Labels one instance may carry. */
export const MAX_LABELS_PER_INSTANCE = 16;
/** Terms one selector may hold: more than an instance has labels never narrows anything further. */
export const MAX_SELECTOR_TERMS = 16;

const KEY = new RegExp(LABEL_KEY_PATTERN);
const VALUE = new RegExp(LABEL_VALUE_PATTERN);

export const LABEL_KEY_RULE = "a label key is lowercase letters, digits, '.', '_' or '-', at most 63 characters, starting and ending with a letter or digit";
export const LABEL_VALUE_RULE = "a label value is empty or letters, digits, '.', '_' or '-', at most 63 characters, starting and ending with a letter or digit";

/** An instance's labels, key → value. */
export type Labels = Record<string, string>;

/**
 * Checked by `checkLabels` (and the service) rather than by the schema, so that a bad key is refused
 * with a message naming it (`labels.Team`) instead of as an unknown field.
 */
export const LabelsSchema = Type.Record(Type.String(), Type.String(), {
  description: `At most ${MAX_LABELS_PER_INSTANCE}. Keys: ${LABEL_KEY_PATTERN}; values: ${LABEL_VALUE_PATTERN}.`,
});

/** JSON merge patch: a key with null is removed, others set, keys not named are kept. */
export const LabelsPatchSchema = Type.Record(Type.String(), Type.Union([Type.String(), Type.Null()]), {
  description: `A key set to null is removed, others are set, keys not named are kept; at most ${MAX_LABELS_PER_INSTANCE} remain. Keys: ${LABEL_KEY_PATTERN}; values: ${LABEL_VALUE_PATTERN}.`,
});

/** Terms may repeat (`?label=a=b&label=c`): one string, or the list a repeated parameter gives. */
export const LabelSelectorQuery = Type.Union([Type.String({ maxLength: 200 }), Type.Array(Type.String({ maxLength: 200 }))], {
  description: '`key=value`, `key!=value` (also matches instances without the key), `key` (has it) or `!key` (lacks it); every term must match.',
});

export const isLabelKey = (key: string): boolean => KEY.test(key);
export const isLabelValue = (value: string): boolean => VALUE.test(value);

const bad = (field: string, message: string) => new DumontError('invalid_request', `${field}: ${message}`, field);

function checkEntry(field: string, key: string, value: unknown, nullable: boolean): void {
  if (!isLabelKey(key)) throw bad(`${field}.${key}`, LABEL_KEY_RULE);
  if (value === null && nullable) return;
  if (typeof value !== 'string') throw bad(`${field}.${key}`, nullable ? 'must be a string, or null to remove the label' : 'must be a string');
  if (!isLabelValue(value)) throw bad(`${field}.${key}`, LABEL_VALUE_RULE);
}

const tooMany = (field: string, count: number) =>
  bad(field, `at most ${MAX_LABELS_PER_INSTANCE} labels per instance; this would leave ${count}`);

/** A whole set of labels (registration): every key and value valid, at most MAX_LABELS_PER_INSTANCE. */
export function checkLabels(labels: Readonly<Record<string, unknown>>, field = 'labels'): Labels {
  const entries = Object.entries(labels);
  for (const [key, value] of entries) checkEntry(field, key, value, false);
  if (entries.length > MAX_LABELS_PER_INSTANCE) throw tooMany(field, entries.length);
  return { ...(labels as Labels) };
}

/** A merge patch's keys and values; the count is only known against the stored labels (`mergeLabels`). */
export function checkLabelPatch(patch: Readonly<Record<string, unknown>>, field = 'labels'): Record<string, string | null> {
  for (const [key, value] of Object.entries(patch)) checkEntry(field, key, value, true);
  return { ...(patch as Record<string, string | null>) };
}

/** `current` with `patch` applied (JSON merge patch), refused when more than the limit would remain. */
export function mergeLabels(current: Readonly<Labels>, patch: Readonly<Record<string, string | null>>, field = 'labels'): Labels {
  const merged: Labels = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete merged[key];
    else merged[key] = value;
  }
  const count = Object.keys(merged).length;
  if (count > MAX_LABELS_PER_INSTANCE) throw tooMany(field, count);
  return merged;
}

/** `eq`: key=value; `ne`: key!=value (or no such key); `exists`: key; `absent`: !key. */
export type LabelOp = 'eq' | 'ne' | 'exists' | 'absent';
export interface LabelTerm {
  key: string;
  op: LabelOp;
  /** The compared value (`eq`, `ne`); null for `exists` and `absent`. */
  value: string | null;
}

const SYNTAX = 'use key=value, key!=value, key or !key';

function parseTerm(term: string, field: string): LabelTerm {
  const quoted = JSON.stringify(term);
  let key: string;
  let op: LabelOp;
  let value: string | null = null;
  const ne = term.indexOf('!=');
  const eq = term.indexOf('=');
  if (ne !== -1 && ne < eq) {
    [key, op, value] = [term.slice(0, ne), 'ne', term.slice(ne + 2)];
  } else if (eq !== -1) {
    [key, op, value] = [term.slice(0, eq), 'eq', term.slice(eq + 1)];
  } else if (term.startsWith('!')) {
    [key, op] = [term.slice(1), 'absent'];
  } else {
    [key, op] = [term, 'exists'];
  }
  if (key === '') throw bad(field, `${quoted} names no label key; ${SYNTAX}`);
  if (!isLabelKey(key)) throw bad(field, `${quoted}: ${LABEL_KEY_RULE}`);
  if (value !== null && !isLabelValue(value)) throw bad(field, `${quoted}: ${LABEL_VALUE_RULE}`);
  return { key, op, value };
}

/**
 * The terms of a label selector (`?label=team=vision&label=kind!=batch`), all of which must match.
 * Throws `invalid_request` naming `field` and quoting the bad term.
 */
export function parseLabelSelector(terms: string | readonly string[] | undefined, field = 'label'): LabelTerm[] {
  if (terms === undefined) return [];
  const list = typeof terms === 'string' ? [terms] : terms;
  if (list.length > MAX_SELECTOR_TERMS) throw bad(field, `at most ${MAX_SELECTOR_TERMS} terms; got ${list.length}`);
  return list.map((term) => parseTerm(term, field));
}

/** Whether `labels` satisfies every term (the store's SQL does the same; this is its reference). */
export function matchesSelector(labels: Readonly<Labels>, terms: readonly LabelTerm[]): boolean {
  return terms.every(({ key, op, value }) => {
    const has = Object.prototype.hasOwnProperty.call(labels, key);
    switch (op) {
      case 'eq':
        return has && labels[key] === value;
      case 'ne':
        return !has || labels[key] !== value;
      case 'exists':
        return has;
      case 'absent':
        return !has;
    }
  });
}

export type LabelSelectorQuery = Static<typeof LabelSelectorQuery>;
