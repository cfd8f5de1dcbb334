import {
  DEFAULT_INSTANCE_SORT,
  DEFAULT_PAGE_LIMIT,
  INSTANCE_SORT_KEYS,
  INSTANCE_SORTS,
  type InstanceSortKey,
  DumontError,
  INSTANCE_STATUSES,
  type CommandListResponse,
  type CommandView,
  type CreateCommandRequest,
  type EventListResponse,
  type HibernationPolicyPatch,
  type InstanceDetail,
  type InstancePatch,
  type SavingsQuery,
  type SavingsResponse,
  type WakeResponse,
  parseTimestamp,
  type KeepAliveResponse,
  type ListEventsQuery,
  type ListInstancesQuery,
  type ListInstancesResponse,
  type RegisterInstanceRequest,
  type RegisterInstanceResponse,
  checkLabelPatch,
  checkLabels,
  type Labels,
  mergeLabels,
  parseLabelSelector,
} from '@dumont/protocol';
import { isDeepStrictEqual } from 'node:util';
import type { Clock } from '../clock.js';
import type { ServerConfig } from '../config.js';
import { evaluate, type PolicyInput } from '../policy/hibernation-policy.js';
import { hashSecret, newSecret } from '../secrets.js';
import type { AgentCommand, FleetRepository, FleetStore, InstanceRecord, InstanceSettings } from '../store/store.js';
import { decodeCursor, decodeInstanceCursor, encodeCursor, encodeInstanceCursor } from './cursor.js';
import { Providers } from '../providers/registry.js';
import { effectivePolicyOf, instanceEvents, InstanceWrite, providerInstanceIdOf } from './instance-write.js';
import type { PolicyBook } from './policy-book.js';
import { matchingPolicy } from '../policy/effective-policy.js';
import type { SignalBoard } from './signal-board.js';
import { openIntervals, sumSavings, totalOf, noSavings } from './savings.js';
import type { MassSilenceGuard } from './mass-silence.js';
import { canSee, type Operator } from './principal.js';
import { checkHibernationPatch, checkKeepAlive, checkOwnerOutcome, checkPolicyMove, checkProviderPatch, KEEP_ALIVE_BUDGET_WINDOW_MS, keepAliveLeft, ownerKeepAliveMinutes } from './admin-limits.js';
import { massSilenceView, toCommandView, toDetail, toEventView, toSummary } from './views.js';

/** Thrown out of a transition to roll it back when an `Idempotency-Key` was already used for this request. */
class Replay {
  constructor(readonly command: AgentCommand) {}
}

/**
 * Whether a stored command is what this request asks for. A hibernate command's args are the server's
 * (the instance's idle rule), not the request's, so for it the type alone decides.
 */
function sameCommandRequest(command: AgentCommand, request: CreateCommandRequest): boolean {
  if (command.type !== request.type) return false;
  return request.type === 'hibernate' || isDeepStrictEqual(command.args, request.args ?? {});
}

const notFound = (instanceId: number) => new DumontError('not_found', `instance ${instanceId} not found`, 'instance_id');

const DEFAULT_SAVINGS_DAYS = 30;

const EVENT_PAGE = 200;

/**
 * The keep-alive minutes owners granted the instance in the last 24 h, from its events (each records
 * who asked and how many minutes). Read under the instance's row lock when granting one, so two
 * concurrent keep-alives cannot both spend the same budget. Events are paged newest first and the
 * reading stops at the window's start.
 */
async function ownerKeepAliveUsed(repo: Pick<FleetRepository, 'listEvents'>, instanceId: number, now: number): Promise<number> {
  let used = 0;
  let before: number | undefined;
  for (;;) {
    const page = await repo.listEvents(instanceId, before, EVENT_PAGE);
    used += ownerKeepAliveMinutes(page, now);
    const last = page[page.length - 1];
    if (page.length < EVENT_PAGE || last === undefined || last.at <= now - KEEP_ALIVE_BUDGET_WINDOW_MS) return used;
    before = last.id;
  }
}

type ProviderFields = Pick<InstancePatch, 'provider' | 'provider_instance_id' | 'price_per_hour'>;

/** The provider fields a request sets, as its event records them. */
function providerFieldsOf(fields: ProviderFields): ProviderFields {
  const set: ProviderFields = {};
  if (fields.provider !== undefined) set.provider = fields.provider;
  if (fields.provider_instance_id !== undefined) set.provider_instance_id = fields.provider_instance_id;
  if (fields.price_per_hour !== undefined) set.price_per_hour = fields.price_per_hour;
  return set;
}

