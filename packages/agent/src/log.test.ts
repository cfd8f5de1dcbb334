import { describe, expect, it } from 'vitest';
import { REDACTED, createLogger } from './log.js';

const capture = (options: Parameters<typeof createLogger>[0] = {}) => {
  const lines: string[] = [];
  const log = createLogger({ now: () => Date.parse('2024-12-20T15:30:00Z'), write: (l) => lines.push(l), ...options });
  return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
};

describe('logger', () => {
  it('writes one JSON object per line with time, level, message and fields', () => {
    const { log, lines, parsed } = capture();
    log.info('hello', { instance_id: 7 });
    expect(lines[0]!.endsWith('\n')).toBe(true);
    expect(parsed()).toEqual([{ time: '2024-12-20T15:30:00.000Z', level: 'info', msg: 'hello', instance_id: 7 }]);
  });

  it('drops lines under the level', () => {
    const { log, parsed } = capture({ level: 'warn' });
    log.debug('a');
    log.info('b');
    log.warn('c');
    log.error('d');
    expect(parsed().map((l) => l.msg)).toEqual(['c', 'd']);
  });

  it('masks the token wherever it appears, including inside errors and escaped strings', () => {
    const token = 'tok_"abc\\def_1234567890';
    const { log, lines } = capture({ secrets: [token] });
    log.error('request failed', { error: new Error(`bad header Bearer ${token}`), echoed: token });
    expect(lines.join('')).not.toContain('abc');
    expect(lines.join('').split(REDACTED)).toHaveLength(3);
  });

  it('masks a secret added later', () => {
    const { log, lines } = capture();
    log.addSecret('s3cr3t-token-value');
    log.info('x', { t: 's3cr3t-token-value' });
    expect(lines[0]).not.toContain('s3cr3t');
  });
});
