import { idleFactsOf, judgeIdle, type IdleRule } from '@dumont/protocol';
import type { Reading } from '../collect.js';
import type { ActivityReport } from '../collectors/activity.js';
import type { CommandOutcome } from './runner.js';

/**
 * The agent's own look before and after a hibernate hook. The server decided on beats that may be a
 * while old; the machine is about to be stopped on that decision. So the agent reads the machine
 * again (every collector, not the last beat's values) and refuses when it is busy by the very rule
 * the server decided with (sent in the command's args), or when someone typed or ran something since
 * the beat whose answer delivered the command. After a successful hook it looks once more: a machine
 * that became busy while the hook ran is not handed over to be stopped.
 */

export type SampleVerdict = { quiet: true } | { quiet: false; reason: string };

const iso = (t: number | null) => (t === null ? 'never' : new Date(t).toISOString());

/** Pure: is this reading quiet by `rule`, with no activity after `since` (null: not compared)? */
export function judgeReading(reading: Reading, rule: IdleRule, since: ActivityReport | null): SampleVerdict {
  const verdict = judgeIdle(idleFactsOf(reading.body), rule);
  if (!verdict.idle) return { quiet: false, reason: `${verdict.reason} (${describeRule(rule)})` };
  if (since !== null && reading.activity.mark > since.mark) {
    return {
      quiet: false,
      reason: `new activity since the server decided: ${reading.activity.source ?? 'activity'} (last_activity ${iso(since.lastActivity)} → ${iso(reading.activity.lastActivity)})`,
    };
  }
  return { quiet: true };
}

export function describeRule(rule: IdleRule): string {
  return `server rule: below ${rule.idleUtilizationPercent}%${rule.ignoreGpuProcesses ? ', GPU processes ignored' : ''}`;
}

export const BUSY_DURING_HOOK = 'the machine became busy during the hook; not hibernating';

export interface GuardInput {
  rule: IdleRule;
  /** The beat whose answer delivered the command; null when it came some other way (then only the machine's state is checked first). */
  delivery: { activity: ActivityReport } | null;
  /** A fresh reading of the machine (all collectors run again). */
  sample: () => Promise<Reading>;
  runHook: () => Promise<CommandOutcome>;
  /**
   * An admin's schedule hibernates the machine busy or not (isForcedHibernate): neither look is taken,
   * since refusing a busy machine is exactly what the schedule overrides. The hook still runs and its
   * failure still fails the command: saving the work before the stop is the point of it.
   */
  forced?: { reason: string } | null;
}

/** The first line of a forced hibernation's result, so that whoever reads it knows why a busy machine was stopped. */
const forcedDetail = (reason: string) => `forced: ${reason}`;

export async function guardedHibernate(input: GuardInput): Promise<CommandOutcome> {
  if (input.forced) {
    const outcome = await input.runHook();
    return { ...outcome, detail: `${forcedDetail(input.forced.reason)}\n${outcome.detail}` };
  }
  const before = await read(input.sample);
  if ('error' in before) return { status: 'failed', detail: `refused: no fresh reading of the machine (${before.error}); the hook was not run` };
  const pre = judgeReading(before, input.rule, input.delivery?.activity ?? null);
  if (!pre.quiet) return { status: 'failed', detail: `refused: ${pre.reason}; the hook was not run` };

  const outcome = await input.runHook();
  if (outcome.status !== 'succeeded') return outcome;

  // The server lets a running hook keep the GPU busy (running_commands); once it is done, the
  // machine must be as quiet as before it, or stopping it would cut someone's work off.
  const after = await read(input.sample);
  const post = 'error' in after ? { quiet: false as const, reason: `no fresh reading of the machine (${after.error})` } : judgeReading(after, input.rule, before.activity);
  if (!post.quiet) return { status: 'failed', detail: `${BUSY_DURING_HOOK}: ${post.reason}\n${outcome.detail}` };
  return outcome;
}

async function read(sample: () => Promise<Reading>): Promise<Reading | { error: string }> {
  try {
    return await sample();
  } catch (err) {
    return { error: (err as Error).message };
  }
}
