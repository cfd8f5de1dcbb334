import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

export type Dialect = 'sqlite' | 'postgres';

/**
 * Versioned migrations, written once for both engines: only the auto-increment key differs. Never edit
 * a released migration; add the next one.
 */
export function migrations(dialect: Dialect): Record<string, Migration> {
  // SQLite: an `integer primary key` is the rowid itself, one b-tree lookup instead of two.
  return {
    '0001_initial': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('instances')
          .addColumn('instance_id', dialect === 'sqlite' ? 'integer' : 'bigint', (c) => c.primaryKey())
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('agent_token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('hostname', 'text')
          .addColumn('registered_at', 'bigint', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('last_heartbeat_at', 'bigint')
          .addColumn('online_since', 'bigint')
          .addColumn('idle_since', 'bigint')
          .addColumn('scheduled_at', 'bigint')
          .addColumn('postponed_until', 'bigint')
          .addColumn('hibernate_issued_at', 'bigint')
          .addColumn('hibernate_command_id', 'text')
          .addColumn('deadline', 'bigint')
          .addColumn('hibernation_enabled', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('threshold_minutes', 'double precision')
          .addColumn('ignore_gpu_processes', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('heartbeat_count', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('agent_timestamp', 'text')
          .addColumn('agent_timestamp_ms', 'bigint')
          .addColumn('utilization_percent', 'double precision')
          .addColumn('memory_used_mb', 'double precision')
          .addColumn('memory_total_mb', 'double precision')
          .addColumn('temperature_celsius', 'double precision')
          .addColumn('power_watts', 'double precision')
          .addColumn('gpus_json', 'text', (c) => c.notNull().defaultTo('[]'))
          .addColumn('gpu_count', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('process_count', 'integer')
          .addColumn('active_users', 'integer')
          .addColumn('last_activity', 'text')
          .addColumn('agent_version', 'text')
          .addColumn('collector_errors_json', 'text', (c) => c.notNull().defaultTo('[]'))
          .addColumn('open_commands', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('version', 'bigint', (c) => c.notNull().defaultTo(0))
          .execute();
        // Listing pages (per owner, per status) walk these in instance_id order.
        await db.schema.createIndex('instances_owner_status').on('instances').columns(['owner', 'status', 'instance_id']).execute();
        await db.schema.createIndex('instances_status').on('instances').columns(['status', 'instance_id']).execute();
        // The sweeper reads only rows that are due, so a tick costs what is due, not the fleet size.
        await db.schema
          .createIndex('instances_deadline')
          .on('instances')
          .column('deadline')
          .where(sql.ref('deadline'), 'is not', null)
          .execute();

        await db.schema
          .createTable('api_keys')
          .addColumn('key_hash', 'text', (c) => c.primaryKey())
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('is_admin', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('label', 'text')
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('commands')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('instance_id', 'bigint', (c) => c.notNull().references('instances.instance_id').onDelete('cascade'))
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('args_json', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('issued_at', 'bigint', (c) => c.notNull())
          .addColumn('issued_by', 'text', (c) => c.notNull())
          .addColumn('delivered_at', 'bigint')
          .addColumn('completed_at', 'bigint')
          .addColumn('detail', 'text')
          .execute();
        await db.schema.createIndex('commands_instance').on('commands').columns(['instance_id', 'issued_at']).execute();

        await db.schema
          .createTable('events')
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
            dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
          )
          .addColumn('instance_id', 'bigint', (c) => c.notNull().references('instances.instance_id').onDelete('cascade'))
          .addColumn('at', 'bigint', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('reason', 'text', (c) => c.notNull())
          .addColumn('data_json', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('events_instance').on('events').columns(['instance_id', 'id']).execute();

        await db.schema
          .createTable('meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
      },
    },
  };
}

export function migrationProvider(dialect: Dialect): MigrationProvider {
  return { getMigrations: async () => migrations(dialect) };
}
