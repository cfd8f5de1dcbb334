import type { CommandResult, DeliveredCommand } from '@dumont/protocol';
import { performance } from 'node:perf_hooks';
import { ApiClient, retryAfterMs } from './api-client.js';
import { initialState, sampleHost, silenceAfterBeat, type BehaviourState } from './behaviour.js';
import { planFleet, profileCounts, type AgentSpec } from './fleet-plan.js';
import { heartbeatBody, nextTimestamp } from './heartbeat-body.js';
import { LatencyHistogram } from './latency-histogram.js';
import { Pacer } from './pacer.js';
import { deriveSeed, Rng } from './prng.js';
import type { ProfileMix } from './profiles.js';
import { registerFleet } from './register-fleet.js';
import { summarize, type SimulationSummary } from './summary.js';
import type { TokenEntry } from './tokens-file.js';

export interface SimulationOptions {
  /** http://127.0.0.1:PORT (loopback only). */
  apiUrl: string;
  /** Registers the agents; not needed when `tokens` covers them all. */
  adminKey?: string;
  agents: number;
  /** Length of the beating phase (after registration), seconds. */
  durationSeconds: number;
  seed: number;
  /** Most requests in flight at once (and sockets in the keep-alive pool). */
  concurrency?: number;
  firstInstanceId?: number;
  mix?: ProfileMix;
  /** The diurnal profile's compressed day, seconds. */
  daySeconds?: number;
  /** Each wait between beats is the server's `next_heartbeat_in` times 1 ± jitter. */
  jitter?: number;
  /** First beats are spread over this many seconds, as agents of a real fleet start at different times. */
  rampSeconds?: number;
  /** Each agent stops after this many beats. */
  beatsPerAgent?: number;
  /** A hibernated agent beats again (it was woken) after this many seconds; null: it stays down. */
  wakeAfterSeconds?: number | null;
  /** Register, then stop without beating. */
  registerOnly?: boolean;
  /** Tokens of instances registered earlier (by instance id); those are not registered again. */
  tokens?: ReadonlyMap<number, string>;
  requestTimeoutMs?: number;
  /** Progress lines (registration, every 10 s of beating); none when absent. */
  log?: (line: string) => void;
}

export interface SimulationResult {
  summary: SimulationSummary;
  /** Every agent with a token, for `--tokens-out`. */
  tokens: TokenEntry[];
}

/** A server that answers `next_heartbeat_in: 0` must not turn the simulator into a busy loop. */
export const MIN_INTERVAL_MS = 50;
const DEFAULT_INTERVAL_MS = 30_000;

interface LiveAgent {
  spec: AgentSpec;
  token: string;
  behaviour: BehaviourState;
  jitter: Rng;
  lastTimestampMs: number;
  intervalMs: number;
  beats: number;
  results: CommandResult[];
  seenCommands: Set<string> | null;
  hibernateAckPending: boolean;
  /** Hibernated, and its next beat is the one that wakes it. */
  waking: boolean;
}

export class Counters {
  sent = 0;
  ok = 0;
  clientErrors = 0;
  serverErrors = 0;
  networkErrors = 0;
  rateLimited = 0;
  commandsReceived: Record<string, number> = {};
  commandsAcknowledged = 0;
  hibernated = 0;
  woke = 0;
  silences = 0;
  errors: string[] = [];
  readonly latency = new LatencyHistogram();
  readonly lateness = new LatencyHistogram();

  note(error: string): void {
    if (this.errors.length < 5) this.errors.push(error);
  }
}

