import type { ActivitySignalReport } from '@dumont/protocol';
import type { Clock } from '../clock.js';
import {
  DEFAULT_SIGNAL_INTERVAL_SECONDS,
  DEFAULT_SIGNAL_TIMEOUT_SECONDS,
  expandSignalUrl,
  judgeSignals,
  type SignalReading,
  type SignalSpec,
  type SignalVerdict,
} from '../policy/activity-signals.js';
import { probeSignal } from './signal-probe.js';

type HttpSignal = Extract<SignalSpec, { type: 'http' }>;

/** A URL nobody asked about for this long is no longer polled. */
const FORGET_AFTER_MS = 10 * 60_000;
/** Polls in flight at once, whatever the number of URLs. */
const MAX_CONCURRENT_POLLS = 16;
/** Instances whose last verdicts are kept for their detail page. */
const MAX_REMEMBERED = 100_000;

interface Polled {
  timeoutMs: number;
  intervalMs: number;
  wantedAt: number;
  reading: SignalReading | undefined;
  polling: boolean;
}

/** The instance as a signal URL names it. */
export interface SignalSubject {
  instanceId: number;
  hostname: string | null;
  providerInstanceId: string;
}

/**
 * External activity signals: the verdict on each beat, and the HTTP signals' latest readings. A URL
 * is polled only once a beat asked for it (an instance of a policy that names it beats here), then
 * every `interval_seconds` while beats keep asking; the first beats find no reading and count the
 * machine as active, as does any reading older than the judge allows. Polls never run on a beat's
 * path: the beat reads what the last poll left.
 */
export class SignalBoard {
  private readonly urls = new Map<string, Polled>();
  private readonly lastVerdicts = new Map<number, { at: number; verdicts: SignalVerdict[] }>();
  private timer: NodeJS.Timeout | null = null;
  private inFlight = 0;
  private readonly polls = new Set<Promise<void>>();

  constructor(
    private readonly clock: Clock,
    private readonly probe: (url: string, timeoutMs: number) => Promise<{ state: SignalReading['state']; detail: string }> = probeSignal,
  ) {}

  /** Judges one beat's signals; returns why they keep the machine active, or null (all idle). */
  judge(subject: SignalSubject, specs: readonly SignalSpec[], reports: readonly ActivitySignalReport[] | undefined, now: number): string | null {
    const verdict = judgeSignals(specs, reports, (spec) => this.readingFor(spec, subject, now), now);
    if (this.lastVerdicts.size >= MAX_REMEMBERED && !this.lastVerdicts.has(subject.instanceId)) {
      this.lastVerdicts.delete(this.lastVerdicts.keys().next().value!);
    }
    this.lastVerdicts.set(subject.instanceId, { at: now, verdicts: verdict.verdicts });
    return verdict.active ? verdict.reason : null;
  }

  /** The verdicts of the instance's last beat judged by this process, if any. */
  lastVerdictsOf(instanceId: number): { at: number; verdicts: SignalVerdict[] } | undefined {
    return this.lastVerdicts.get(instanceId);
  }

  private readingFor(spec: HttpSignal, subject: SignalSubject, now: number): SignalReading | undefined {
    const url = expandSignalUrl(spec.url, {
      instance_id: String(subject.instanceId),
      hostname: subject.hostname,
      provider_instance_id: subject.providerInstanceId,
    });
    if (url === null) return undefined;
    let polled = this.urls.get(url);
    if (!polled) {
      polled = { timeoutMs: 0, intervalMs: 0, wantedAt: now, reading: undefined, polling: false };
      this.urls.set(url, polled);
    }
    polled.timeoutMs = (spec.timeout_seconds ?? DEFAULT_SIGNAL_TIMEOUT_SECONDS) * 1000;
    polled.intervalMs = (spec.interval_seconds ?? DEFAULT_SIGNAL_INTERVAL_SECONDS) * 1000;
    polled.wantedAt = now;
    return polled.reading;
  }

  /** Polls every URL that is due; resolves when those polls are done (tests drive it with their clock). */
  async pollDue(): Promise<void> {
    const now = this.clock.now();
    for (const [url, polled] of this.urls) {
      if (now - polled.wantedAt > FORGET_AFTER_MS) {
        this.urls.delete(url);
        continue;
      }
      const due = polled.reading === undefined || now - polled.reading.at >= polled.intervalMs;
      if (!due || polled.polling || this.inFlight >= MAX_CONCURRENT_POLLS) continue;
      polled.polling = true;
      this.inFlight += 1;
      const poll = this.probe(url, polled.timeoutMs)
        .then((result) => {
          polled.reading = { ...result, at: this.clock.now() };
        })
        .finally(() => {
          polled.polling = false;
          this.inFlight -= 1;
          this.polls.delete(poll);
        });
      this.polls.add(poll);
    }
    await Promise.all(this.polls);
  }

  start(everyMs = 1_000): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.pollDue(), everyMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all(this.polls);
  }
}
