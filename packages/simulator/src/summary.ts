import type { AgentSpec } from './fleet-plan.js';
import type { LatencyHistogram } from './latency-histogram.js';
import type { RegisterResult } from './register-fleet.js';
import type { Counters, SimulationOptions } from './simulation.js';

export interface LatencySummary {
  p50: number;
  p99: number;
  max: number;
}

/** What a run did, as printed at the end and returned by `runSimulation` (plain JSON). */
export interface SimulationSummary {
  seed: number;
  agents: number;
  gpus: number;
  profiles: Record<string, number>;
  concurrency: number;
  registration: {
    requested: number;
    registered: number;
    failed: number;
    rateLimited: number;
    seconds: number;
    perSecond: number;
    latencyMs: LatencySummary;
    errors: string[];
  } | null;
  beats: {
    seconds: number;
    sent: number;
    perSecond: number;
    ok: number;
    clientErrors: number;
    serverErrors: number;
    networkErrors: number;
    rateLimited: number;
    latencyMs: LatencySummary;
    /** How long due beats waited for a free slot (all slots busy = the server is the bottleneck). */
    lateMs: LatencySummary;
  };
  commands: { received: Record<string, number>; acknowledged: number };
  hibernated: number;
  woke: number;
  silences: number;
  errors: string[];
}

const round2 = (n: number) => Math.round(n * 100) / 100;
const latency = (h: LatencyHistogram): LatencySummary => ({ p50: round2(h.percentile(50)), p99: round2(h.percentile(99)), max: round2(h.max) });

export function summarize(input: {
  options: SimulationOptions;
  plan: readonly AgentSpec[];
  profiles: Record<string, number>;
  registration: RegisterResult | null;
  counters: Counters;
  beatSeconds: number;
  concurrency: number;
}): SimulationSummary {
  const { registration: r, counters: c } = input;
  return {
    seed: input.options.seed,
    agents: input.plan.length,
    gpus: input.plan.reduce((sum, a) => sum + a.gpus.length, 0),
    profiles: input.profiles,
    concurrency: input.concurrency,
    registration: r && {
      requested: r.tokens.length,
      registered: r.registered,
      failed: r.failed,
      rateLimited: r.rateLimited,
      seconds: round2(r.seconds),
      perSecond: r.seconds > 0 ? Math.round(r.registered / r.seconds) : 0,
      latencyMs: latency(r.latency),
      errors: r.errors,
    },
    beats: {
      seconds: round2(input.beatSeconds),
      sent: c.sent,
      perSecond: input.beatSeconds > 0 ? Math.round(c.sent / input.beatSeconds) : 0,
      ok: c.ok,
      clientErrors: c.clientErrors,
      serverErrors: c.serverErrors,
      networkErrors: c.networkErrors,
      rateLimited: c.rateLimited,
      latencyMs: latency(c.latency),
      lateMs: latency(c.lateness),
    },
    commands: { received: c.commandsReceived, acknowledged: c.commandsAcknowledged },
    hibernated: c.hibernated,
    woke: c.woke,
    silences: c.silences,
    errors: c.errors,
  };
}

/** The human summary printed at the end of `dumont-simulate`. */
export function formatSummary(s: SimulationSummary): string {
  const lines: string[] = [];
  const profiles = Object.entries(s.profiles)
    .map(([p, n]) => `${p} ${n}`)
    .join(', ');
  lines.push(`dumont-simulate: seed ${s.seed}, ${s.agents} agents, ${s.gpus} GPUs (${profiles})`);
  if (s.registration) {
    const r = s.registration;
    lines.push(
      `  registration: ${r.registered} registered, ${r.failed} failed, ${r.rateLimited} rate-limited, ` +
        `${r.seconds} s (${r.perSecond}/s), p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms`,
    );
  }
  const b = s.beats;
  if (b.sent > 0 || b.seconds > 0) {
    lines.push(`  beats: ${b.sent} sent in ${b.seconds} s (${b.perSecond}/s)`);
    lines.push(
      `  responses: 2xx ${b.ok}, 4xx ${b.clientErrors + b.rateLimited} (429: ${b.rateLimited}), 5xx ${b.serverErrors}, ` +
        `no answer ${b.networkErrors}`,
    );
    lines.push(`  latency: p50 ${b.latencyMs.p50} ms, p99 ${b.latencyMs.p99} ms, max ${b.latencyMs.max} ms`);
    lines.push(`  beats waiting for a free slot: p99 ${b.lateMs.p99} ms (concurrency ${s.concurrency})`);
    const received = Object.entries(s.commands.received)
      .map(([t, n]) => `${t} ${n}`)
      .join(', ');
    lines.push(`  commands received: ${received || 'none'}; acknowledged ${s.commands.acknowledged}`);
    lines.push(`  hibernated ${s.hibernated}, woken ${s.woke}, offline spells ${s.silences}`);
  }
  for (const error of [...(s.registration?.errors ?? []), ...s.errors]) lines.push(`  error: ${error}`);
  return lines.join('\n');
}