/** The settings the provider fields of a request set (undefined fields are left alone). */
function providerSettings(fields: ProviderFields): Partial<InstanceSettings> {
  const settings: Partial<InstanceSettings> = {};
  if (fields.provider !== undefined) settings.provider = fields.provider;
  if (fields.provider_instance_id !== undefined) settings.providerInstanceId = fields.provider_instance_id;
  if (fields.price_per_hour !== undefined) settings.pricePerHour = fields.price_per_hour;
  return settings;
}

/** What operators (API keys) do: register, look, postpone, tune, command. Every write is one transaction. */
export class OperatorService {
  constructor(
    private readonly store: FleetStore,
    private readonly clock: Clock,
    private readonly config: ServerConfig,
    private readonly providers: Providers,
    private readonly policies: PolicyBook,
    private readonly signals: SignalBoard | null = null,
    private readonly massSilence: MassSilenceGuard | null = null,
  ) {}

  /**
   * One machine, one instance: an id the provider already knows another instance by would let this
   * instance's hibernation stop (and its wake start) someone else's machine.
   */
  private async checkProviderIdFree(repo: FleetRepository, instanceId: number, settings: Pick<InstanceSettings, 'providerInstanceId'>): Promise<void> {
    const id = providerInstanceIdOf(instanceId, settings);
    const others = (await repo.instancesKnownToProviderAs(id)).filter((other) => other !== instanceId);
    if (others.length > 0) {
      throw new DumontError('invalid_request', `provider_instance_id: ${id} is already how the provider knows another instance; each machine belongs to one instance`, 'provider_instance_id');
    }
  }

  /** An instance may name only a provider this server is configured for. */
  private checkProvider(fields: ProviderFields): void {
    if (fields.provider !== undefined && !this.providers.has(fields.provider)) {
      throw new DumontError('invalid_request', `provider: ${fields.provider} is ${Providers.missing(fields.provider)} on this server`, 'provider');
    }
  }

  async register(operator: Operator, request: RegisterInstanceRequest & { owner?: string }): Promise<Omit<RegisterInstanceResponse, 'install_command'>> {
    const now = this.clock.now();
    if (request.owner !== undefined && !operator.admin && request.owner !== operator.owner) {
      throw new DumontError('forbidden', 'only an admin key may register an instance for another owner', 'owner');
    }
    this.checkProvider(request);
    // Checked before anything is written: a bad label refuses the whole registration.
    const labels = request.labels === undefined ? undefined : checkLabels(request.labels);
    const token = newSecret('dmt');
    const tokenHash = hashSecret(token);
    // Two first registrations of one id at once: the loser finds the winner's row and re-registers.
    for (let attempt = 1; ; attempt++) {
      const rotated = await this.registerOnce(operator, request, labels, tokenHash, now);
      if (rotated !== null) return { instance_id: request.instance_id, agent_token: token, rotated };
      if (attempt >= 3) throw new DumontError('unavailable', `instance ${request.instance_id} is being registered by other requests; try again`, 'instance_id');
    }
  }

