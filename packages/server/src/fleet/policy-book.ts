import type { Clock } from '../clock.js';
import { compilePolicy, type CompiledPolicy } from '../policy/effective-policy.js';
import type { FleetRepository, StoredPolicy } from '../store/store.js';

/** Policies are re-read at least this often, so that a change made through another replica applies. */
export const POLICY_REFRESH_MS = 2_000;

/**
 * The named policies as this process knows them: every heartbeat matches its instance's labels
 * against them, so they are kept compiled in memory. They are re-read when older than
 * POLICY_REFRESH_MS (in the background: a beat never waits for it), at once after this process
 * changes one, and, before a hibernation fires, inside that transaction (`load(repo)`), so that no
 * hibernation rests on a policy another replica has just changed.
 */
export class PolicyBook {
  private policies: readonly CompiledPolicy[] = [];
  private loadedAt = -Infinity;
  private reloading: Promise<unknown> | null = null;
  private loadsStarted = 0;
  private loadsApplied = 0;

  constructor(
    private readonly store: Pick<FleetRepository, 'listPolicies'>,
    private readonly clock: Clock,
    private readonly onError: (error: unknown) => void = () => {},
  ) {}

  /** The policies as last read, highest priority first; a stale copy starts a re-read for the next beat. */
  current(): readonly CompiledPolicy[] {
    if (this.clock.now() - this.loadedAt > POLICY_REFRESH_MS && this.reloading === null) {
      this.reloading = this.load().catch(this.onError).finally(() => (this.reloading = null));
    }
    return this.policies;
  }

  /** Reads the policies now (through `reader`: a transaction, to see them as it does). */
  async load(reader: Pick<FleetRepository, 'listPolicies'> = this.store): Promise<readonly CompiledPolicy[]> {
    const at = this.clock.now();
    const started = ++this.loadsStarted;
    const stored = await reader.listPolicies();
    const known = new Map(this.policies.map((p) => [p.name, p]));
    const policies = stored.flatMap((p) => {
      const same = known.get(p.name);
      if (same && same.updatedAt === p.updatedAt && JSON.stringify(same.spec) === JSON.stringify(p.spec)) return [same];
      const compiled = compileStored(p);
      if (compiled === null) this.onError(new Error(`policy "${p.name}" cannot be read on this server (its selector); it is left out`));
      return compiled === null ? [] : [compiled];
    });
    // A read that started before a newer one finished must not put older policies back.
    if (started > this.loadsApplied) {
      this.loadsApplied = started;
      this.policies = policies;
      this.loadedAt = at;
    }
    return policies;
  }
}

/**
 * A stored policy that no longer compiles (say, a time zone this Node's ICU dropped) must not fall
 * back to a lower policy with a shorter threshold: it matches as before, with hibernation off.
 */
function compileStored(p: StoredPolicy): CompiledPolicy | null {
  try {
    return compilePolicy(p.name, p.spec, p.updatedAt);
  } catch {
    try {
      const { schedule: _schedule, ...rest } = p.spec;
      return compilePolicy(p.name, { ...rest, enabled: false, description: `${p.spec.description ?? ''} (invalid on this server: hibernation off)`.trim() }, p.updatedAt);
    } catch {
      // Not even its selector reads: it can match nothing, and must not stop the server from starting.
      return null;
    }
  }
}
