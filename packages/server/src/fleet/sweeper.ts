import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { evaluate } from '../policy/hibernation-policy.js';
import type { FleetStore } from '../store/store.js';
import { InstanceWrite } from './instance-write.js';
import type { PolicyBook } from './policy-book.js';
import type { MassSilenceGuard } from './mass-silence.js';

const BATCH = 500;
/** Due instances handled at once: on SQLite they share group commits, on PostgreSQL the pool. */
const PARALLEL = 32;

/**
 * Moves instances whose deadline passed without a heartbeat: offline, hibernate command unanswered.
 * It never fires a hibernation (that needs a fresh idle beat). It reads only due rows (indexed
 * deadline), so a pass costs what is due; each pass also refreshes the mass-silence guard.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;
  /**
   * Nothing is marked offline before every agent has had one offline window to reach this process:
   * after a downtime longer than the window, the first pass would otherwise declare the whole fleet
   * offline before any agent could beat.
   */
  private readonly graceUntil: number;

  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
    private readonly config: ServerConfig,
    private readonly policies: PolicyBook,
    private readonly onError: (error: unknown) => void = () => {},
    private readonly massSilence: MassSilenceGuard | null = null,
  ) {
    this.graceUntil = clock.now() + config.offlineAfterSeconds * 1000;
  }

  /** One pass over everything due at the clock's `now`; returns how many instances changed status. */
  async sweep(): Promise<number> {
    const now = this.clock.now();
    const changed = now < this.graceUntil ? 0 : await this.sweepDue(now);
    // After the pass, so that the instances it just marked offline count at once.
    await this.massSilence?.update(this.store, now);
    return changed;
  }

  private async sweepDue(now: number): Promise<number> {
    let changed = 0;
    for (;;) {
      const changedBefore = changed;
      const due = await this.store.dueInstanceIds(now, BATCH);
      let next = 0;
      const worker = async () => {
        while (next < due.length) if (await this.sweepOne(due[next++]!, now)) changed += 1;
      };
      await Promise.all(Array.from({ length: Math.min(PARALLEL, due.length) }, worker));
      // A full batch means more may be due. Every visit moved its deadline past `now`, so the next
      // read returns other rows; stop anyway if a batch changed nothing, rather than spin.
      if (due.length < BATCH || changed === changedBefore) break;
    }
    return changed;
  }

  private sweepOne(instanceId: number, now: number): Promise<boolean> {
    return this.store.transaction(async (repo) => {
      const instance = await repo.getLifecycle(instanceId, { forUpdate: true });
      // Another replica (or a heartbeat) may have handled it since we listed it.
      if (!instance || instance.deadline === null || instance.deadline > now) return false;
      const write = new InstanceWrite(instance, now, this.config, this.policies.current());
      const { policy, settings } = write.evaluation();
      await write.absorb(evaluate(write.facts, policy, { kind: 'tick' }, settings, now), repo, 'policy');
      await write.commit(repo);
      // A stored deadline may be early (see DEADLINE_SLACK_MS): then this visit only re-stored it.
      return write.facts.status !== instance.facts.status;
    });
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return; // never overlap two passes
      this.running = this.sweep();
      this.running.catch(this.onError).finally(() => {
        this.running = null;
      });
    }, this.config.sweepIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running?.catch(() => {});
  }
}
