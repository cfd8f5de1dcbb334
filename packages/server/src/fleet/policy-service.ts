import { DumontError, parseLabelSelector, type PolicyList, type PolicySpec, type PolicyView } from '@dumont/protocol';
import type { Clock } from '../clock.js';
import { scheduleProblem } from '../policy/schedule.js';
import { signalSpecProblem } from '../policy/activity-signals.js';
import { Providers } from '../providers/registry.js';
import type { FleetStore, StoredPolicy } from '../store/store.js';
import type { PolicyBook } from './policy-book.js';
import type { Operator } from './principal.js';
import { iso } from './views.js';

const invalid = (field: string, message: string) => new DumontError('invalid_request', `${field}: ${message}`, field);

function toView(policy: StoredPolicy): PolicyView {
  return {
    name: policy.name,
    created_at: iso(policy.createdAt)!,
    updated_at: iso(policy.updatedAt)!,
    updated_by: policy.updatedBy,
    ...policy.spec,
  };
}

/** A unique-index violation, as either engine words it: two writers raced for one priority. */
function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown };
  return e?.code === '23505' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE' || (typeof e?.message === 'string' && /UNIQUE constraint failed/.test(e.message));
}

/**
 * Named policies: anyone may read them (owners see what governs their machines); only admins write.
 * A policy is checked whole before anything is stored (selector, schedule, signals, provider, a
 * priority no other policy holds), and this process judges by it from its next beat on.
 */
export class PolicyService {
  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
    private readonly book: PolicyBook,
    private readonly providers: Providers,
  ) {}

  async list(): Promise<PolicyList> {
    return { policies: (await this.store.listPolicies()).map(toView) };
  }

  async get(name: string): Promise<PolicyView> {
    const policy = (await this.store.listPolicies()).find((p) => p.name === name);
    if (!policy) throw new DumontError('not_found', `no policy named "${name}"`);
    return toView(policy);
  }

  /** Creates or replaces the policy; `created` says which. */
  async put(operator: Operator, name: string, spec: PolicySpec): Promise<{ policy: PolicyView; created: boolean }> {
    requireAdmin(operator, 'write');
    this.check(spec);
    const now = this.clock.now();
    let result: { policy: StoredPolicy; created: boolean };
    try {
      result = await this.store.transaction(async (repo) => {
        const all = await repo.listPolicies();
        const clash = all.find((p) => p.priority === spec.priority && p.name !== name);
        if (clash) {
          throw invalid(
            'priority',
            `policy "${clash.name}" already has priority ${spec.priority}; where both match, which one applies would be ambiguous, so give each policy its own priority`,
          );
        }
        const before = all.find((p) => p.name === name);
        const policy: StoredPolicy = { name, priority: spec.priority, spec, createdAt: before?.createdAt ?? now, updatedAt: now, updatedBy: operator.owner };
        const created = await repo.putPolicy(policy);
        await repo.requireDurableCommit();
        return { policy, created };
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw invalid('priority', `another policy took priority ${spec.priority} at the same moment; give each policy its own priority`);
      throw error;
    }
    await this.book.load();
    return { policy: toView(result.policy), created: result.created };
  }

  async delete(operator: Operator, name: string): Promise<void> {
    requireAdmin(operator, 'delete');
    const deleted = await this.store.transaction(async (repo) => {
      const gone = await repo.deletePolicy(name);
      if (gone) await repo.requireDurableCommit();
      return gone;
    });
    if (!deleted) throw new DumontError('not_found', `no policy named "${name}"`);
    await this.book.load();
  }

  /** Everything the wire schema cannot say; the first problem is a 400 naming its field. */
  private check(spec: PolicySpec): void {
    parseLabelSelector(spec.selector, 'selector');
    if (spec.schedule) {
      const problem = scheduleProblem(spec.schedule);
      if (problem) throw invalid(problem.field, withoutField(problem));
      if (spec.schedule.outside === 'hibernate' && spec.enabled === false) {
        throw invalid('schedule.outside', '"hibernate" needs hibernation enabled; this policy sets enabled: false');
      }
    }
    if (spec.signals) {
      const problem = signalSpecProblem(spec.signals);
      if (problem) throw invalid(problem.field, withoutField(problem));
    }
    if (spec.provider !== undefined && !this.providers.has(spec.provider)) {
      throw invalid('provider', `${spec.provider} is ${Providers.missing(spec.provider)} on this server`);
    }
  }
}

const withoutField = ({ field, message }: { field: string; message: string }) =>
  message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;

function requireAdmin(operator: Operator, what: string): void {
  if (!operator.admin) throw new DumontError('forbidden', `only an admin key may ${what} policies`);
}