/** Registers the fleet (or reuses tokens), then beats until the duration ends or every agent stopped. */
export async function runSimulation(options: SimulationOptions): Promise<SimulationResult> {
  if (!(options.durationSeconds > 0) || options.durationSeconds > 86_400) throw new Error('duration must be in (0, 86400] seconds');
  const concurrency = options.concurrency ?? 64;
  const plan = planFleet({
    seed: options.seed,
    agents: options.agents,
    firstInstanceId: options.firstInstanceId ?? 1_000_000,
    ...(options.mix ? { mix: options.mix } : {}),
  });
  const log = options.log ?? (() => {});
  const client = new ApiClient(options.apiUrl, { maxSockets: concurrency, timeoutMs: options.requestTimeoutMs ?? 10_000 });
  try {
    const tokens: Array<string | null> = plan.map((spec) => options.tokens?.get(spec.instanceId) ?? null);
    const missing = plan.filter((spec) => tokens[spec.index] === null);
    let registration = null;
    if (missing.length > 0) {
      if (!options.adminKey) throw new Error(`${missing.length} agents have no token: give an admin key to register them`);
      log(`registering ${missing.length} instances (${concurrency} at a time)…`);
      registration = await registerFleet(client, options.adminKey, missing, {
        concurrency,
        onProgress: (done, total) => {
          if (total >= 10_000) log(`  registered ${done}/${total}`);
        },
      });
      for (const [i, spec] of missing.entries()) tokens[spec.index] = registration.tokens[i] ?? null;
    }
    const tokenEntries: TokenEntry[] = [];
    for (const spec of plan) {
      const token = tokens[spec.index];
      if (token) tokenEntries.push({ instance_id: spec.instanceId, hostname: spec.hostname, agent_token: token });
    }
    const counters = new Counters();
    let beatSeconds = 0;
    if (!options.registerOnly) {
      beatSeconds = await beatPhase(client, plan, tokens, options, counters, concurrency, log);
    }
    return {
      summary: summarize({ options, plan, profiles: profileCounts(plan), registration, counters, beatSeconds, concurrency }),
      tokens: tokenEntries,
    };
  } finally {
    client.close();
  }
}

