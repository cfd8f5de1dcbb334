/**
 * RFC 3339 timestamps, parsed by hand: `Date.parse` answers NaN for a leap second
 * (`2016-12-31T23:59:60Z`) and maps two-digit years onto the 1900s, so a timestamp the schema accepts
 * could become "no time at all" further in. One parser decides for the schema and for the services.
 */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
const daysIn = (year: number, month: number) => (month === 2 && isLeap(year) ? 29 : DAYS[month - 1]!);

/** The last few texts parsed: a heartbeat's timestamps are read by the schema, then by the service. */
const recent = new Map<string, number | null>();
const RECENT_SIZE = 8;

/**
 * Epoch milliseconds of an RFC 3339 date-time, or null when it is not one. A leap second (`:60`)
 * is the last millisecond of its minute: it sorts after :59 and never reads as a later minute.
 */
export function parseTimestamp(text: string): number | null {
  const known = recent.get(text);
  if (known !== undefined) return known;
  const parsed = parseRfc3339(text);
  if (recent.size >= RECENT_SIZE) recent.delete(recent.keys().next().value!);
  recent.set(text, parsed);
  return parsed;
}

function parseRfc3339(text: string): number | null {
  const m = RFC3339.exec(text);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return null;
  if (hour > 23 || minute > 59 || second > 60) return null;
  let offsetMinutes = 0;
  if (m[9] !== undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return null;
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const millis = second === 60 ? 999 : m[7] === undefined ? 0 : Math.floor(Number(`0.${m[7]}`) * 1000);
  // Date.UTC reads years 0–99 as 1900–1999; those (rare) go the long way.
  let ms = Date.UTC(year, month - 1, day, hour, minute, Math.min(second, 59), millis);
  if (year < 100) {
    const date = new Date(ms);
    date.setUTCFullYear(year);
    ms = date.getTime();
  }
  ms -= offsetMinutes * 60_000;
  return Number.isFinite(ms) ? ms : null;
}
