import { spawnSync } from 'node:child_process';

/** One utmp record as util-linux's `utmpdump` writes it in text form. */
export interface UtmpText {
  type: number;
  pid: number;
  id?: string;
  user?: string;
  line?: string;
  host?: string;
  time?: string;
}

const field = (value: string, width: number) => `[${value.padEnd(width)}]`;

export function utmpText(r: UtmpText): string {
  // utmpdump 2.38 crashes on pids of fewer than five digits; the zero padding is read as decimal.
  return [
    `[${r.type}]`,
    `[${String(r.pid).padStart(5, '0')}]`,
    field(r.id ?? 'ts/0', 4), // utmpdump needs all four characters of ut_id
    field(r.user ?? '', 8),
    field(r.line ?? '', 12),
    field(r.host ?? '', 20),
    field('0.0.0.0', 15),
    `[${r.time ?? '2024-12-20T15:00:00,000000+00:00'}]`,
  ].join(' ');
}

/** A utmp file in the real binary format, made by `utmpdump -r` from text records. */
export function makeUtmp(records: UtmpText[]): Buffer {
  const result = spawnSync('utmpdump', ['-r'], { input: records.map(utmpText).join('\n') + '\n' });
  if (result.status !== 0) throw new Error(`utmpdump -r failed (${result.status ?? result.signal}): ${result.stderr.toString()}`);
  return result.stdout;
}