  /** null: another request inserted the instance meanwhile (nothing was written here). */
  private registerOnce(operator: Operator, request: RegisterInstanceRequest & { owner?: string }, labels: Labels | undefined, tokenHash: string, now: number): Promise<boolean | null> {
    return this.store.transaction(async (repo) => {
      const existing = await repo.getInstance(request.instance_id, { forUpdate: true });
      if (existing) {
        // Exactly the answer to any request about an instance this key cannot see: nothing about its owner.
        if (!canSee(operator, existing.owner)) throw notFound(request.instance_id);
        // A re-register rotates the token; the instance changes hands only when an admin names a new owner.
        const owner = operator.admin && request.owner !== undefined ? request.owner : existing.owner;
        const moved = owner !== existing.owner;
        const write = new InstanceWrite(existing, now, this.config, this.policies.current());
        write.change = { settings: providerSettings(request), agentTokenHash: tokenHash };
        if (request.provider_instance_id !== undefined) await this.checkProviderIdFree(repo, request.instance_id, write.settings);
        if (moved) write.change.owner = owner;
        if (request.hostname !== undefined) write.change.hostname = request.hostname;
        const repriced = request.price_per_hour !== undefined && request.price_per_hour !== existing.settings.pricePerHour;
        // Hours already saved keep the price and owner they were saved at: the open interval closes here.
        if ((repriced || moved) && existing.facts.savingSince !== null) write.facts = { ...write.facts, savingSince: now };
        const reason = moved
          ? `instance re-registered by ${operator.owner} and moved from owner ${existing.owner} to ${owner}; the old agent token no longer works`
          : `instance re-registered by ${operator.owner}; the old agent token no longer works`;
        // The old owner's labels are none of the new owner's business: a move without labels clears them.
        const clearLabels = moved && labels === undefined;
        const data = moved ? { rotated_by: operator.owner, previous_owner: existing.owner, owner, ...(clearLabels ? { labels_cleared: true } : {}) } : { rotated_by: operator.owner };
        write.events.push({ type: 'token_rotated', reason, data });
        const fields: Record<string, unknown> = providerFieldsOf(request);
        // Left out, the stored labels stay (an agent's install script re-registers without them).
        if (labels !== undefined) {
          const policies = await this.policies.load(repo);
          checkPolicyMove(matchingPolicy(policies, existing.labels), matchingPolicy(policies, labels), operator.admin);
          await repo.setLabels(request.instance_id, labels);
          fields.labels = labels;
        } else if (clearLabels) {
          await repo.setLabels(request.instance_id, {});
        }
        if (Object.keys(fields).length > 0) write.events.push({ type: 'instance_updated', reason: `instance updated by ${operator.owner} at re-registration`, data: fields });
        await write.commit(repo);
        return true;
      }
      const owner = request.owner ?? operator.owner;
      if (labels !== undefined && !operator.admin) {
        // A new instance starts where an unlabelled one would: an owner's labels may not choose its policy.
        const policies = await this.policies.load(repo);
        checkPolicyMove(matchingPolicy(policies, {}), matchingPolicy(policies, labels), false);
      }
      await this.checkProviderIdFree(repo, request.instance_id, { providerInstanceId: request.provider_instance_id ?? null });
      const inserted = await repo.insertInstanceIfAbsent({
        instanceId: request.instance_id,
        owner,
        agentTokenHash: tokenHash,
        hostname: request.hostname ?? null,
        registeredAt: now,
        settings: providerSettings(request),
      });
      if (!inserted) return null;
      if (labels !== undefined) await repo.setLabels(request.instance_id, labels);
      const data = labels === undefined ? {} : { labels };
      await repo.insertEvents(instanceEvents(request.instance_id, now, [{ type: 'registered', reason: `registered for owner ${owner}`, data }]));
      await repo.requireDurableCommit();
      return false;
    });
  }

  async list(operator: Operator, query: ListInstancesQuery): Promise<ListInstancesResponse> {
    const now = this.clock.now();
    const limit = query.limit ?? DEFAULT_PAGE_LIMIT;
    const sort = query.sort ?? DEFAULT_INSTANCE_SORT;
    if (!INSTANCE_SORTS.includes(sort)) {
      throw new DumontError('invalid_request', `sort: one of ${INSTANCE_SORT_KEYS.join(', ')}, optionally with a leading -`, 'sort');
    }
    // PostgreSQL refuses a NUL in text: no hostname holds one, so no search can match it.
    if (query.q?.includes('\u0000')) throw new DumontError('invalid_request', 'q: must not contain a NUL character', 'q');
    const labels = parseLabelSelector(query.label);
    const order = { key: sort.replace(/^-/, '') as InstanceSortKey, descending: sort.startsWith('-') };
    const after = query.cursor === undefined ? undefined : decodeInstanceCursor(sort, query.cursor);
    const owner = operator.admin ? null : operator.owner;
    const filter = { owner, status: query.status, search: query.q, labels };
    const [rows, counts] = await Promise.all([
      this.store.listInstances({ ...filter, order, after, limit: limit + 1 }),
      this.store.countInstancesByStatus(owner),
    ]);
    const page = rows.slice(0, limit);
    // Without a search or a selector the status counters answer. A search that fits on its first page
    // counted itself (finding one host is the usual search); any other counts its matches, a scan like
    // the search's.
    const counted = query.q === undefined && labels.length === 0 ? null : after === undefined && rows.length <= limit ? rows.length : undefined;
    const [matching, pageLabels] = await Promise.all([
      counted === undefined ? this.store.countInstances(filter) : counted,
      this.store.labelsOf(page.map((r) => r.instanceId)),
    ]);
    const countOf = (status: string) => counts.get(status) ?? 0;
    const total = INSTANCE_STATUSES.reduce((sum, s) => sum + countOf(s), 0);
    const last = page[page.length - 1];
    return {
      instances: page.map((r) => toSummary(r, now, pageLabels.get(r.instanceId) ?? {})),
      count: matching ?? (query.status ? countOf(query.status) : total),
      active_count: countOf('active'),
      idle_count: countOf('idle'),
      hibernating_count: countOf('hibernating'),
      hibernated_count: countOf('hibernated'),
      offline_count: countOf('offline'),
      waking_count: countOf('waking'),
      next_cursor: rows.length > limit && last ? encodeInstanceCursor(sort, { value: last.sortKey ?? null, instanceId: last.instanceId }) : null,
      mass_silence: massSilenceView(this.massSilence?.state ?? null),
    };
  }

