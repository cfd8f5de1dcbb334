import { describe, expect, it } from 'vitest';
import { DEFAULT_FORCED_REASON, DEFAULT_IDLE_RULE, hibernateArgsOf, idleFactsOf, idleRuleOf, isForcedHibernate, judgeIdle } from './idle-rule.js';

const rule = DEFAULT_IDLE_RULE;

describe('the per-beat idle rule', () => {
  it('idle only when every GPU is known and below the threshold, no GPU process, every collector answered', () => {
    expect(judgeIdle(idleFactsOf({ gpus: [{ index: 0, utilization_percent: 4.9 }, { index: 1, utilization_percent: 0 }], process_count: 0 }), rule)).toEqual({ idle: true });
    expect(judgeIdle(idleFactsOf({ gpu_metrics: { utilization_percent: 5 }, process_count: 0 }), rule)).toEqual({ idle: false, reason: 'GPU 0 at 5% utilization' });
    expect(judgeIdle(idleFactsOf({ gpu_metrics: { utilization_percent: 0 } }), rule)).toEqual({ idle: false, reason: 'GPU process count unknown' });
    expect(judgeIdle(idleFactsOf({ process_count: 0 }), rule).idle).toBe(false);
    expect(judgeIdle(idleFactsOf({ gpu_metrics: { utilization_percent: 0 }, process_count: 2 }), rule)).toEqual({ idle: false, reason: '2 GPU process(es) running' });
    expect(judgeIdle(idleFactsOf({ gpu_metrics: { utilization_percent: 0 }, process_count: 2 }), { ...rule, ignoreGpuProcesses: true })).toEqual({ idle: true });
  });

  it('a collector error makes the beat unknown, whatever the rest says (a torn line may hide a busy GPU)', () => {
    const torn = { gpus: [{ index: 0, utilization_percent: 0 }], process_count: 0, collector_errors: [{ collector: 'nvidia-smi', message: 'unexpected line' }] };
    expect(judgeIdle(idleFactsOf(torn), rule)).toEqual({ idle: false, reason: 'collector error (nvidia-smi): its facts are unknown' });
  });

  it("names a GPU by nvidia-smi's index, not its position in the list", () => {
    const facts = idleFactsOf({ gpus: [{ index: 1, utilization_percent: 95 }], process_count: 0 });
    expect(judgeIdle(facts, rule)).toEqual({ idle: false, reason: 'GPU 1 at 95% utilization' });
    expect(judgeIdle(idleFactsOf({ gpus: [{ index: 3, utilization_percent: null }], process_count: 0 }), rule)).toEqual({ idle: false, reason: 'GPU utilization unknown (GPU 3)' });
  });

  it("a hibernate command's args carry the server's rule; missing or odd parts fall back to the defaults", () => {
    expect(idleRuleOf({ ...hibernateArgsOf({ idleUtilizationPercent: 10, ignoreGpuProcesses: true }) })).toEqual({ idleUtilizationPercent: 10, ignoreGpuProcesses: true });
    expect(idleRuleOf({})).toEqual(DEFAULT_IDLE_RULE);
    expect(idleRuleOf(undefined)).toEqual(DEFAULT_IDLE_RULE);
    expect(idleRuleOf({ idle_utilization_percent: 'ten', ignore_gpu_processes: 1 })).toEqual(DEFAULT_IDLE_RULE);
    expect(idleRuleOf({ idle_utilization_percent: 0 })).toEqual(DEFAULT_IDLE_RULE);
    expect(idleRuleOf({ idle_utilization_percent: Number.POSITIVE_INFINITY })).toEqual(DEFAULT_IDLE_RULE);
  });
});

describe('forced hibernations (an admin schedule that applies to a busy machine)', () => {
  const rule10 = { idleUtilizationPercent: 10, ignoreGpuProcesses: true };

  it('the args still carry the rule, so an agent that does not know `forced` keeps its idle check', () => {
    const args = hibernateArgsOf(rule10, { reason: 'schedule: outside active hours (Europe/Berlin Mon-Fri 08:00-20:00)' });
    expect(args).toEqual({ idle_utilization_percent: 10, ignore_gpu_processes: true, forced: true, reason: 'schedule: outside active hours (Europe/Berlin Mon-Fri 08:00-20:00)' });
    expect(idleRuleOf({ ...args })).toEqual(rule10);
    expect(isForcedHibernate({ ...args })).toEqual({ reason: 'schedule: outside active hours (Europe/Berlin Mon-Fri 08:00-20:00)' });
  });

  it('a normal hibernate is not forced, and its args do not mention it', () => {
    const args = hibernateArgsOf(rule10);
    expect(Object.keys(args).sort()).toEqual(['idle_utilization_percent', 'ignore_gpu_processes']);
    expect(isForcedHibernate({ ...args })).toBeNull();
    expect(isForcedHibernate(undefined)).toBeNull();
    expect(isForcedHibernate({})).toBeNull();
  });

  it.each([['true'], [1], ['yes'], [null], [{}], [false]])('only a literal true forces it, not %j', (forced) => {
    expect(isForcedHibernate({ forced, reason: 'schedule: maximum uptime 12 h' })).toBeNull();
  });

  it('a missing, empty or non-string reason falls back to a default; a long one is cut to 256', () => {
    expect(isForcedHibernate({ forced: true })).toEqual({ reason: DEFAULT_FORCED_REASON });
    expect(isForcedHibernate({ forced: true, reason: 42 })).toEqual({ reason: 'forced by the server policy' });
    expect(isForcedHibernate({ forced: true, reason: '  ' })).toEqual({ reason: 'forced by the server policy' });
    expect(isForcedHibernate({ forced: true, reason: 'x'.repeat(1000) })).toEqual({ reason: 'x'.repeat(256) });
    expect(isForcedHibernate({ forced: true, reason: 'y'.repeat(256) })).toEqual({ reason: 'y'.repeat(256) });
    // A cut that would leave half of a surrogate pair drops the whole character.
    expect(isForcedHibernate({ forced: true, reason: `${'z'.repeat(255)}😴 and more` })).toEqual({ reason: 'z'.repeat(255) });
  });
});
