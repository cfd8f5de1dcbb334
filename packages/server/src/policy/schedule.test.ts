import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  compileSchedule,
  isWithinActiveHours,
  nextScheduleChange,
  scheduleProblem,
  type CompiledSchedule,
  type ScheduleSpec,
} from './schedule.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const utc = (text: string) => Date.parse(text);

const spec = (timezone: string, active: string[], extra: Partial<ScheduleSpec> = {}): ScheduleSpec => ({
  timezone,
  active,
  outside: 'hibernate',
  ...extra,
});
const compile = (timezone: string, ...active: string[]) => compileSchedule(spec(timezone, active));
const activeAt = (schedule: CompiledSchedule, text: string) => isWithinActiveHours(schedule, utc(text));
const nextChange = (schedule: CompiledSchedule, text: string) => {
  const next = nextScheduleChange(schedule, utc(text));
  return next === null ? null : new Date(next).toISOString();
};

describe('scheduleProblem', () => {
  const good = spec('Europe/Berlin', ['Mon-Fri 08:00-20:00'], { outside: 'idle_only', outside_threshold_minutes: 60 });

  it.each([
    ['Europe/Berlin', ['Mon-Fri 08:00-20:00', 'Sat 10:00-14:00']],
    ['America/New_York', ['Mon,Wed,Fri 09:00-17:00']],
    ['UTC', ['Mon-Sun 00:00-24:00']],
    ['Asia/Kathmandu', ['Fri-Mon 22:00-06:00', 'mon-wed,FRI 07:30-08:00', 'sun 23:59-24:00', 'Tue 00:00-00:01']],
  ])('accepts %s %j and compiles it', (timezone, active) => {
    expect(scheduleProblem(spec(timezone, active))).toBeNull();
    expect(compileSchedule(spec(timezone, active)).spec.active).toEqual(active);
  });

  it.each<[string, Partial<ScheduleSpec>, string, RegExp]>([
    ['an unknown zone', { timezone: 'Mars/Olympus' }, 'schedule.timezone', /"Mars\/Olympus" is not a known IANA time zone.*"Europe\/Berlin"/],
    ['an empty zone', { timezone: '' }, 'schedule.timezone', /"" is not a known IANA time zone/],
    ['no ranges', { active: [] }, 'schedule.active', /at least one range.*"Mon-Fri 08:00-20:00"/],
    ['17 ranges', { active: Array.from({ length: 17 }, () => 'Mon 08:00-09:00') }, 'schedule.active', /17 ranges, at most 16/],
    ['an unknown day', { active: ['Mon 08:00-09:00', 'Mon-Fry 08:00-20:00'] }, 'schedule.active[1]', /unknown day "Fry"/],
    ['an hour past 23', { active: ['Mon 25:00-26:00'] }, 'schedule.active[0]', /"25:00" is not a valid start time/],
    ['a minute past 59', { active: ['Mon 08:60-09:00'] }, 'schedule.active[0]', /"08:60" is not a valid start time/],
    ['an end past 24:00', { active: ['Mon 08:00-24:01'] }, 'schedule.active[0]', /"24:01" is not a valid end time/],
    ['a start at 24:00', { active: ['Mon 24:00-02:00'] }, 'schedule.active[0]', /"24:00" is not a valid start time/],
    ['an end at 00:00', { active: ['Mon 22:00-00:00'] }, 'schedule.active[0]', /"00:00" is not a valid end time.*24:00/],
    ['a one-digit hour', { active: ['Mon 8:00-20:00'] }, 'schedule.active[0]', /"8:00" is not a valid start time/],
    ['start equal to end', { active: ['Tue 08:00-08:00'] }, 'schedule.active[0]', /starts and ends at 08:00/],
    ['no times', { active: ['Mon-Fri'] }, 'schedule.active[0]', /expected "<days> <HH:MM>-<HH:MM>"/],
    ['a broken day list', { active: ['Mon,,Fri 08:00-09:00'] }, 'schedule.active[0]', /"Mon,,Fri" is not a day list/],
    ['a bad outside', { outside: 'sleep' as ScheduleSpec['outside'] }, 'schedule.outside', /"sleep" is not one of "idle_only", "hibernate"/],
    ['idle_only without threshold', { outside_threshold_minutes: undefined }, 'schedule.outside_threshold_minutes', /required when outside is "idle_only"/],
    ['a zero threshold', { outside_threshold_minutes: 0 }, 'schedule.outside_threshold_minutes', /0 is not a whole number of minutes from 1 to 10080/],
    ['a fractional threshold', { outside_threshold_minutes: 1.5 }, 'schedule.outside_threshold_minutes', /1.5 is not a whole number/],
    ['a threshold over a week', { outside_threshold_minutes: 10_081 }, 'schedule.outside_threshold_minutes', /10081 is not a whole number/],
  ])('names %s', (_name, change, field, message) => {
    const bad = { ...good, ...change };
    const problem = scheduleProblem(bad);
    expect(problem?.field).toBe(field);
    expect(problem?.message.startsWith(`${field}: `)).toBe(true);
    expect(problem?.message).toMatch(message);
    expect(problem?.message).toMatch(/write e\.g\.|for a whole day write/);
    expect(() => compileSchedule(bad)).toThrow(problem!.message);
  });

  it('shows the offending range and a good one', () => {
    expect(scheduleProblem({ ...good, active: ['Mon 08:00-09:00', 'Mon-Fry 08:00-20:00'] })?.message).toBe(
      'schedule.active[1]: "Mon-Fry 08:00-20:00": unknown day "Fry"; days are Mon Tue Wed Thu Fri Sat Sun; write e.g. "Mon-Fri 08:00-20:00"',
    );
  });

  it('needs no threshold when outside hours hibernate', () => {
    expect(scheduleProblem({ ...good, outside: 'hibernate', outside_threshold_minutes: undefined })).toBeNull();
  });

  it('reports the first problem in field order', () => {
    expect(scheduleProblem({ timezone: 'Mars/Olympus', active: [], outside: 'idle_only' })?.field).toBe('schedule.timezone');
    expect(scheduleProblem({ timezone: 'UTC', active: ['Mon 8-9', 'Bad'], outside: 'idle_only' })?.field).toBe('schedule.active[0]');
  });
});

