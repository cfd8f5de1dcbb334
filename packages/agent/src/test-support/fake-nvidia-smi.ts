import { appendFileSync, chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A stand-in `nvidia-smi` executable (a small shell script) whose behaviour a test controls through
 * files next to it, so it can be changed while an agent keeps calling it. Per query kind (`gpus` for
 * --query-gpu, `apps` for --query-compute-apps): `<kind>.out` is printed on stdout, `<kind>.err` on
 * stderr, `<kind>.sleep` seconds are slept first, `<kind>.exit` is the exit code. Every call appends
 * "<pid> <args>" to calls.log.
 */
export interface FakeNvidiaSmi {
  dir: string;
  /** The executable; also found as `nvidia-smi` when `dir` is first on PATH. */
  path: string;
  set(kind: 'gpus' | 'apps', behaviour: { out?: string; err?: string; sleep?: number; exit?: number }): void;
  calls(): string[];
}

const SCRIPT = `#!/bin/sh
d=$(dirname "$0")
echo "$$ $*" >> "$d/calls.log"
case "$*" in *--query-compute-apps*) k=apps ;; *) k=gpus ;; esac
if [ -f "$d/$k.sleep" ]; then sleep "$(cat "$d/$k.sleep")"; fi
if [ -f "$d/$k.out" ]; then cat "$d/$k.out"; fi
if [ -f "$d/$k.err" ]; then cat "$d/$k.err" >&2; fi
if [ -f "$d/$k.exit" ]; then exit "$(cat "$d/$k.exit")"; fi
exit 0
`;

export function createFakeNvidiaSmi(dir: string): FakeNvidiaSmi {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'nvidia-smi');
  writeFileSync(path, SCRIPT);
  chmodSync(path, 0o755);
  writeFileSync(join(dir, 'calls.log'), '');
  // Written whole then renamed, so a concurrent call never reads half a file.
  const put = (name: string, value: string | number | undefined) => {
    const file = join(dir, name);
    if (value === undefined) {
      rmSync(file, { force: true });
      return;
    }
    writeFileSync(`${file}.tmp`, String(value));
    renameSync(`${file}.tmp`, file);
  };
  return {
    dir,
    path,
    set(kind, b) {
      put(`${kind}.out`, b.out);
      put(`${kind}.err`, b.err);
      put(`${kind}.sleep`, b.sleep);
      put(`${kind}.exit`, b.exit);
    },
    calls: () => readFileSync(join(dir, 'calls.log'), 'utf8').split('\n').filter(Boolean),
  };
}

/** One GPU line in the agent's own format (`--format=csv,noheader,nounits`). */
export function gpuLine(index: number, utilization: number | string, extra: { uuid?: string; memoryUsed?: number } = {}): string {
  return `${index}, ${extra.uuid ?? `GPU-${index}0000000-0000-0000-0000-000000000000`}, NVIDIA H100 80GB HBM3, ${utilization}, ${extra.memoryUsed ?? 1024}, 81559, 45, 120.5\n`;
}

export function appendLog(dir: string, line: string): void {
  appendFileSync(join(dir, 'calls.log'), `${line}\n`);
}