async function beatPhase(
  client: ApiClient,
  plan: readonly AgentSpec[],
  tokens: ReadonlyArray<string | null>,
  options: SimulationOptions,
  counters: Counters,
  concurrency: number,
  log: (line: string) => void,
): Promise<number> {
  const jitter = options.jitter ?? 0.1;
  const daySeconds = options.daySeconds ?? 600;
  const beatsPerAgent = options.beatsPerAgent ?? Infinity;
  const wakeAfterMs = options.wakeAfterSeconds == null ? null : options.wakeAfterSeconds * 1000;
  const startWall = Date.now();
  const start = performance.now();
  const end = start + options.durationSeconds * 1000;
  const rampMs = (options.rampSeconds ?? Math.min(10, options.durationSeconds / 4)) * 1000;
  let running = 0;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => (finish = resolve));

  const retire = () => {
    running -= 1;
    if (running === 0) finish();
  };

  const pacer: Pacer<LiveAgent> = new Pacer<LiveAgent>({
    concurrency,
    run: (agent, lateMs) => beat(agent, lateMs),
    onError: (error) => counters.note(`simulator: ${(error as Error).message}`),
  });

  const again = (agent: LiveAgent, delayMs: number) => {
    const at = performance.now() + Math.max(MIN_INTERVAL_MS, delayMs);
    // A beat that would fall after the end is never sent: the agent is done for this run.
    if (at >= end) return retire();
    pacer.schedule(at, agent);
  };
  const jittered = (agent: LiveAgent, ms: number) => ms * (1 + jitter * (2 * agent.jitter.next() - 1));

  const accept = (agent: LiveAgent, commands: DeliveredCommand[]) => {
    for (const command of commands) {
      agent.seenCommands ??= new Set();
      if (agent.seenCommands.has(command.id)) continue; // re-delivered until acknowledged
      agent.seenCommands.add(command.id);
      counters.commandsReceived[command.type] = (counters.commandsReceived[command.type] ?? 0) + 1;
      // The simulated host runs every command at once and reports success in its next beat.
      agent.results.push({ id: command.id, status: 'succeeded', detail: `simulated ${command.type}` });
    }
  };

  async function beat(agent: LiveAgent, lateMs: number): Promise<void> {
    counters.lateness.record(lateMs);
    const nowMs = Date.now();
    agent.lastTimestampMs = nextTimestamp(agent.lastTimestampMs, nowMs);
    const sample = sampleHost(agent.spec, agent.behaviour, nowMs, (nowMs - startWall) / 1000, { daySeconds });
    const results = agent.results;
    agent.results = [];
    const hibernateAck = agent.hibernateAckPending && results.length > 0;
    const body = heartbeatBody(agent.spec, sample, new Date(agent.lastTimestampMs).toISOString(), results);
    counters.sent += 1;
    agent.beats += 1;
    let res;
    try {
      res = await client.request('POST', '/api/v1/agent/status', agent.token, body);
    } catch (error) {
      counters.networkErrors += 1;
      counters.note(`beat ${agent.spec.instanceId}: ${(error as Error).message}`);
      agent.results = results.concat(agent.results);
      return again(agent, jittered(agent, agent.intervalMs));
    }
    counters.latency.record(res.latencyMs);
    if (res.status >= 200 && res.status < 300) {
      counters.ok += 1;
      counters.commandsAcknowledged += results.length;
      if (agent.waking) {
        agent.waking = false;
        counters.woke += 1;
      }
      const next = Number(res.json?.next_heartbeat_in);
      if (Number.isFinite(next)) agent.intervalMs = Math.max(MIN_INTERVAL_MS, next * 1000);
      if (hibernateAck) {
        // The host is down now. It beats again only if someone wakes it.
        agent.hibernateAckPending = false;
        counters.hibernated += 1;
        if (wakeAfterMs === null) return retire();
        agent.behaviour.lastActivityMs = Date.now() + wakeAfterMs;
        agent.waking = true;
        return again(agent, wakeAfterMs);
      }
      const commands: DeliveredCommand[] = Array.isArray(res.json?.commands) ? res.json.commands : [];
      accept(agent, commands);
      if (commands.some((c) => c.type === 'hibernate')) agent.hibernateAckPending = true;
      if (agent.beats >= beatsPerAgent && agent.results.length === 0) return retire();
      const silence = silenceAfterBeat(agent.spec, agent.behaviour);
      if (silence > 0) {
        counters.silences += 1;
        return again(agent, jittered(agent, agent.intervalMs * silence));
      }
      return again(agent, jittered(agent, agent.intervalMs));
    }
    if (res.status === 429) {
      counters.rateLimited += 1;
      agent.results = results.concat(agent.results);
      return again(agent, jittered(agent, retryAfterMs(res.headers['retry-after']) ?? agent.intervalMs));
    }
    if (res.status >= 500) {
      counters.serverErrors += 1;
      agent.results = results.concat(agent.results);
    } else {
      // A 4xx is not retried with the same command results: resending them would fail the same way.
      counters.clientErrors += 1;
      agent.hibernateAckPending = false;
    }
    counters.note(`beat ${agent.spec.instanceId}: ${res.status} ${res.json?.error ?? ''} ${res.json?.message ?? ''}`.trim());
    if (agent.beats >= beatsPerAgent) return retire();
    return again(agent, jittered(agent, agent.intervalMs));
  }

  for (const spec of plan) {
    const token = tokens[spec.index];
    if (!token) continue;
    const agent: LiveAgent = {
      spec,
      token,
      behaviour: initialState(spec, startWall),
      jitter: new Rng(deriveSeed(options.seed, spec.index, 2)),
      lastTimestampMs: 0,
      intervalMs: DEFAULT_INTERVAL_MS,
      beats: 0,
      results: [],
      seenCommands: null,
      hibernateAckPending: false,
      waking: false,
    };
    running += 1;
    pacer.schedule(start + agent.jitter.next() * rampMs, agent);
  }
  if (running === 0) finish();

  const progress = setInterval(() => {
    const seconds = (performance.now() - start) / 1000;
    log(
      `  ${seconds.toFixed(0)} s: ${counters.sent} beats (${(counters.sent / seconds).toFixed(0)}/s), ` +
        `${counters.ok} ok, p99 ${counters.latency.percentile(99).toFixed(1)} ms, ${pacer.inFlight} in flight, ${running} agents running`,
    );
  }, 10_000);
  const timeout = setTimeout(finish, Math.max(0, end - performance.now()));
  try {
    await finished;
  } finally {
    clearTimeout(timeout);
    clearInterval(progress);
    await pacer.stop();
  }
  return (performance.now() - start) / 1000;
}