describe('America/New_York across DST', () => {
  const weekdays = compile('America/New_York', 'Mon-Fri 08:00-20:00');

  it('follows 08:00 local from 13:00Z (EST) to 12:00Z (EDT) over the 2026-03-08 spring forward', () => {
    expect(activeAt(weekdays, '2026-03-06T12:59:00Z')).toBe(false);
    expect(activeAt(weekdays, '2026-03-06T13:00:00Z')).toBe(true);
    expect(activeAt(weekdays, '2026-03-07T00:59:59Z')).toBe(true);
    expect(activeAt(weekdays, '2026-03-07T01:00:00Z')).toBe(false);
    expect(activeAt(weekdays, '2026-03-09T11:59:00Z')).toBe(false);
    expect(activeAt(weekdays, '2026-03-09T12:00:00Z')).toBe(true);
    expect(nextChange(weekdays, '2026-03-07T01:00:00Z')).toBe('2026-03-09T12:00:00.000Z');
  });

  it('follows 08:00 local back to 13:00Z over the 2026-11-01 fall back', () => {
    expect(activeAt(weekdays, '2026-10-30T12:00:00Z')).toBe(true);
    expect(activeAt(weekdays, '2026-11-02T12:30:00Z')).toBe(false);
    expect(nextChange(weekdays, '2026-10-31T00:00:00Z')).toBe('2026-11-02T13:00:00.000Z');
  });

  it('loses the hour that spring forward skips', () => {
    const earlySunday = compile('America/New_York', 'Sun 01:00-03:00');
    expect(activeAt(earlySunday, '2026-03-08T06:00:00Z')).toBe(true);
    expect(activeAt(earlySunday, '2026-03-08T06:59:00Z')).toBe(true);
    expect(activeAt(earlySunday, '2026-03-08T07:00:00Z')).toBe(false);
    expect(nextChange(earlySunday, '2026-03-08T06:00:00Z')).toBe('2026-03-08T07:00:00.000Z');
  });

  it('never reaches the nonexistent 02:30 on spring-forward day', () => {
    const gap = compile('America/New_York', 'Sun 02:00-03:00');
    for (let at = utc('2026-03-08T00:00:00Z'); at < utc('2026-03-09T00:00:00Z'); at += MINUTE) {
      expect(isWithinActiveHours(gap, at)).toBe(false);
    }
    expect(nextChange(gap, '2026-03-07T12:00:00Z')).toBe('2026-03-15T06:00:00.000Z');
    expect(activeAt(gap, '2026-03-15T06:30:00Z')).toBe(true);
  });

  it('counts both passes of the repeated 01:30 on fall-back day', () => {
    const repeated = compile('America/New_York', 'Sun 01:15-01:45');
    expect(activeAt(repeated, '2026-11-01T05:30:00Z')).toBe(true);
    expect(activeAt(repeated, '2026-11-01T06:00:00Z')).toBe(false);
    expect(activeAt(repeated, '2026-11-01T06:30:00Z')).toBe(true);
    expect(nextChange(repeated, '2026-11-01T05:50:00Z')).toBe('2026-11-01T06:15:00.000Z');
    expect(nextChange(repeated, '2026-11-01T06:15:00Z')).toBe('2026-11-01T06:45:00.000Z');
  });

  it('sees no change where the repeated hour continues a range', () => {
    const night = compile('America/New_York', 'Sun 01:00-02:00');
    expect(activeAt(night, '2026-11-01T06:30:00Z')).toBe(true);
    expect(nextChange(night, '2026-11-01T05:00:00Z')).toBe('2026-11-01T07:00:00.000Z');
  });
});

