import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DeliveredCommand } from '@dumont/protocol';
import { realClock } from '../heartbeat/loop.js';
import { createLogger } from '../log.js';
import { pidsWhere, waitFor } from '../test-support/processes.js';
import { CommandJournal } from './journal.js';
import { CommandQueue } from './queue.js';
import { executeCommand, type RunnerConfig } from './runner.js';
import { machineCollector, testRunnerConfig } from '../test-support/runner-config.js';
import { gpuLine } from '../test-support/fake-nvidia-smi.js';

const tmp = mkdtempSync(join(tmpdir(), 'dumont-queue-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;

/** The beat that delivered the commands: nothing ever active. */
const delivered = { activity: { lastActivity: null, source: null, mark: 0, activeUsers: 0, reasons: [] } };
const cmd = (id: string, type = 'snapshot', args: Record<string, unknown> = {}): DeliveredCommand => ({
  id, type: type as DeliveredCommand['type'], args, issued_at: '2024-12-20T15:30:00Z',
});

function setup(hooks: Partial<RunnerConfig['hooks']> = {}, stateDir = join(tmp, `state-${n++}`), journal?: CommandJournal) {
  const trace = join(tmp, `trace-${n++}`);
  const events = { results: 0, exits: [] as number[] };
  const config: RunnerConfig = testRunnerConfig(tmp, {
    instanceId: 1,
    hooks: { hibernate: null, snapshot: `echo "start $DUMONT_COMMAND_ID" >> ${trace}; sleep 0.2; echo "end $DUMONT_COMMAND_ID" >> ${trace}`, restart: null, ...hooks },
  });
  const j = journal ?? CommandJournal.open(stateDir);
  const queue = new CommandQueue({
    journal: j,
    execute: (c, signal, delivery) => executeCommand(c, config, signal, delivery),
    log: createLogger({ write: () => {} }),
    onResult: () => (events.results += 1),
    onExitRequest: (code) => events.exits.push(code),
    sleep: realClock.sleep,
  });
  const traced = () => (existsSync(trace) ? readFileSync(trace, 'utf8').trim().split('\n') : []);
  return { queue, journal: j, stateDir, events, traced };
}

describe('CommandQueue', () => {
  it('runs commands one at a time, in delivery order', async () => {
    const { queue, traced, events } = setup();
    queue.accept([cmd('a'), cmd('b')], delivered);
    queue.accept([cmd('c')], delivered);
    await waitFor('three results', () => queue.pendingResults().length === 3);
    expect(traced()).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    expect(events.results).toBe(3);
  });

  it('runs an id once however often it is delivered, before or after it finished', async () => {
    const { queue, traced } = setup();
    queue.accept([cmd('a'), cmd('a')], delivered);
    queue.accept([cmd('a')], delivered);
    await waitFor('the result', () => queue.pendingResults().length === 1);
    queue.accept([cmd('a')], delivered);
    await queue.idle();
    expect(traced()).toEqual(['start a', 'end a']);
  });

  it('never runs an id again after a restart; resends its result if the server asks again', async () => {
    const first = setup();
    first.queue.accept([cmd('a')], delivered);
    await waitFor('the result', () => first.queue.pendingResults().length === 1);
    first.queue.acknowledge(['a']);
    expect(first.queue.pendingResults()).toEqual([]);

    const second = setup({}, first.stateDir); // a new process on the same state dir
    second.queue.accept([cmd('a')], delivered);
    await second.queue.idle();
    expect(second.traced()).toEqual([]);
    expect(second.queue.pendingResults()).toEqual([{ id: 'a', status: 'succeeded', detail: expect.stringMatching(/^snapshot hook exited with code 0/) }]);
  });

  it('names the running command while it runs (running_commands), and nothing once done', async () => {
    const { queue, traced } = setup();
    expect(queue.runningCommands()).toEqual([]);
    queue.accept([cmd('a'), cmd('b')], delivered);
    await waitFor('a to start', () => traced().length === 1);
    expect(queue.runningCommands()).toEqual(['a']);
    await waitFor('both results', () => queue.pendingResults().length === 2);
    expect(queue.runningCommands()).toEqual([]);
  });

  it('runs a command with the beat that first delivered it, even if delivered again while it waits', async () => {
    const seen: Array<[string, number]> = [];
    const at = (mark: number) => ({ activity: { ...delivered.activity, mark } });
    const queue = new CommandQueue({
      journal: CommandJournal.open(join(tmp, `state-${n++}`)),
      execute: async (c, _signal, delivery) => {
        seen.push([c.id, delivery.activity.mark]);
        await new Promise((r) => setTimeout(r, 50)); // b waits behind a, and is delivered again meanwhile
        return { status: 'succeeded', detail: 'ok' };
      },
      log: createLogger({ write: () => {} }),
      onResult: () => {},
      onExitRequest: () => {},
      sleep: realClock.sleep,
    });
    queue.accept([cmd('a'), cmd('b')], at(1));
    queue.accept([cmd('b')], at(2));
    await waitFor('both results', () => queue.pendingResults().length === 2);
    expect(seen).toEqual([['a', 1], ['b', 1]]);
  });

  it('asks the agent to exit after a command that restarts it, and takes no more commands', async () => {
    const { queue, events, traced } = setup();
    queue.accept([cmd('r', 'restart'), cmd('s')], delivered);
    await waitFor('the exit request', () => events.exits.length === 1);
    await queue.idle();
    expect(events.exits).toEqual([75]);
    expect(traced()).toEqual([]);
    expect(queue.pendingResults().map((r) => r.id)).toEqual(['r']);
  });

  it('on stop, lets a running command finish within the grace and drops the ones not started', async () => {
    const { queue, traced, journal } = setup();
    queue.accept([cmd('a'), cmd('b')], delivered);
    await waitFor('a to start', () => traced().length === 1);
    await queue.stop(5000);
    expect(traced()).toEqual(['start a', 'end a']);
    expect(queue.pendingResults().map((r) => [r.id, r.status])).toEqual([['a', 'succeeded']]);
    expect(journal.get('b')).toBeUndefined(); // not recorded: the server delivers it again later
  });

  it('on stop, abandons a command that outlives the grace, recorded as failed', async () => {
    const started = join(tmp, 'slow-started');
    const { queue } = setup({ snapshot: `touch ${started}; sleep 30` });
    queue.accept([cmd('slow')], delivered);
    await waitFor('the hook to start', () => existsSync(started));
    await queue.stop(100);
    expect(queue.pendingResults()).toEqual([{ id: 'slow', status: 'failed', detail: 'snapshot hook abandoned: the agent is stopping; the hook was killed (no output)' }]);
    expect(pidsWhere((cmdline) => cmdline.includes(`touch ${started}; sleep 30`))).toEqual([]); // the hook's shell is gone
  });

  it('runs nothing when ids cannot be recorded, and says so', async () => {
    const { queue, traced } = setup({}, undefined, CommandJournal.unwritable('cannot create state dir /x: EACCES'));
    queue.accept([cmd('a')], delivered);
    await waitFor('the result', () => queue.pendingResults().length === 1);
    expect(traced()).toEqual([]);
    expect(queue.pendingResults()[0]).toMatchObject({ id: 'a', status: 'failed', detail: expect.stringMatching(/^not run: the agent cannot record command ids \(cannot create state dir/) });
  });
});

describe('CommandQueue and forced hibernations', () => {
  it('logs one line saying a hibernation is forced and why; records the result as for any command', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const training = machineCollector(tmp, gpuLine(0, 95));
    const config = testRunnerConfig(tmp, { hooks: { hibernate: 'echo checkpoint saved', snapshot: null, restart: null }, sample: training.sample });
    const queue = new CommandQueue({
      journal: CommandJournal.open(join(tmp, `state-${n++}`)),
      execute: (c, signal, delivery) => executeCommand(c, config, signal, delivery),
      log: createLogger({ write: (line) => lines.push(JSON.parse(line)) }),
      onResult: () => {},
      onExitRequest: () => {},
      sleep: realClock.sleep,
    });
    const reason = 'schedule: maximum uptime 72 h';
    queue.accept([cmd('normal', 'hibernate', { idle_utilization_percent: 5 }), cmd('forced', 'hibernate', { idle_utilization_percent: 5, forced: true, reason })], delivered);
    await waitFor('both results', () => queue.pendingResults().length === 2);
    const forcedLines = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('forced hibernation'));
    expect(forcedLines).toEqual([expect.objectContaining({ level: 'warn', command_id: 'forced', reason })]);
    expect(queue.pendingResults()).toEqual([
      { id: 'normal', status: 'failed', detail: 'refused: GPU 0 at 95% utilization (server rule: below 5%); the hook was not run' },
      { id: 'forced', status: 'succeeded', detail: `forced: ${reason}\nhibernate hook exited with code 0\n--- output ---\ncheckpoint saved` },
    ]);
  });
});
