import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readTokensFile, writeTokensFile } from './tokens-file.js';

describe('tokens file', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dumont-sim-tokens-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips instance ids and tokens and is readable by its owner only', () => {
    const file = join(dir, 'tokens.jsonl');
    writeTokensFile(file, [
      { instance_id: 1, hostname: 'a', agent_token: 'dmt_one' },
      { instance_id: 2, hostname: 'b', agent_token: 'dmt_two' },
    ]);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect([...readTokensFile(file)]).toEqual([
      [1, 'dmt_one'],
      [2, 'dmt_two'],
    ]);
  });

  it('names the line that is not a token entry', () => {
    const file = join(dir, 'bad.jsonl');
    writeFileSync(file, '{"instance_id":1,"agent_token":"x"}\nnot json\n');
    expect(() => readTokensFile(file)).toThrow(/bad.jsonl:2/);
    writeFileSync(file, '{"instance_id":"1","agent_token":"x"}\n');
    expect(() => readTokensFile(file)).toThrow(/:1: needs instance_id/);
  });
});
