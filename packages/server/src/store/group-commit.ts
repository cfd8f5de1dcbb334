import { CompiledQuery, type Kysely } from 'kysely';
import type { Database } from './schema.js';

/** One transaction's view of the batch: its queries, and a way to ask for a durable commit. */
export interface BatchMember {
  db: Kysely<Database>;
  requireDurable(): void;
}

interface Pending<R> {
  work: (member: BatchMember) => Promise<R>;
  resolve: (value: R) => void;
  reject: (error: unknown) => void;
}

const MAX_BATCH = 256;
// Raw statements: building Kysely's savepoint commands costs more than running them.
const SAVEPOINT = CompiledQuery.raw('savepoint item');
const RELEASE = CompiledQuery.raw('release item');
const ROLLBACK_TO = CompiledQuery.raw('rollback to item');

/**
 * Group commit for the single SQLite connection: transactions that arrive while one is running are
 * run together in one real transaction, each inside its own savepoint. A failing one rolls back to its
 * savepoint and fails alone; the others commit together, and every caller is answered only after that
 * commit — and after one fdatasync of the WAL when any of them needed durability. Under load this turns
 * N commits (N WAL appends of the same hot pages) and N fsyncs into one of each.
 */
export class GroupCommit {
  private queue: Pending<any>[] = [];
  private draining = false;

  constructor(
    private readonly db: Kysely<Database>,
    /** Makes every commit so far durable (an fdatasync of the WAL), off the event loop. */
    private readonly sync: () => Promise<void>,
    private readonly syncEveryCommit: boolean,
  ) {}

  run<R>(work: (member: BatchMember) => Promise<R>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ work, resolve, reject });
      if (!this.draining) {
        this.draining = true;
        // Let the requests that arrived in this turn of the event loop join the first batch.
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) await this.runBatch(this.queue.splice(0, MAX_BATCH));
    } finally {
      this.draining = false;
    }
  }

  private async runBatch(batch: Pending<any>[]): Promise<void> {
    const settled: (() => void)[] = [];
    let trx;
    try {
      trx = await this.db.startTransaction().execute();
    } catch (error) {
      for (const item of batch) item.reject(error);
      return;
    }
    // A lone transaction needs no savepoint: if it fails, the whole transaction rolls back.
    const isolate = batch.length > 1;
    let durable = this.syncEveryCommit;
    try {
      for (const item of batch) {
        if (isolate) await trx.executeQuery(SAVEPOINT);
        let wantsDurable = false;
        try {
          const value = await item.work({ db: trx, requireDurable: () => void (wantsDurable = true) });
          if (isolate) await trx.executeQuery(RELEASE);
          durable ||= wantsDurable;
          settled.push(() => item.resolve(value));
        } catch (error) {
          if (!isolate) throw error;
          await trx.executeQuery(ROLLBACK_TO);
          await trx.executeQuery(RELEASE);
          settled.push(() => item.reject(error));
        }
      }
      await trx.commit().execute();
    } catch (error) {
      await trx.rollback().execute().catch(() => {});
      for (const item of batch) item.reject(error);
      return;
    }
    if (durable) {
      try {
        await this.sync();
      } catch (error) {
        // Committed but not known to be on disk: the callers must not be told it is.
        for (const item of batch) item.reject(error);
        return;
      }
    }
    for (const settle of settled) settle();
  }
}
