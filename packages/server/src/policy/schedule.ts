/**
 * Policy schedules: "machines follow working hours". A pure module (no I/O, no clock reads): every
 * question takes `nowMs` (ms, UTC) explicitly.
 *
 * A schedule is compiled once into a bitmap of the 10,080 local minutes of a week (Monday 00:00
 * first). Membership of an instant is the bit at its local wall-clock weekday and minute in the
 * schedule's zone, so DST needs no special case: local times in a spring-forward gap simply never
 * occur, and both passes of a repeated fall-back hour read the same bits.
 */

export interface ScheduleSpec {
  timezone: string;
  active: string[];
  outside: 'idle_only' | 'hibernate';
  outside_threshold_minutes?: number;
}

export interface ScheduleProblem {
  field: string;
  message: string;
}

export interface CompiledSchedule {
  readonly spec: ScheduleSpec;
  /** One byte per local minute of the week, Monday 00:00 first; 1 = active. */
  readonly activeMinutes: Uint8Array;
  /** Minutes of the week whose bit differs from the minute before (cyclically), ascending. */
  readonly boundaries: readonly number[];
  readonly wallClock: Intl.DateTimeFormat;
}

const MINUTE_MS = 60_000;
const DAY_MINUTES = 1440;
const WEEK_MINUTES = 7 * DAY_MINUTES;
const SEARCH_HORIZON_MS = 8 * DAY_MINUTES * MINUTE_MS;
const MAX_RANGES = 16;
const MAX_THRESHOLD_MINUTES = 10_080;
const DAY_NAMES = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'] as const;
const RANGE_EXAMPLE = '"Mon-Fri 08:00-20:00"';
const OUTSIDE_VALUES = ['idle_only', 'hibernate'] as const;

/** A parsed range: the days it starts on (Monday = 0) and its local minutes of the day. */
interface ParsedRange {
  startDays: number[];
  startMinute: number;
  /** 1..1440; below startMinute means the range runs past midnight into the next day. */
  endMinute: number;
}

class RangeSyntaxError extends Error {}

// Building a DateTimeFormat costs tens of microseconds, a formatToParts call a few; membership is
// asked on every heartbeat of every instance, so each zone gets exactly one formatter.
const wallClockByZone = new Map<string, Intl.DateTimeFormat>();

function wallClockFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = wallClockByZone.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
    });
    wallClockByZone.set(timeZone, formatter);
  }
  return formatter;
}

function isKnownTimeZone(timeZone: string): boolean {
  if (timeZone.trim() === '') return false;
  try {
    new Intl.DateTimeFormat(undefined, { timeZone });
    return true;
  } catch (error) {
    if (error instanceof RangeError) return false;
    throw error;
  }
}

function parseDay(name: string, range: string): number {
  const index = DAY_NAMES.findIndex((day) => day.toLowerCase() === name.toLowerCase());
  if (index < 0) {
    throw new RangeSyntaxError(`"${range}": unknown day "${name}"; days are ${DAY_NAMES.join(' ')}; write e.g. ${RANGE_EXAMPLE}`);
  }
  return index;
}

function parseDays(text: string, range: string): number[] {
  const days = new Set<number>();
  for (const item of text.split(',')) {
    const ends = item.split('-');
    if (item === '' || ends.length > 2) {
      throw new RangeSyntaxError(
        `"${range}": "${text}" is not a day list; write one day, a range like Mon-Fri or a comma list like Mon-Wed,Fri; write e.g. ${RANGE_EXAMPLE}`,
      );
    }
    const first = parseDay(ends[0]!, range);
    const last = ends.length === 2 ? parseDay(ends[1]!, range) : first;
    // Ranges may wrap past Sunday: Fri-Mon is Fri, Sat, Sun, Mon.
    for (let day = first; ; day = (day + 1) % 7) {
      days.add(day);
      if (day === last) break;
    }
  }
  return [...days].sort((a, b) => a - b);
}

function parseTime(text: string, role: 'start' | 'end', range: string): number {
  const match = /^(\d{2}):(\d{2})$/.exec(text);
  const minute = match ? Number(match[1]) * 60 + Number(match[2]) : NaN;
  const valid = match !== null && Number(match[2]) < 60 && (role === 'start' ? minute < DAY_MINUTES : minute >= 1 && minute <= DAY_MINUTES);
  if (!valid) {
    const allowed = role === 'start' ? '00:00..23:59' : '00:01..24:00 (write 24:00 for midnight at the end)';
    throw new RangeSyntaxError(`"${range}": "${text}" is not a valid ${role} time (${allowed}); write e.g. ${RANGE_EXAMPLE}`);
  }
  return minute;
}

