import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SERVER_ENTRY = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

export interface ServerProcess {
  url: string;
  adminKey: string;
  child: ChildProcess;
  /** Everything the process printed so far. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * The real server (`node packages/server/dist/main.js`, built by `npm run build`) as a child process
 * on a free loopback port, with its own SQLite file unless DUMONT_DATABASE_URL is given.
 */
export async function startServerProcess(opts: { env?: Record<string, string>; dataDir?: string } = {}): Promise<ServerProcess> {
  const ownDir = opts.dataDir ? null : mkdtempSync(join(tmpdir(), 'dumont-server-'));
  const dataDir = opts.dataDir ?? ownDir!;
  const adminKey = opts.env?.DUMONT_ADMIN_KEY ?? `dmk_test_${randomBytes(16).toString('hex')}`;
  const child = spawn(process.execPath, [SERVER_ENTRY], {
    env: {
      PATH: process.env.PATH,
      DUMONT_HOST: '127.0.0.1',
      DUMONT_PORT: '0',
      DUMONT_DATABASE_URL: `sqlite:${join(dataDir, 'dumont.db')}`,
      DUMONT_RATE_LIMIT_PER_MINUTE: '0',
      ...opts.env,
      DUMONT_ADMIN_KEY: adminKey,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    const fail = (error: Error) => {
      // A server that never said it listens must not outlive the test that started it.
      child.kill('SIGKILL');
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
      reject(error);
    };
    const timer = setTimeout(() => fail(new Error(`server did not start in time (is DUMONT_LOG_LEVEL above info?):\n${output}`)), 20_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`server exited with ${code}:\n${output}`));
    });
  });
  child.removeAllListeners('exit');
  return {
    url,
    adminKey,
    child,
    output: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
}
