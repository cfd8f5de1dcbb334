import SQLite from 'better-sqlite3';
import {
  SelectQueryNode,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';

/** As the writer's: only another process's lock could make a read wait (WAL readers never wait on our writer). */
const READER_BUSY_TIMEOUT_MS = 5000;

/**
 * A second connection to a WAL database, for reads of the last committed state while the writer's
 * transaction is open. Read-only, so a write that reaches it fails at once (SQLITE_READONLY) instead of
 * waiting for the writer's lock: better-sqlite3 is synchronous, so that wait would spin busy_timeout on
 * the only thread, the one that must run the writer's commit.
 */
export function openReadOnlyConnection(file: string): SQLite.Database {
  const reader = new SQLite(file, { readonly: true, fileMustExist: true });
  reader.pragma(`busy_timeout = ${READER_BUSY_TIMEOUT_MS}`);
  return reader;
}

/**
 * One query: a SELECT goes to the reader, anything else (raw SQL included: it may write) to the writer.
 * Once it has begun a transaction the connection is pinned to the writer, reads included, so that a
 * transaction reads its own writes and keeps the writer until it ends.
 */
class RoutedConnection implements DatabaseConnection {
  pinned: DatabaseConnection | undefined;

  constructor(private readonly router: ReadRoutingDriver) {}

  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (this.pinned) return this.pinned.executeQuery<R>(query);
    const driver = this.router.driverFor(query);
    const connection = await driver.acquireConnection();
    try {
      return await connection.executeQuery<R>(query);
    } finally {
      await driver.releaseConnection(connection);
    }
  }

  async *streamQuery<R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    if (this.pinned) {
      yield* this.pinned.streamQuery<R>(query, chunkSize);
      return;
    }
    const driver = this.router.driverFor(query);
    const connection = await driver.acquireConnection();
    try {
      yield* connection.streamQuery<R>(query, chunkSize);
    } finally {
      await driver.releaseConnection(connection);
    }
  }
}

/**
 * Kysely's SQLite driver serialises everything on its one connection, so a read outside any transaction
 * waits for the group commit's open batch. This driver puts such reads on a second, read-only connection
 * (each its own autocommit snapshot: whatever had committed when it started) and everything else —
 * writes, raw SQL, transactions — on the writer, whose own driver keeps them in order. Until a reader is
 * attached (migrations; `:memory:`, which no second connection can open) everything goes to the writer.
 */
export class ReadRoutingDriver implements Driver {
  private reader: Driver | undefined;

  constructor(private readonly writer: Driver) {}

  /** `reader` must already be initialised; from now on it serves the reads outside transactions. */
  attachReader(reader: Driver): void {
    this.reader = reader;
  }

  driverFor(query: CompiledQuery): Driver {
    return this.reader && SelectQueryNode.is(query.query) ? this.reader : this.writer;
  }

  init(): Promise<void> {
    return this.writer.init();
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    return new RoutedConnection(this);
  }

  async beginTransaction(connection: RoutedConnection, settings: TransactionSettings): Promise<void> {
    const writerConnection = await this.writer.acquireConnection();
    try {
      await this.writer.beginTransaction(writerConnection, settings);
    } catch (error) {
      await this.writer.releaseConnection(writerConnection);
      throw error;
    }
    connection.pinned = writerConnection;
  }

  commitTransaction(connection: RoutedConnection): Promise<void> {
    return this.writer.commitTransaction(pinnedOf(connection));
  }

  rollbackTransaction(connection: RoutedConnection): Promise<void> {
    return this.writer.rollbackTransaction(pinnedOf(connection));
  }

  savepoint(connection: RoutedConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.writer.savepoint!(pinnedOf(connection), name, compile);
  }

  rollbackToSavepoint(connection: RoutedConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.writer.rollbackToSavepoint!(pinnedOf(connection), name, compile);
  }

  releaseSavepoint(connection: RoutedConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.writer.releaseSavepoint!(pinnedOf(connection), name, compile);
  }

  async releaseConnection(connection: RoutedConnection): Promise<void> {
    const writerConnection = connection.pinned;
    connection.pinned = undefined;
    if (writerConnection) await this.writer.releaseConnection(writerConnection);
  }

  async destroy(): Promise<void> {
    // The reader first: the writer, closing last, checkpoints the WAL into the database file.
    await this.reader?.destroy();
    await this.writer.destroy();
  }
}

function pinnedOf(connection: RoutedConnection): DatabaseConnection {
  if (!connection.pinned) throw new Error('no transaction on this connection');
  return connection.pinned;
}

/** Kysely's SQLite dialect with the given driver. */
export function readRoutingDialect(driver: ReadRoutingDriver): Dialect {
  return {
    createDriver: () => driver,
    createQueryCompiler: () => new SqliteQueryCompiler(),
    createAdapter: () => new SqliteAdapter(),
    createIntrospector: (db: Kysely<any>) => new SqliteIntrospector(db),
  };
}
