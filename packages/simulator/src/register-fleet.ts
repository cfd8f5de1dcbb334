import { performance } from 'node:perf_hooks';
import { retryAfterMs, type ApiClient } from './api-client.js';
import type { AgentSpec } from './fleet-plan.js';
import { LatencyHistogram } from './latency-histogram.js';

export interface RegisterOptions {
  concurrency: number;
  /** Tries per instance (429, 5xx and connection errors are retried). */
  maxAttempts?: number;
  /** Gives up on whatever is not registered by then (performance.now() ms). */
  deadline?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface RegisterResult {
  /** tokens[i] is the agent token of specs[i], or null if it could not be registered. */
  tokens: Array<string | null>;
  registered: number;
  failed: number;
  rateLimited: number;
  seconds: number;
  latency: LatencyHistogram;
  /** The first few failure reasons, for the summary. */
  errors: string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Registers every planned instance with the admin key, `concurrency` requests at a time. */
export async function registerFleet(
  client: ApiClient,
  adminKey: string,
  specs: readonly AgentSpec[],
  options: RegisterOptions,
): Promise<RegisterResult> {
  const started = performance.now();
  const maxAttempts = options.maxAttempts ?? 5;
  const deadline = options.deadline ?? started + 30 * 60_000;
  const result: RegisterResult = {
    tokens: new Array(specs.length).fill(null),
    registered: 0,
    failed: 0,
    rateLimited: 0,
    seconds: 0,
    latency: new LatencyHistogram(),
    errors: [],
  };
  const fail = (reason: string) => {
    result.failed += 1;
    if (result.errors.length < 5) result.errors.push(reason);
  };
  let next = 0;
  let done = 0;

  const registerOne = async (spec: AgentSpec, position: number) => {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (performance.now() > deadline) return fail(`instance ${spec.instanceId}: registration deadline passed`);
      let wait = Math.min(5000, 100 * 2 ** attempt);
      try {
        const res = await client.request('POST', '/api/v1/agent/instances', adminKey, {
          instance_id: spec.instanceId,
          hostname: spec.hostname,
        });
        result.latency.record(res.latencyMs);
        if ((res.status === 200 || res.status === 201) && typeof res.json?.agent_token === 'string') {
          result.tokens[position] = res.json.agent_token;
          result.registered += 1;
          return;
        }
        if (res.status === 429) {
          result.rateLimited += 1;
          wait = retryAfterMs(res.headers['retry-after']) ?? wait;
          attempt -= 1; // waiting out a rate limit is not a failed try
        } else if (res.status < 500) {
          return fail(`instance ${spec.instanceId}: ${res.status} ${res.json?.error ?? ''} ${res.json?.message ?? ''}`.trim());
        }
      } catch (error) {
        if (attempt === maxAttempts) return fail(`instance ${spec.instanceId}: ${(error as Error).message}`);
      }
      if (performance.now() + wait > deadline) return fail(`instance ${spec.instanceId}: registration deadline passed`);
      await sleep(wait);
    }
    fail(`instance ${spec.instanceId}: gave up after ${maxAttempts} tries`);
  };

  const worker = async () => {
    while (next < specs.length) {
      const position = next++;
      await registerOne(specs[position]!, position);
      done += 1;
      if (options.onProgress && (done % 1000 === 0 || done === specs.length)) options.onProgress(done, specs.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency, specs.length)) }, worker));
  result.seconds = (performance.now() - started) / 1000;
  return result;
}
