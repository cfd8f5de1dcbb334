import type { JupyterReading } from './jupyter.js';
import type { Session } from './utmp.js';

/**
 * What counts as activity, exactly (the README repeats this list):
 *   1. input on a logged-in terminal: the access time of its tty device (8 s resolution);
 *   2. a Jupyter server's own `last_activity` (kernel messages, client API calls, terminals);
 *   3. a busy Jupyter kernel: counts as "now" for as long as it stays busy.
 * GPU utilization and GPU processes are not activity here: the server judges the GPUs from the raw
 * figures of each beat, by its own rule. A second threshold in the agent would silently overrule the
 * server's (a GPU at 7 % with a server rule of 10 % would keep the instance awake forever).
 * An idle SSH login and an idle kernel are not activity.
 * `last_activity` is the newest of these and never moves backwards (a session that logs out does not
 * take its last keystroke with it), except by the very step of a clock that was set back.
 */
export interface ActivityInputs {
  now: number;
  sessions: readonly Session[] | null;
  jupyter: JupyterReading | null;
}

export interface ActivityReport {
  lastActivity: number | null;
  /** What set `lastActivity`, in words (for logs and the hibernate guard's refusal); null when nothing did. */
  source: string | null;
  /**
   * How many times `lastActivity` has moved forward since the agent started. The hibernate guard
   * compares these counts rather than timestamps, so a clock step between two readings can neither
   * hide new activity nor invent it.
   */
  mark: number;
  /** Distinct users: terminal/SSH sessions plus owners of Jupyter servers with an open notebook. */
  activeUsers: number | null;
  /** Which "now" rules fired on this beat, for the debug log. */
  reasons: string[];
}

export class ActivityTracker {
  private last: number | null = null;
  private source: string | null = null;
  private mark = 0;
  private previousNow: number | null = null;
  /** How far the clock has been set back since the agent started (ms). */
  private setBack = 0;

  observe(input: ActivityInputs): ActivityReport {
    const { now } = input;
    // A clock set back must not leave last_activity in the future: the server reads a future
    // last_activity as "active now" on every beat until the clock catches up (hours, or days). Moving
    // it back by the same step keeps its age, which is what the server needs.
    if (this.previousNow !== null && now < this.previousNow) {
      const step = this.previousNow - now;
      this.setBack += step;
      if (this.last !== null) this.last -= step;
    }
    this.previousNow = now;
    // A time stamped before the clock was set back lies ahead of now: bring it onto the new timeline
    // the same way. Ahead of now with no step behind it (a small NTP correction) is now.
    const onTimeline = (t: number) => (t > now ? Math.min(t - this.setBack, now) : t);

    const reasons: string[] = [];
    const candidates: Array<[at: number, source: string]> = [];
    for (const s of input.sessions ?? []) {
      if (s.lastInputAt !== null) candidates.push([onTimeline(s.lastInputAt), `input on ${s.user}'s terminal ${s.line}`]);
    }
    for (const server of input.jupyter?.servers ?? []) {
      if (server.lastActivity !== null) candidates.push([onTimeline(server.lastActivity), `jupyter server pid ${server.pid} activity`]);
      if (server.busyKernels > 0) {
        const reason = `jupyter pid ${server.pid}: ${server.busyKernels} busy kernel(s)`;
        candidates.push([now, reason]);
        reasons.push(reason);
      }
    }
    for (const [at, source] of candidates) {
      if (this.last === null || at > this.last) {
        this.last = at;
        this.source = source;
        this.mark += 1;
      }
    }

    let activeUsers: number | null = null;
    if (input.sessions !== null) {
      const users = new Set(input.sessions.map((s) => s.user));
      for (const server of input.jupyter?.servers ?? []) {
        if (server.connections > 0 && server.owner) users.add(server.owner);
      }
      activeUsers = users.size;
    }
    return { lastActivity: this.last, source: this.source, mark: this.mark, activeUsers, reasons };
  }
}