  private async visible(repo: FleetRepository, operator: Operator, instanceId: number, forUpdate = false): Promise<InstanceRecord> {
    const instance = await repo.getInstance(instanceId, { forUpdate });
    if (!instance || !canSee(operator, instance.owner)) throw notFound(instanceId);
    return instance;
  }

  async detail(operator: Operator, instanceId: number): Promise<InstanceDetail> {
    return this.detailOf(await this.visible(this.store, operator, instanceId));
  }

  /** The detail with the instance's savings over its whole history. */
  private async detailOf(instance: InstanceRecord): Promise<InstanceDetail> {
    const now = this.clock.now();
    const query = { owner: instance.owner, instanceId: instance.instanceId };
    const effective = effectivePolicyOf(instance, this.policies.current(), this.config, now);
    const limits = effective.limits;
    const [closed, open, labels, keepAliveUsed] = await Promise.all([
      this.store.listSavings({ ...query, from: 0, to: now }),
      this.store.listOpenSavings(query),
      this.store.labelsOf([instance.instanceId]),
      limits.keepAliveBudgetMinutes === null ? 0 : ownerKeepAliveUsed(this.store, instance.instanceId, now),
    ]);
    const figures = sumSavings([...closed, ...openIntervals(open, now)], 0, now).get(instance.instanceId) ?? noSavings();
    const savings = { hibernated_hours: figures.hibernated_hours, gpu_hours_saved: figures.gpu_hours_saved, usd_saved: figures.usd_saved };
    return toDetail(instance, this.config, now, savings, labels.get(instance.instanceId) ?? {}, effective, keepAliveLeft(limits, keepAliveUsed), this.signals?.lastVerdictsOf(instance.instanceId) ?? null);
  }

  /** Runs one policy input against a locked instance and stores the outcome; returns the write made. */
  private async transition(
    operator: Operator,
    instanceId: number,
    prepare: (instance: InstanceRecord, write: InstanceWrite, repo: FleetRepository) => PolicyInput | Promise<PolicyInput>,
  ): Promise<InstanceWrite> {
    const now = this.clock.now();
    return this.store.transaction(async (repo) => {
      const current = await this.visible(repo, operator, instanceId, true);
      // Read in the transaction: an operator's change is judged by the policies as they are now.
      const write = new InstanceWrite(current, now, this.config, await this.policies.load(repo));
      const input = await prepare(current, write, repo);
      const { policy, settings } = write.evaluation();
      await write.absorb(evaluate(write.facts, policy, input, settings, now), repo, `owner ${operator.owner}`);
      await write.commit(repo);
      return write;
    });
  }

  /** The detail as it stands after a change this operator just made. */
  private async detailAfter(operator: Operator, instanceId: number): Promise<InstanceDetail> {
    return this.detailOf(await this.visible(this.store, operator, instanceId));
  }

  async keepAlive(operator: Operator, instanceId: number, minutes: number): Promise<KeepAliveResponse> {
    const now = this.clock.now();
    const until = now + minutes * 60_000;
    await this.transition(operator, instanceId, async ({ facts }, write, repo) => {
      if (facts.status === 'hibernating' || facts.status === 'hibernated') {
        throw new DumontError(
          'instance_hibernating',
          `instance ${instanceId} is ${facts.status}; a keep-alive cannot postpone it (it wakes with its next heartbeat)`,
        );
      }
      if (!operator.admin) {
        const limits = write.effective.limits;
        const used = limits.keepAliveBudgetMinutes === null ? 0 : await ownerKeepAliveUsed(repo, instanceId, now);
        checkKeepAlive(limits, minutes, used, operator.admin);
      }
      return { kind: 'keep_alive', until, by: { owner: operator.owner, admin: operator.admin, minutes } };
    });
    return {
      success: true,
      instance_id: instanceId,
      hibernation_postponed_until: new Date(until).toISOString(),
      message: `Hibernation postponed by ${minutes} minutes`,
    };
  }

