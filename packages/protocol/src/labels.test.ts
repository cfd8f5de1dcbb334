import { describe, expect, it } from 'vitest';
import { DumontError } from './errors.js';
import {
  checkLabelPatch,
  checkLabels,
  isLabelKey,
  isLabelValue,
  MAX_LABELS_PER_INSTANCE,
  matchesSelector,
  mergeLabels,
  parseLabelSelector,
} from './labels.js';

/** The DumontError a call throws, for its field and message. */
function refusal(call: () => unknown): DumontError {
  try {
    call();
  } catch (error) {
    if (error instanceof DumontError) return error;
    throw error;
  }
  throw new Error('expected a DumontError');
}

const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, `v${i}`]));

describe('label keys and values', () => {
  it.each([
    ['team', true],
    ['a', true],
    ['0', true],
    ['app.kubernetes.io_name-x', true],
    ['a'.repeat(63), true],
    ['a'.repeat(64), false],
    ['Team', false],
    ['', false],
    ['-team', false],
    ['team.', false],
    ['te am', false],
    ['team/x', false],
  ])('key %j valid: %s', (key, valid) => expect(isLabelKey(key)).toBe(valid));

  it.each([
    ['vision', true],
    ['', true],
    ['Vision-2.0_b', true],
    ['a'.repeat(63), true],
    ['a'.repeat(64), false],
    ['_x', false],
    ['x-', false],
    ['a b', false],
    ['a=b', false],
  ])('value %j valid: %s', (value, valid) => expect(isLabelValue(value)).toBe(valid));

  it('refuses a bad key naming it, a bad value naming its key, and more than the limit', () => {
    const key = refusal(() => checkLabels({ team: 'ok', Team: 'vision' }));
    expect(key).toMatchObject({ code: 'invalid_request', status: 400, field: 'labels.Team' });
    expect(key.message).toBe("labels.Team: a label key is lowercase letters, digits, '.', '_' or '-', at most 63 characters, starting and ending with a letter or digit");
    expect(refusal(() => checkLabels({ team: 'no spaces' }))).toMatchObject({ field: 'labels.team', message: expect.stringContaining('a label value') });
    expect(refusal(() => checkLabels({ team: 7 }))).toMatchObject({ field: 'labels.team' });
    expect(checkLabels(many(MAX_LABELS_PER_INSTANCE))).toEqual(many(MAX_LABELS_PER_INSTANCE));
    expect(refusal(() => checkLabels(many(MAX_LABELS_PER_INSTANCE + 1)))).toMatchObject({ field: 'labels', message: expect.stringContaining('at most 16') });
  });
});

describe('label merge patch', () => {
  it('removes keys set to null, sets the others, keeps keys not named', () => {
    const patch = checkLabelPatch({ kind: null, team: 'nlp', tier: '' });
    expect(mergeLabels({ team: 'vision', kind: 'notebook', owner: 'ana' }, patch)).toEqual({ team: 'nlp', owner: 'ana', tier: '' });
    // Removing a key that is not there is not an error.
    expect(mergeLabels({}, { gone: null })).toEqual({});
  });

  it('refuses a bad key or value in the patch, and a result over the limit', () => {
    expect(refusal(() => checkLabelPatch({ 'Bad Key': null }))).toMatchObject({ field: 'labels.Bad Key' });
    expect(refusal(() => checkLabelPatch({ team: 'a/b' }))).toMatchObject({ field: 'labels.team' });
    const full = many(MAX_LABELS_PER_INSTANCE);
    expect(refusal(() => mergeLabels(full, { extra: 'x' }))).toMatchObject({ field: 'labels', message: 'labels: at most 16 labels per instance; this would leave 17' });
    // One out, one in: still at the limit.
    expect(Object.keys(mergeLabels(full, { k0: null, extra: 'x' }))).toHaveLength(MAX_LABELS_PER_INSTANCE);
  });
});

describe('label selector', () => {
  it('parses equality, inequality, existence and absence; one string or a list', () => {
    expect(parseLabelSelector(undefined)).toEqual([]);
    expect(parseLabelSelector('team=vision')).toEqual([{ key: 'team', op: 'eq', value: 'vision' }]);
    expect(parseLabelSelector(['team=vision', 'kind!=batch', 'gpu', '!spot', 'tier='])).toEqual([
      { key: 'team', op: 'eq', value: 'vision' },
      { key: 'kind', op: 'ne', value: 'batch' },
      { key: 'gpu', op: 'exists', value: null },
      { key: 'spot', op: 'absent', value: null },
      { key: 'tier', op: 'eq', value: '' },
    ]);
  });

  it.each(['Team=vision', '=vision', '', '!', 'team=a=b', 'team=vi sion', '!Team', 'team==vision'])(
    'refuses %j naming the field and quoting the term',
    (term) => {
      const error = refusal(() => parseLabelSelector(['team=ok', term]));
      expect(error).toMatchObject({ code: 'invalid_request', field: 'label' });
      expect(error.message).toContain(`label: ${JSON.stringify(term)}`);
    },
  );

  it('refuses more terms than the limit', () => {
    expect(refusal(() => parseLabelSelector(Array.from({ length: 17 }, (_, i) => `k${i}`)))).toMatchObject({ field: 'label' });
  });

  it('matches as the store does: != also matches instances without the key', () => {
    const labels = { team: 'vision', kind: 'notebook' };
    const matches = (...terms: string[]) => matchesSelector(labels, parseLabelSelector(terms));
    expect(matches('team=vision', 'kind=notebook')).toBe(true);
    expect(matches('team=vision', 'kind=batch')).toBe(false);
    expect(matches('team!=nlp', 'tier!=gold')).toBe(true);
    expect(matches('team!=vision')).toBe(false);
    expect(matches('kind', '!tier')).toBe(true);
    expect(matches('tier')).toBe(false);
    expect(matches('!team')).toBe(false);
  });
});