function parseRange(range: string): ParsedRange {
  const match = /^\s*(\S+)\s+([^\s-]+)-([^\s-]+)\s*$/.exec(range);
  if (!match) {
    throw new RangeSyntaxError(`"${range}": expected "<days> <HH:MM>-<HH:MM>"; write e.g. ${RANGE_EXAMPLE}`);
  }
  const startDays = parseDays(match[1]!, range);
  const startMinute = parseTime(match[2]!, 'start', range);
  const endMinute = parseTime(match[3]!, 'end', range);
  if (startMinute === endMinute) {
    throw new RangeSyntaxError(
      `"${range}": starts and ends at ${match[2]}, which covers nothing; for a whole day write e.g. "Mon 00:00-24:00", for overnight e.g. "Fri 22:00-06:00"`,
    );
  }
  return { startDays, startMinute, endMinute };
}

/** The first thing wrong with a spec's meaning, or null when it compiles. */
export function scheduleProblem(spec: ScheduleSpec): ScheduleProblem | null {
  return analyse(spec).problem;
}

function problem(field: string, message: string): { problem: ScheduleProblem; ranges: null } {
  return { problem: { field, message: `${field}: ${message}` }, ranges: null };
}

function analyse(spec: ScheduleSpec): { problem: ScheduleProblem; ranges: null } | { problem: null; ranges: ParsedRange[] } {
  if (typeof spec.timezone !== 'string' || !isKnownTimeZone(spec.timezone)) {
    return problem('schedule.timezone', `${JSON.stringify(spec.timezone)} is not a known IANA time zone; write e.g. "Europe/Berlin", "America/New_York" or "UTC"`);
  }
  if (!Array.isArray(spec.active) || spec.active.length === 0) {
    return problem('schedule.active', `needs at least one range; write e.g. [${RANGE_EXAMPLE}]`);
  }
  if (spec.active.length > MAX_RANGES) {
    return problem('schedule.active', `has ${spec.active.length} ranges, at most ${MAX_RANGES} are allowed; merge days into one range, write e.g. ${RANGE_EXAMPLE}`);
  }
  const ranges: ParsedRange[] = [];
  for (const [index, range] of spec.active.entries()) {
    try {
      if (typeof range !== 'string') throw new RangeSyntaxError(`${JSON.stringify(range)} is not a text range; write e.g. ${RANGE_EXAMPLE}`);
      ranges.push(parseRange(range));
    } catch (error) {
      if (error instanceof RangeSyntaxError) return problem(`schedule.active[${index}]`, error.message);
      throw error;
    }
  }
  if (!(OUTSIDE_VALUES as readonly unknown[]).includes(spec.outside)) {
    return problem('schedule.outside', `${JSON.stringify(spec.outside)} is not one of "idle_only", "hibernate"; write e.g. "idle_only"`);
  }
  const threshold = spec.outside_threshold_minutes;
  if (threshold === undefined || threshold === null) {
    if (spec.outside === 'idle_only') {
      return problem('schedule.outside_threshold_minutes', 'is required when outside is "idle_only"; write e.g. 60');
    }
  } else if (!Number.isInteger(threshold) || threshold < 1 || threshold > MAX_THRESHOLD_MINUTES) {
    return problem(
      'schedule.outside_threshold_minutes',
      `${JSON.stringify(threshold)} is not a whole number of minutes from 1 to ${MAX_THRESHOLD_MINUTES} (a week); write e.g. 60`,
    );
  }
  return { problem: null, ranges };
}

/** Compiles a spec for cheap repeated questions; throws on a spec that scheduleProblem refuses. */
export function compileSchedule(spec: ScheduleSpec): CompiledSchedule {
  const analysis = analyse(spec);
  if (analysis.problem) throw new Error(analysis.problem.message);
  const activeMinutes = new Uint8Array(WEEK_MINUTES);
  for (const range of analysis.ranges) {
    // An overnight range belongs to its start day and spills into the next, Sunday into Monday.
    const length = range.endMinute > range.startMinute ? range.endMinute - range.startMinute : DAY_MINUTES - range.startMinute + range.endMinute;
    for (const day of range.startDays) {
      const first = day * DAY_MINUTES + range.startMinute;
      for (let offset = 0; offset < length; offset++) activeMinutes[(first + offset) % WEEK_MINUTES] = 1;
    }
  }
  const boundaries: number[] = [];
  for (let minute = 0; minute < WEEK_MINUTES; minute++) {
    if (activeMinutes[minute] !== activeMinutes[(minute + WEEK_MINUTES - 1) % WEEK_MINUTES]) boundaries.push(minute);
  }
  return { spec, activeMinutes, boundaries, wallClock: wallClockFor(spec.timezone) };
}