  async patchHibernation(operator: Operator, instanceId: number, patch: HibernationPolicyPatch): Promise<InstanceDetail> {
    await this.transition(operator, instanceId, (_instance, write) => {
      const before = write.effective;
      checkHibernationPatch(before.limits, patch, operator.admin);
      const settings: Partial<InstanceSettings> = {};
      // Each bounded setting remembers whether an admin set it: an admin's value stands, an owner's is
      // bounded by the limits when evaluated (effective-policy.ts), even after a limit is lowered.
      if (patch.enabled !== undefined) {
        settings.hibernationEnabled = patch.enabled;
        settings.enabledSetByAdmin = operator.admin;
      }
      if (patch.dry_run !== undefined) {
        settings.dryRun = patch.dry_run;
        settings.dryRunSetByAdmin = operator.admin;
      }
      if (patch.threshold_minutes !== undefined) {
        settings.thresholdMinutes = patch.threshold_minutes;
        // Back to the policy's value: nobody's own value is left to bound.
        settings.thresholdSetByAdmin = patch.threshold_minutes !== null && operator.admin;
      }
      if (patch.ignore_gpu_processes !== undefined) settings.ignoreGpuProcesses = patch.ignore_gpu_processes;
      write.change.settings = settings;
      const after = write.effective;
      checkOwnerOutcome({ enabled: before.enabled.value, dryRun: before.dryRun.value }, { enabled: after.enabled.value, dryRun: after.dryRun.value }, before.limits, operator.admin);
      write.events.push({ type: 'policy_changed', reason: `hibernation policy changed by ${operator.owner}`, data: { ...patch, by: operator.owner, by_admin: operator.admin } });
      return { kind: 'policy_changed' };
    });
    return this.detailAfter(operator, instanceId);
  }

  /**
   * Provider, provider instance id, price and labels (a merge patch). A new price closes the open saving
   * interval at the old one.
   */
  async patchInstance(operator: Operator, instanceId: number, patch: InstancePatch): Promise<InstanceDetail> {
    this.checkProvider(patch);
    const labelPatch = patch.labels === undefined ? undefined : checkLabelPatch(patch.labels);
    await this.transition(operator, instanceId, async (current, write, repo) => {
      if (labelPatch !== undefined) {
        // Read and replaced under the instance's row lock: two patches merge one after the other.
        const stored = (await repo.labelsOf([instanceId])).get(instanceId) ?? {};
        const before = write.effective.policy;
        write.labels = mergeLabels(stored, labelPatch);
        checkPolicyMove(before, write.effective.policy, operator.admin);
        await repo.setLabels(instanceId, write.labels);
      }
      // Checked with the labels as they will be: a patch cannot move itself out of its policy's provider.
      const policy = write.effective.policy;
      checkProviderPatch(policy?.spec.provider, policy?.name, patch.provider, operator.admin);
      write.change.settings = providerSettings(patch);
      if (patch.provider_instance_id !== undefined) await this.checkProviderIdFree(repo, instanceId, write.settings);
      if (patch.price_per_hour !== undefined && patch.price_per_hour !== current.settings.pricePerHour && current.facts.savingSince !== null) {
        write.facts = { ...write.facts, savingSince: this.clock.now() };
      }
      write.events.push({ type: 'instance_updated', reason: `instance updated by ${operator.owner}`, data: { ...patch } });
      return { kind: 'policy_changed' };
    });
    return this.detailAfter(operator, instanceId);
  }

  /** Starts a hibernated instance through its provider; the first heartbeat makes it `active`. */
  async wake(operator: Operator, instanceId: number): Promise<WakeResponse> {
    await this.transition(operator, instanceId, ({ facts }) => {
      if (facts.status !== 'hibernated') {
        throw new DumontError('instance_not_hibernated', `instance ${instanceId} is ${facts.status}; only a hibernated instance can be woken`);
      }
      return { kind: 'wake', reason: `wake requested by ${operator.owner}` };
    });
    return { success: true, instance_id: instanceId, status: 'waking' };
  }

