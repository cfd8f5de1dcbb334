import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS } from './errors.js';

describe('error catalogue', () => {
  const doc = readFileSync(new URL('../../../docs/ERRORS.md', import.meta.url), 'utf8');
  const documented = [...doc.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);

  it('documents every code with its status, and nothing else', () => {
    const declared = Object.entries(ERRORS).map(([code, e]) => [code, e.status]);
    expect(documented).toEqual(declared);
  });

  it('uses only 4xx/5xx statuses', () => {
    for (const e of Object.values(ERRORS)) expect(e.status).toBeGreaterThanOrEqual(400);
  });
});