describe('Europe/Berlin across DST', () => {
  const weekdays = compile('Europe/Berlin', 'Mon-Fri 08:00-20:00');

  it('moves 08:00 local from 07:00Z to 06:00Z over 2026-03-29', () => {
    expect(activeAt(weekdays, '2026-03-27T06:59:00Z')).toBe(false);
    expect(activeAt(weekdays, '2026-03-27T07:00:00Z')).toBe(true);
    expect(nextChange(weekdays, '2026-03-27T19:30:00Z')).toBe('2026-03-30T06:00:00.000Z');
  });

  it('moves 08:00 local from 06:00Z back to 07:00Z over 2026-10-25', () => {
    expect(activeAt(weekdays, '2026-10-23T06:00:00Z')).toBe(true);
    expect(nextChange(weekdays, '2026-10-23T18:00:00Z')).toBe('2026-10-26T07:00:00.000Z');
    expect(activeAt(weekdays, '2026-10-26T06:59:00Z')).toBe(false);
  });

  it('skips 02:30 on 2026-03-29 and counts both 02:30s on 2026-10-25', () => {
    const twoAm = compile('Europe/Berlin', 'Sun 02:00-03:00');
    expect(activeAt(twoAm, '2026-03-29T00:59:00Z')).toBe(false);
    expect(activeAt(twoAm, '2026-03-29T01:00:00Z')).toBe(false);
    expect(activeAt(twoAm, '2026-10-25T00:30:00Z')).toBe(true);
    expect(activeAt(twoAm, '2026-10-25T01:30:00Z')).toBe(true);
    expect(activeAt(twoAm, '2026-10-25T02:00:00Z')).toBe(false);
    expect(nextChange(twoAm, '2026-10-24T23:59:30Z')).toBe('2026-10-25T00:00:00.000Z');
    expect(nextChange(twoAm, '2026-10-25T00:00:00Z')).toBe('2026-10-25T02:00:00.000Z');
  });
});

