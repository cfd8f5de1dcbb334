import type { Logger } from '../log.js';

/**
 * Turns the `hibernate_in_seconds` of successive responses into scheduled hibernations: a warning
 * with the countdown on every beat, and the warning hook once per scheduled hibernation. The server
 * sends no schedule id, so one is recognised by its deadline: a countdown that appears (after null)
 * or whose deadline moves later by more than the tolerance (a keep-alive postponed it) is a new
 * schedule; the same deadline seen again, give or take network delay, is the same one.
 */
export interface ScheduledHibernation {
  /** Milliseconds since the epoch, by the agent's clock. */
  deadline: number;
  secondsLeft: number;
}

export class HibernationNotice {
  private current: { deadline: number } | null = null;

  constructor(
    private readonly log: Logger,
    private readonly onScheduled: (s: ScheduledHibernation) => void,
    private readonly toleranceMs = 5000,
  ) {}

  observe(now: number, hibernateInSeconds: number | null): void {
    if (hibernateInSeconds === null) {
      if (this.current) this.log.info('hibernation no longer scheduled');
      this.current = null;
      return;
    }
    const deadline = now + hibernateInSeconds * 1000;
    const isNew = !this.current || deadline > this.current.deadline + this.toleranceMs;
    const at = new Date(deadline).toISOString();
    if (hibernateInSeconds === 0) {
      this.log.warn('hibernation is due now; waiting for the hibernate command', { hibernate_in_seconds: 0 });
    } else {
      this.log.warn(`hibernation in ${hibernateInSeconds} s`, { hibernate_in_seconds: hibernateInSeconds, hibernate_at: at, new_schedule: isNew });
    }
    if (isNew) {
      this.current = { deadline };
      this.onScheduled({ deadline, secondsLeft: hibernateInSeconds });
    }
  }
}
