import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';

export interface CachedFile {
  bytes: Buffer;
  /** SHA-256 of `bytes`, hex. */
  sha256: string;
  mtimeMs: number;
  size: number;
}

/**
 * Files the build leaves for the server to send (the agent bundle, the dashboard): read again only
 * when their size or modification time changed, so a rebuild while the server runs is served at once.
 */
export class BuiltFiles {
  private readonly files = new Map<string, CachedFile>();

  /** The file as it is now, or null when it does not exist. */
  async read(path: string): Promise<CachedFile | null> {
    let info;
    try {
      info = await stat(path);
    } catch {
      return null;
    }
    const hit = this.files.get(path);
    if (hit && hit.mtimeMs === info.mtimeMs && hit.size === info.size) return hit;
    const bytes = await readFile(path);
    const file = { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), mtimeMs: info.mtimeMs, size: info.size };
    this.files.set(path, file);
    return file;
  }
}
