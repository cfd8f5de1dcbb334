import type { ServerConfig } from '../config.js';
import type { FleetStore } from '../store/store.js';

/**
 * When a large share of the fleet goes silent at once, the likely cause is a partition or an outage
 * between the machines and us, not idleness: like Kubernetes' node lifecycle controller, which stops
 * evicting when too many nodes go unready, no hibernation is scheduled or fired fleet-wide until beats
 * return. Each replica reads the same counts from the store and reaches the same verdict.
 */
export interface MassSilence {
  /** When the hold began (server time). */
  since: number;
  /** Instances that went offline at or after this moment belong to the episode. */
  windowStart: number;
  /** Instances watched when it began: online plus the newly silent. */
  watched: number;
  /** Of those, still silent at the last look. */
  silent: number;
}

export interface SilenceCounts {
  /** active, idle and hibernating instances. */
  online: number;
  /** Instances offline since `windowStart` (entering: the last offline window). */
  offlineSinceWindow: number;
}

export type SilenceSettings = Pick<ServerConfig, 'offlineAfterSeconds' | 'massOfflineRatio' | 'massOfflineMinInstances' | 'massOfflineHoldMinutes'>;

export type SilenceChange = 'entered' | 'returned' | 'released' | null;

/** The window whose offline count `judgeMassSilence` needs next. */
export const silenceWindowStart = (current: MassSilence | null, now: number, settings: SilenceSettings): number =>
  current?.windowStart ?? now - settings.offlineAfterSeconds * 1000;

/**
 * Pure: enters when, within one offline window, at least `massOfflineRatio` of the watched fleet (and
 * at least `massOfflineMinInstances` machines) went silent; ends when enough of them beat again, or,
 * if they never do, after `massOfflineHoldMinutes` (then they are gone, not cut off).
 */
export function judgeMassSilence(
  current: MassSilence | null,
  counts: SilenceCounts,
  now: number,
  settings: SilenceSettings,
): { next: MassSilence | null; change: SilenceChange } {
  if (current === null) {
    const silent = counts.offlineSinceWindow;
    const watched = counts.online + silent;
    if (silent >= settings.massOfflineMinInstances && silent >= settings.massOfflineRatio * watched) {
      return { next: { since: now, windowStart: silenceWindowStart(null, now, settings), watched, silent }, change: 'entered' };
    }
    return { next: null, change: null };
  }
  if (now - current.since >= settings.massOfflineHoldMinutes * 60_000) return { next: null, change: 'released' };
  const silent = counts.offlineSinceWindow;
  if (silent < settings.massOfflineRatio * current.watched) return { next: null, change: 'returned' };
  return { next: { ...current, silent }, change: null };
}

export function describeHold(state: MassSilence, settings: SilenceSettings): string {
  return `mass silence: ${state.silent} of ${state.watched} instances went silent within ${settings.offlineAfterSeconds} s; no hibernation until their beats return`;
}

/** One per server process: the sweeper updates it, heartbeats and the fleet listing read it. */
export class MassSilenceGuard {
  private current: MassSilence | null = null;

  constructor(
    private readonly settings: SilenceSettings,
    private readonly log: (level: 'warn' | 'info', message: string, data: Record<string, unknown>) => void = () => {},
  ) {}

  get state(): MassSilence | null {
    return this.current;
  }

  /** Why hibernation is held right now, or null. */
  get hold(): string | null {
    return this.current === null ? null : describeHold(this.current, this.settings);
  }

  async update(store: FleetStore, now: number): Promise<SilenceChange> {
    const since = silenceWindowStart(this.current, now, this.settings);
    const [byStatus, offlineSinceWindow] = await Promise.all([store.countInstancesByStatus(null), store.countOfflineSince(since)]);
    const online = (byStatus.get('active') ?? 0) + (byStatus.get('idle') ?? 0) + (byStatus.get('hibernating') ?? 0);
    const before = this.current;
    const { next, change } = judgeMassSilence(before, { online, offlineSinceWindow }, now, this.settings);
    this.current = next;
    if (change === 'entered') this.log('warn', describeHold(next!, this.settings), { ...next });
    if (change === 'returned') this.log('info', 'mass silence over: beats returned; hibernation resumes', { ...before, still_silent: offlineSinceWindow });
    if (change === 'released') {
      this.log('warn', `mass silence released after ${this.settings.massOfflineHoldMinutes} min: the silent instances are treated as gone`, {
        ...before,
        still_silent: offlineSinceWindow,
      });
    }
    return change;
  }
}
