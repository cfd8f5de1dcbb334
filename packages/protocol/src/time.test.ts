import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseTimestamp } from './time.js';

describe('parseTimestamp', () => {
  it('reads what Date.parse reads, to the millisecond', () => {
    for (const text of ['2024-12-20T15:30:00Z', '2024-12-20T15:30:00.123Z', '2024-12-20T15:30:00.123456789+14:00', '2024-12-20t15:30:00z', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '2024-02-29T00:00:00-03:30']) {
      expect(parseTimestamp(text), text).toBe(Date.parse(text));
    }
  });

  it('a leap second is the last millisecond of its minute (Date.parse gives NaN)', () => {
    expect(Number.isNaN(Date.parse('2016-12-31T23:59:60Z'))).toBe(true);
    expect(parseTimestamp('2016-12-31T23:59:60Z')).toBe(Date.parse('2016-12-31T23:59:59.999Z'));
    expect(parseTimestamp('2016-12-31T23:59:60.5Z')).toBe(Date.parse('2016-12-31T23:59:59.999Z'));
  });

  it('refuses what is not a date-time', () => {
    for (const text of ['', 'yesterday', '2024-02-30T00:00:00Z', '2023-02-29T00:00:00Z', '2024-13-01T00:00:00Z', '2024-12-20T24:00:00Z', '2024-12-20T15:60:00Z', '2024-12-20T15:30:61Z', '2024-12-20T15:30:00', '2024-12-20T15:30:00+24:00', '24-12-20T15:30:00Z', '2024-12-20T15:30:00.Z']) {
      expect(parseTimestamp(text), text).toBeNull();
    }
  });

  it('round-trips every instant toISOString can print', () => {
    fc.assert(
      fc.property(fc.integer({ min: -62_135_596_800_000, max: 253_402_300_799_999 }), (ms) => {
        expect(parseTimestamp(new Date(ms).toISOString())).toBe(ms);
      }),
      { numRuns: 2000 },
    );
  });
});