describe('southern hemisphere and fractional offsets', () => {
  it('follows Australia/Sydney out of DST on 2026-04-05 (+11 to +10)', () => {
    const weekdays = compile('Australia/Sydney', 'Mon-Fri 08:00-20:00');
    expect(activeAt(weekdays, '2026-04-02T20:59:00Z')).toBe(false);
    expect(activeAt(weekdays, '2026-04-02T21:00:00Z')).toBe(true);
    expect(nextChange(weekdays, '2026-04-03T09:00:00Z')).toBe('2026-04-05T22:00:00.000Z');
    const repeated = compile('Australia/Sydney', 'Sun 02:30-02:40');
    expect(activeAt(repeated, '2026-04-04T15:35:00Z')).toBe(true);
    expect(activeAt(repeated, '2026-04-04T16:35:00Z')).toBe(true);
  });

  it('lands on half and three-quarter hours in Asia/Kolkata and Asia/Kathmandu', () => {
    const kolkata = compile('Asia/Kolkata', 'Mon-Fri 09:00-17:00');
    expect(activeAt(kolkata, '2026-01-05T03:29:59Z')).toBe(false);
    expect(activeAt(kolkata, '2026-01-05T03:30:00Z')).toBe(true);
    expect(nextChange(kolkata, '2026-01-05T03:29:30Z')).toBe('2026-01-05T03:30:00.000Z');
    expect(nextChange(kolkata, '2026-01-05T03:30:00Z')).toBe('2026-01-05T11:30:00.000Z');
    const kathmandu = compile('Asia/Kathmandu', 'Mon-Fri 09:00-17:00');
    expect(nextChange(kathmandu, '2026-01-04T12:00:00Z')).toBe('2026-01-05T03:15:00.000Z');
  });
});

describe('overnight, wrapping and whole-day ranges', () => {
  it('runs "Fri-Mon 22:00-06:00" from each start day into the next morning', () => {
    const nights = compile('UTC', 'Fri-Mon 22:00-06:00');
    // 2026-01-02 is a Friday.
    expect(activeAt(nights, '2026-01-02T21:59:00Z')).toBe(false);
    expect(activeAt(nights, '2026-01-02T22:00:00Z')).toBe(true);
    expect(activeAt(nights, '2026-01-03T05:59:00Z')).toBe(true);
    expect(activeAt(nights, '2026-01-03T06:00:00Z')).toBe(false);
    expect(activeAt(nights, '2026-01-04T03:00:00Z')).toBe(true);
    expect(activeAt(nights, '2026-01-05T23:00:00Z')).toBe(true);
    expect(activeAt(nights, '2026-01-06T05:59:00Z')).toBe(true);
    expect(activeAt(nights, '2026-01-06T22:00:00Z')).toBe(false);
    expect(activeAt(nights, '2026-01-08T03:00:00Z')).toBe(false);
    expect(nextChange(nights, '2026-01-06T06:00:00Z')).toBe('2026-01-09T22:00:00.000Z');
  });

  it('carries a Sunday night into Monday morning', () => {
    const sundayNight = compile('UTC', 'sun 23:00-01:00');
    expect(activeAt(sundayNight, '2026-01-05T00:30:00Z')).toBe(true);
    expect(activeAt(sundayNight, '2026-01-06T00:30:00Z')).toBe(false);
    expect(nextChange(sundayNight, '2026-01-04T23:00:00Z')).toBe('2026-01-05T01:00:00.000Z');
  });

  it('is always active for "Mon-Sun 00:00-24:00" and never changes', () => {
    const always = compile('Europe/Berlin', 'Mon-Sun 00:00-24:00');
    for (const at of ['2026-03-29T01:30:00Z', '2026-10-25T00:30:00Z', '2026-07-01T12:00:00Z']) {
      expect(activeAt(always, at)).toBe(true);
      expect(nextChange(always, at)).toBeNull();
    }
  });

  it('joins whole days across midnight', () => {
    const weekend = compile('UTC', 'Sat 00:00-24:00', 'Sun 00:00-24:00');
    expect(activeAt(weekend, '2026-01-03T23:59:59Z')).toBe(true);
    expect(activeAt(weekend, '2026-01-04T00:00:00Z')).toBe(true);
    expect(nextChange(weekend, '2026-01-03T00:00:00Z')).toBe('2026-01-05T00:00:00.000Z');
  });
});

