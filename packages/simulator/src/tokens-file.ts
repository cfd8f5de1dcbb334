import { chmodSync, readFileSync, writeFileSync } from 'node:fs';

export interface TokenEntry {
  instance_id: number;
  hostname: string;
  agent_token: string;
}

/** One JSON object per line. The file holds live credentials, so it is written 0600. */
export function writeTokensFile(path: string, entries: readonly TokenEntry[]): void {
  writeFileSync(path, entries.map((e) => JSON.stringify(e)).join('\n') + (entries.length > 0 ? '\n' : ''), { mode: 0o600 });
  chmodSync(path, 0o600);
}

export function readTokensFile(path: string): Map<number, string> {
  const tokens = new Map<number, string>();
  const lines = readFileSync(path, 'utf8').split('\n');
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    let entry: Partial<TokenEntry>;
    try {
      entry = JSON.parse(line);
    } catch {
      throw new Error(`${path}:${i + 1}: not a JSON line`);
    }
    if (typeof entry.instance_id !== 'number' || typeof entry.agent_token !== 'string') {
      throw new Error(`${path}:${i + 1}: needs instance_id (number) and agent_token (string)`);
    }
    tokens.set(entry.instance_id, entry.agent_token);
  }
  return tokens;
}
