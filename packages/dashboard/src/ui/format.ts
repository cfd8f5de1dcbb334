/** Unknown is shown as a dash, never as 0. */
export const UNKNOWN = '—';

const locale = typeof navigator === 'undefined' ? undefined : navigator.language;
const relative = new Intl.RelativeTimeFormat(locale, { numeric: 'auto', style: 'long' });
const dateTime = new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'medium' });

export function isKnown(value: number | null | undefined): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

export function percent(value: number | null | undefined): string {
  return isKnown(value) ? `${Math.round(value)} %` : UNKNOWN;
}

export function celsius(value: number | null | undefined): string {
  return isKnown(value) ? `${Math.round(value)} °C` : UNKNOWN;
}

export function decimal(value: number | null | undefined, digits = 1): string {
  return isKnown(value) ? value.toLocaleString(locale, { maximumFractionDigits: digits }) : UNKNOWN;
}

export function usd(value: number | null | undefined): string {
  return isKnown(value) ? value.toLocaleString(locale, { style: 'currency', currency: 'USD' }) : UNKNOWN;
}

export function text(value: string | null | undefined): string {
  return value === null || value === undefined || value === '' ? UNKNOWN : value;
}

export function date(iso: string | null | undefined): string {
  if (!iso) return UNKNOWN;
  const at = Date.parse(iso);
  return Number.isNaN(at) ? UNKNOWN : dateTime.format(at);
}

/** "3 minutes ago", against the browser's clock. */
export function ago(iso: string | null | undefined, now: number): string {
  if (!iso) return UNKNOWN;
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return UNKNOWN;
  const seconds = Math.round((at - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return relative.format(seconds, 'second');
  if (abs < 45 * 60) return relative.format(Math.round(seconds / 60), 'minute');
  if (abs < 36 * 3600) return relative.format(Math.round(seconds / 3600), 'hour');
  return relative.format(Math.round(seconds / 86_400), 'day');
}

/** A span of seconds, coarse: "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
export function duration(seconds: number | null | undefined): string {
  if (!isKnown(seconds)) return UNKNOWN;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

/** A countdown, exact to the second: "4:59", "1:02:03". */
export function countdown(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const two = (n: number) => String(n).padStart(2, '0');
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

export const STATUS_LABELS = {
  active: 'Active',
  idle: 'Idle',
  hibernating: 'Hibernating',
  hibernated: 'Hibernated',
  offline: 'Offline',
  waking: 'Waking',
} as const;