  /** Savings over [from, to): stored hibernated intervals × price, and dry-run's would-have-saved. */
  async savings(operator: Operator, query: SavingsQuery): Promise<SavingsResponse> {
    const now = this.clock.now();
    const to = query.to === undefined ? now : parseTimestamp(query.to);
    if (to === null) throw new DumontError('invalid_request', 'to: must be an RFC 3339 date-time', 'to');
    const from = query.from === undefined ? to - DEFAULT_SAVINGS_DAYS * 86_400_000 : parseTimestamp(query.from);
    if (from === null) throw new DumontError('invalid_request', 'from: must be an RFC 3339 date-time', 'from');
    if (to <= from) throw new DumontError('invalid_request', 'to: must be after from', 'to');
    const labels = parseLabelSelector(query.label);
    const owner = operator.admin ? null : operator.owner;
    const [closed, open] = await Promise.all([this.store.listSavings({ owner, labels, from, to }), this.store.listOpenSavings({ owner, labels })]);
    const perInstance = sumSavings([...closed, ...openIntervals(open, now)], from, to);
    const hostnames = await this.store.hostnamesOf([...perInstance.keys()]);
    const instances = [...perInstance.entries()]
      .sort(([a], [b]) => a - b)
      .map(([instanceId, figures]) => ({ instance_id: instanceId, hostname: hostnames.get(instanceId) ?? null, ...figures }));
    return { from: new Date(from).toISOString(), to: new Date(to).toISOString(), ...totalOf(perInstance.values()), instances };
  }

  /**
   * With an `Idempotency-Key`, the same key for the same instance makes one command: a repeat answers
   * the command the first request made (`replayed`), a repeat with another request is refused.
   */
  async createCommand(
    operator: Operator,
    instanceId: number,
    request: CreateCommandRequest,
    idempotencyKey?: string,
  ): Promise<{ command: CommandView; replayed: boolean }> {
    let commandId: string | null = null;
    let write: InstanceWrite;
    try {
      write = await this.transition(operator, instanceId, async (current, write, repo) => {
        if (idempotencyKey !== undefined) {
          // Read under the instance's row lock: a concurrent request with the same key waits, then replays.
          const earlier = await repo.findCommandByIdempotencyKey(instanceId, idempotencyKey);
          if (earlier) {
            if (!sameCommandRequest(earlier, request)) {
              throw new DumontError(
                'idempotency_key_reused',
                `idempotency-key was already used for a different ${earlier.type} command on instance ${instanceId}`,
                'idempotency-key',
              );
            }
            throw new Replay(earlier);
          }
          // Whether the command comes from here or from the policy (hibernate), it carries the key.
          write.idempotencyKey = idempotencyKey;
        }
        if (request.type === 'hibernate') {
          const status = current.facts.status;
          if (status === 'hibernating' || status === 'hibernated' || status === 'waking') {
            throw new DumontError('instance_hibernating', `instance ${instanceId} is already ${status}`);
          }
          if (write.effective.dryRun.value) {
            throw new DumontError('dry_run', `instance ${instanceId} is in dry-run (DUMONT_DRY_RUN or hibernation.dry_run); nothing is hibernated`);
          }
          return { kind: 'hibernate_now', reason: `hibernate requested by ${operator.owner}` };
        }
        commandId = await write.issueCommand(repo, request.type, request.args ?? {}, `owner ${operator.owner}`, `requested by ${operator.owner}`);
        return { kind: 'tick' };
      });
    } catch (error) {
      if (error instanceof Replay) return { command: toCommandView(error.command), replayed: true };
      throw error;
    }
    const command = await this.store.getCommand(commandId ?? write.hibernateCommandId!);
    return { command: toCommandView(command!), replayed: false };
  }

  async listCommands(operator: Operator, instanceId: number, limit = DEFAULT_PAGE_LIMIT): Promise<CommandListResponse> {
    await this.visible(this.store, operator, instanceId);
    const rows = await this.store.listCommands(instanceId, limit);
    return { commands: rows.map(toCommandView), count: rows.length };
  }

  async listEvents(operator: Operator, instanceId: number, query: ListEventsQuery): Promise<EventListResponse> {
    await this.visible(this.store, operator, instanceId);
    const limit = query.limit ?? DEFAULT_PAGE_LIMIT;
    const before = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    const rows = await this.store.listEvents(instanceId, before, limit + 1);
    const page = rows.slice(0, limit);
    return {
      events: page.map(toEventView),
      next_cursor: rows.length > limit ? encodeCursor(page[page.length - 1]!.id) : null,
    };
  }
}
