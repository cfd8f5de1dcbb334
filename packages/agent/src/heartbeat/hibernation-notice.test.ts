import { describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { HibernationNotice, type ScheduledHibernation } from './hibernation-notice.js';

const T0 = Date.parse('2024-12-20T15:30:00Z');
function setup() {
  const lines: Array<Record<string, unknown>> = [];
  const scheduled: ScheduledHibernation[] = [];
  const log = createLogger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>), now: () => T0 });
  return { notice: new HibernationNotice(log, (s) => scheduled.push(s)), lines, scheduled };
}

describe('HibernationNotice', () => {
  it('warns with the countdown on every beat and runs the hook once per schedule', () => {
    const { notice, lines, scheduled } = setup();
    notice.observe(T0, null);
    notice.observe(T0 + 30_000, 300);
    notice.observe(T0 + 60_000, 270);
    notice.observe(T0 + 90_500, 240); // half a second of network delay: the same deadline
    expect(scheduled).toEqual([{ deadline: T0 + 330_000, secondsLeft: 300 }]);
    expect(lines.filter((l) => l.level === 'warn').map((l) => l.hibernate_in_seconds)).toEqual([300, 270, 240]);
  });

  it('treats a countdown after a cancellation as a new schedule', () => {
    const { notice, scheduled, lines } = setup();
    notice.observe(T0, 120);
    notice.observe(T0 + 30_000, null);
    notice.observe(T0 + 60_000, 120);
    expect(scheduled.map((s) => s.deadline)).toEqual([T0 + 120_000, T0 + 180_000]);
    expect(lines.some((l) => l.msg === 'hibernation no longer scheduled')).toBe(true);
  });

  it('treats a deadline pushed later (keep-alive) as a new schedule, and a slightly earlier one as the same', () => {
    const { notice, scheduled } = setup();
    notice.observe(T0, 120);
    notice.observe(T0 + 30_000, 85); // 5 s earlier than announced: same schedule
    notice.observe(T0 + 60_000, 1800); // postponed by half an hour
    expect(scheduled.map((s) => s.secondsLeft)).toEqual([120, 1800]);
  });

  it('says when the hibernation is due', () => {
    const { notice, lines } = setup();
    notice.observe(T0, 0);
    expect(lines.at(-1)).toMatchObject({ level: 'warn', msg: 'hibernation is due now; waiting for the hibernate command' });
  });
});