interface WallClock {
  minuteOfWeek: number;
  /** Local minus UTC, in minutes. */
  offsetMinutes: number;
}

function wallClockAt(schedule: CompiledSchedule, nowMs: number): WallClock {
  let year = 0;
  let month = 0;
  let day = 0;
  let hour = 0;
  let minute = 0;
  for (const part of schedule.wallClock.formatToParts(nowMs)) {
    switch (part.type) {
      case 'year': year = Number(part.value); break;
      case 'month': month = Number(part.value); break;
      case 'day': day = Number(part.value); break;
      // Some ICU versions have written midnight as 24 even under h23.
      case 'hour': hour = Number(part.value) % 24; break;
      case 'minute': minute = Number(part.value); break;
    }
  }
  const localEpochMinutes = Date.UTC(year, month - 1, day, hour, minute) / MINUTE_MS;
  const localDay = Math.floor(localEpochMinutes / DAY_MINUTES);
  // 1970-01-01 was a Thursday, index 3 in a Monday-first week.
  const weekday = (((localDay + 3) % 7) + 7) % 7;
  return {
    minuteOfWeek: weekday * DAY_MINUTES + (localEpochMinutes - localDay * DAY_MINUTES),
    offsetMinutes: localEpochMinutes - Math.floor(nowMs / MINUTE_MS),
  };
}

export function isWithinActiveHours(schedule: CompiledSchedule, nowMs: number): boolean {
  return schedule.activeMinutes[wallClockAt(schedule, nowMs).minuteOfWeek] === 1;
}

/** Local minutes from minuteOfWeek to the next minute whose bit differs; the schedule is not constant. */
function minutesToNextBoundary(schedule: CompiledSchedule, minuteOfWeek: number): number {
  const next = schedule.boundaries.find((boundary) => boundary > minuteOfWeek);
  return next !== undefined ? next - minuteOfWeek : schedule.boundaries[0]! + WEEK_MINUTES - minuteOfWeek;
}

/** The first whole minute in (fromMs, toMs] whose offset differs from the offset at fromMs, which toMs's does. */
function firstMinuteWithNewOffset(schedule: CompiledSchedule, fromMs: number, toMs: number, offsetMinutes: number): number {
  let same = fromMs;
  let changed = toMs;
  while (changed - same > MINUTE_MS) {
    const middle = same + Math.floor((changed - same) / MINUTE_MS / 2) * MINUTE_MS;
    if (wallClockAt(schedule, middle).offsetMinutes === offsetMinutes) same = middle;
    else changed = middle;
  }
  return changed;
}

/** The next instant after nowMs (ms, UTC) at which isWithinActiveHours changes, searched up to 8 days ahead; null if it never changes (e.g. always active). */
export function nextScheduleChange(schedule: CompiledSchedule, nowMs: number): number | null {
  if (schedule.boundaries.length === 0) return null;
  const horizonMs = nowMs + SEARCH_HORIZON_MS;
  const wasActive = isWithinActiveHours(schedule, nowMs);
  // Zone offsets are whole minutes, so local minutes turn over on whole UTC minutes.
  let cursorMs = Math.floor(nowMs / MINUTE_MS) * MINUTE_MS;
  let clock = wallClockAt(schedule, cursorMs);
  for (;;) {
    // While the offset holds, local time runs in step with UTC and the bitmap says where the change is.
    const candidateMs = cursorMs + minutesToNextBoundary(schedule, clock.minuteOfWeek) * MINUTE_MS;
    const candidateClock = wallClockAt(schedule, candidateMs);
    if (candidateClock.offsetMinutes === clock.offsetMinutes) return candidateMs <= horizonMs ? candidateMs : null;
    // An offset change (DST) comes first: local time jumps there, possibly into or out of a range.
    cursorMs = firstMinuteWithNewOffset(schedule, cursorMs, candidateMs, clock.offsetMinutes);
    if (cursorMs > horizonMs) return null;
    clock = wallClockAt(schedule, cursorMs);
    if ((schedule.activeMinutes[clock.minuteOfWeek] === 1) !== wasActive) return cursorMs;
  }
}
