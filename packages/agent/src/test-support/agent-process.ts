import { spawn, type ChildProcess } from 'node:child_process';
import { ensureAgentBuilt } from './ensure-built.js';
import { isAlive, killChildGroup, waitFor } from './processes.js';

/** A real `dumont-agent` process (node dist/cli.js), its JSON log lines collected. */
export interface AgentProcess {
  child: ChildProcess;
  pid: number;
  logs: Array<Record<string, unknown>>;
  stdout(): string;
  /** Resolves to the exit code. */
  exited: Promise<number | null>;
  waitForLog(what: string, match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  kill(): void;
}

const running = new Set<AgentProcess>();

/**
 * `wrap` turns the agent's command line (`node cli.js …args`) into the one actually run, for an agent
 * started inside something (a user and mount namespace with its own state dir).
 */
export async function startAgent(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  wrap: (argv: string[]) => string[] = (argv) => argv,
): Promise<AgentProcess> {
  const cli = await ensureAgentBuilt();
  const [file, ...argv] = wrap([process.execPath, cli, ...args]);
  const child = spawn(file!, argv, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DUMONT_AGENT_TOKEN: '', ...env },
  });
  const logs: Array<Record<string, unknown>> = [];
  let out = '';
  let partial = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => {
    partial += c.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ level: 'raw', msg: line });
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const agent: AgentProcess = {
    child,
    pid: child.pid!,
    logs,
    stdout: () => out,
    exited,
    waitForLog: (what, match, timeoutMs = 15_000) => waitFor(what, () => logs.find(match), timeoutMs),
    kill: () => killChildGroup(child),
  };
  running.add(agent);
  void exited.then(() => running.delete(agent));
  return agent;
}

/** For afterAll/afterEach: no agent outlives its test. */
export async function stopAllAgents(): Promise<void> {
  for (const agent of running) {
    agent.kill();
    await waitFor('agent to die', () => !isAlive(agent.pid), 5000).catch(() => undefined);
  }
}