describe('cost per call', () => {
  it('stays well below building a formatter per call', () => {
    const schedule = compile('America/New_York', 'Mon-Fri 08:00-20:00');
    const calls = 2000;
    const base = utc('2026-03-01T00:00:00Z');
    let checks = 0;
    const ourStart = performance.now();
    for (let i = 0; i < calls; i++) if (isWithinActiveHours(schedule, base + i * 7 * MINUTE)) checks++;
    const ourCost = performance.now() - ourStart;
    const formatterStart = performance.now();
    for (let i = 0; i < calls; i++) {
      const formatter = new Intl.DateTimeFormat('en-US', { timeZone: 'America/New_York', hourCycle: 'h23', hour: 'numeric' });
      if (formatter.formatToParts(base + i * 7 * MINUTE).length > 0) checks++;
    }
    const formatterCost = performance.now() - formatterStart;
    expect(checks).toBeGreaterThan(calls);
    expect(ourCost).toBeLessThan(formatterCost / 2);
  });
});

// An oracle written apart from the module: the zone's own weekday name and h23 time, checked
// against the ranges as structured data rather than as parsed text.
const DAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
type DayItem = { first: number; last: number };
interface OracleRange {
  items: DayItem[];
  start: number;
  end: number;
  text: string;
}
const oracleFormatters = new Map<string, Intl.DateTimeFormat>();
function oracleLocal(timeZone: string, ms: number): { weekday: number; minute: number } {
  let formatter = oracleFormatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    oracleFormatters.set(timeZone, formatter);
  }
  const match = /^(\w{3}) (\d{2}):(\d{2})$/.exec(formatter.format(ms));
  if (!match) throw new Error(`unexpected local time ${formatter.format(ms)}`);
  return { weekday: DAYS.indexOf(match[1]!), minute: (Number(match[2]) % 24) * 60 + Number(match[3]) };
}
function startsOn(range: OracleRange, weekday: number): boolean {
  return range.items.some(({ first, last }) => (first <= last ? weekday >= first && weekday <= last : weekday >= first || weekday <= last));
}
function oracleActive(timeZone: string, ranges: readonly OracleRange[], ms: number): boolean {
  const { weekday, minute } = oracleLocal(timeZone, ms);
  return ranges.some((range) => {
    if (range.start < range.end) return startsOn(range, weekday) && minute >= range.start && minute < range.end;
    return (startsOn(range, weekday) && minute >= range.start) || (startsOn(range, (weekday + 6) % 7) && minute < range.end);
  });
}

