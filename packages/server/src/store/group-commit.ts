import { CompiledQuery, type Kysely } from 'kysely';
import type { Database } from './schema.js';

interface Pending<R> {
  work: (db: Kysely<Database>) => Promise<R>;
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
 * commit. Under load this turns N commits (N WAL appends of the same hot pages) into one.
 */
export class GroupCommit {
  private queue: Pending<any>[] = [];
  private draining = false;

  constructor(private readonly db: Kysely<Database>) {}

  run<R>(work: (db: Kysely<Database>) => Promise<R>): Promise<R> {
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
    try {
      for (const item of batch) {
        if (isolate) await trx.executeQuery(SAVEPOINT);
        try {
          const value = await item.work(trx);
          if (isolate) await trx.executeQuery(RELEASE);
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
    for (const settle of settled) settle();
  }
}