const ZONES = [
  'UTC',
  'Europe/Berlin',
  'America/New_York',
  'Australia/Sydney',
  'Asia/Kolkata',
  'Asia/Kathmandu',
  'Australia/Lord_Howe',
  'America/St_Johns',
  'Pacific/Chatham',
];
const hhmm = (minute: number) => `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`;
const anyCase = (name: string, upper: boolean[]) => [...name].map((letter, i) => (upper[i] ? letter.toUpperCase() : letter.toLowerCase())).join('');
const dayName = fc.tuple(fc.integer({ min: 0, max: 6 }), fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }));
const dayItem = fc.oneof(
  dayName.map(([day, upper]) => ({ item: { first: day, last: day }, text: anyCase(DAYS[day]!, upper) })),
  fc.tuple(dayName, dayName).map(([[first, upperFirst], [last, upperLast]]) => ({
    item: { first, last },
    text: `${anyCase(DAYS[first]!, upperFirst)}-${anyCase(DAYS[last]!, upperLast)}`,
  })),
);
// Times near midnight and the usual DST hours turn up often, the rest anywhere.
const startMinute = fc.oneof(fc.constantFrom(0, 60, 90, 120, 150, 180, 1320, 1439), fc.integer({ min: 0, max: 1439 }));
const endMinute = fc.oneof(fc.constantFrom(1, 60, 120, 150, 180, 360, 1440), fc.integer({ min: 1, max: 1440 }));
const range: fc.Arbitrary<OracleRange> = fc
  .tuple(fc.array(dayItem, { minLength: 1, maxLength: 3 }), startMinute, endMinute)
  .filter(([, start, end]) => start !== end)
  .map(([items, start, end]) => ({
    items: items.map(({ item }) => item),
    start,
    end,
    text: `${items.map(({ text }) => text).join(',')} ${hhmm(start)}-${hhmm(end)}`,
  }));
const wholeWeek: OracleRange = { items: [{ first: 0, last: 6 }], start: 0, end: 1440, text: 'Mon-Sun 00:00-24:00' };
const ranges = fc.oneof({ weight: 9, arbitrary: fc.array(range, { minLength: 1, maxLength: 3 }) }, { weight: 1, arbitrary: fc.constant<OracleRange[]>([wholeWeek]) });

const DST_CHANGES = [
  '2026-03-08T07:00:00Z',
  '2026-11-01T06:00:00Z',
  '2026-03-29T01:00:00Z',
  '2026-10-25T01:00:00Z',
  '2026-04-04T16:00:00Z',
  '2026-10-03T16:00:00Z',
  '2026-04-04T15:00:00Z',
  '2026-04-04T13:45:00Z',
  '2026-03-08T05:30:00Z',
].map(utc);
const instant = fc.oneof(
  fc.integer({ min: utc('2026-01-01T00:00:00Z'), max: utc('2027-01-01T00:00:00Z') - 1 }),
  fc.tuple(fc.constantFrom(...DST_CHANGES), fc.integer({ min: -3 * DAY, max: 3 * HOUR })).map(([change, shift]) => change + shift),
);

describe('against an independent oracle', () => {
  it('decides membership like the oracle', () => {
    fc.assert(
      fc.property(fc.constantFrom(...ZONES), ranges, fc.array(instant, { minLength: 1, maxLength: 20 }), (timezone, generated, instants) => {
        const schedule = compileSchedule(spec(timezone, generated.map((r) => r.text)));
        for (const at of instants) expect(isWithinActiveHours(schedule, at)).toBe(oracleActive(timezone, generated, at));
      }),
      { numRuns: 400 },
    );
  });

  it('finds the first instant where membership changes', () => {
    fc.assert(
      fc.property(fc.constantFrom(...ZONES), ranges, instant, (timezone, generated, at) => {
        const schedule = compileSchedule(spec(timezone, generated.map((r) => r.text)));
        const before = oracleActive(timezone, generated, at);
        const next = nextScheduleChange(schedule, at);
        if (next === null) {
          for (let probe = at; probe <= at + 8 * DAY; probe += HOUR) expect(oracleActive(timezone, generated, probe)).toBe(before);
          return;
        }
        expect(next).toBeGreaterThan(at);
        expect(next % MINUTE).toBe(0);
        expect(next).toBeLessThanOrEqual(at + 8 * DAY);
        for (let probe = Math.ceil(at / MINUTE) * MINUTE; probe < next; probe += MINUTE) {
          if (oracleActive(timezone, generated, probe) !== before) expect.fail(`changed at ${new Date(probe).toISOString()}, before ${new Date(next).toISOString()}`);
        }
        expect(oracleActive(timezone, generated, next)).toBe(!before);
      }),
      { numRuns: 150 },
    );
  });
});
