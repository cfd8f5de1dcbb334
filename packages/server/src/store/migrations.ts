import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import { createSessionsTable } from './sessions.js';
import { addRollupFacts, createHistoryTables } from './history.js';

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
        await db.schema.createIndex('instances_owner').on('instances').columns(['owner', 'instance_id']).execute();
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

        await createStatusCounts(db, dialect);

      },
    },
    '0002_offline_since_idempotency': {
      async up(db: Kysely<any>) {
        // When an instance went offline: the mass-silence guard counts recent ones through this partial
        // index, which holds offline rows only, so a heartbeat of an online instance never touches it.
        await db.schema.alterTable('instances').addColumn('offline_since', 'bigint').execute();
        await db.schema
          .createIndex('instances_recently_offline')
          .on('instances')
          .column('offline_since')
          .where(sql<boolean>`status = 'offline'`)
          .execute();
        // `Idempotency-Key` of POST …/commands: the same key twice for one instance makes one command.
        await db.schema.alterTable('commands').addColumn('idempotency_key', 'text').execute();
        await db.schema
          .createIndex('commands_idempotency')
          .on('commands')
          .columns(['instance_id', 'idempotency_key'])
          .unique()
          .where(sql.ref('idempotency_key'), 'is not', null)
          .execute();
      },
    },
    '0003_providers_outbox_savings': {
      async up(db: Kysely<any>) {
        for (const [column, type] of [
          ['provider', 'text'],
          ['provider_instance_id', 'text'],
          ['price_per_hour', 'double precision'],
          ['provider_state', 'text'],
          ['provider_error', 'text'],
          ['provider_updated_at', 'bigint'],
          ['wake_requested_at', 'bigint'],
          ['saving_since', 'bigint'],
        ] as const) {
          await db.schema.alterTable('instances').addColumn(column, type).execute();
        }
        await db.schema.alterTable('instances').addColumn('dry_run', 'integer', (c) => c.notNull().defaultTo(0)).execute();

        // Calls to the outside (provider stop/start, notifications), written in the transaction that
        // needs them and sent by a worker in every server process: nothing is lost by a crash, and a
        // claim (claimed_until) keeps two replicas from sending the same row at once.
        await db.schema
          .createTable('outbox')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('instance_id', 'bigint', (c) => c.notNull().references('instances.instance_id').onDelete('cascade'))
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('payload_json', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('due_at', 'bigint', (c) => c.notNull())
          .addColumn('claimed_by', 'text')
          .addColumn('claimed_until', 'bigint')
          .addColumn('cancel_requested', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('last_error', 'text')
          .addColumn('completed_at', 'bigint')
          .execute();
        // Workers read only what is pending; done rows never slow a claim.
        await db.schema
          .createIndex('outbox_due')
          .on('outbox')
          .column('due_at')
          .where(sql<boolean>`state = 'pending'`)
          .execute();
        await db.schema
          .createIndex('outbox_instance_pending')
          .on('outbox')
          .columns(['instance_id', 'kind'])
          .where(sql<boolean>`state = 'pending'`)
          .execute();

        // Closed hibernated (and dry-run would-hibernate) intervals; the open one is instances.saving_since.
        await db.schema
          .createTable('savings')
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
            dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
          )
          .addColumn('instance_id', 'bigint', (c) => c.notNull().references('instances.instance_id').onDelete('cascade'))
          .addColumn('owner', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('started_at', 'bigint', (c) => c.notNull())
          .addColumn('ended_at', 'bigint', (c) => c.notNull())
          .addColumn('gpu_count', 'integer', (c) => c.notNull())
          .addColumn('price_per_hour', 'double precision')
          .execute();
        await db.schema.createIndex('savings_owner_end').on('savings').columns(['owner', 'ended_at']).execute();
        await db.schema.createIndex('savings_instance_end').on('savings').columns(['instance_id', 'ended_at']).execute();
      },
    },
    '0004_metrics_history': {
      async up(db: Kysely<any>) {
        // Raw per-GPU samples and their 5-minute rollups (store/history.ts).
        await createHistoryTables(db, dialect);
      },
    },
    '0005_sessions': {
      async up(db: Kysely<any>) {
        // Dashboard login sessions (store/sessions.ts).
        await createSessionsTable(db);
      },
    },
    '0006_list_indexes': {
      async up(db: Kysely<any>) {
        // The list sorted by hostname walks these instead of sorting the fleet; a heartbeat writes the
        // hostname only when it changed, so they cost nothing per beat.
        await db.schema.createIndex('instances_hostname').on('instances').columns(['hostname', 'instance_id']).execute();
        await db.schema.createIndex('instances_owner_hostname').on('instances').columns(['owner', 'hostname', 'instance_id']).execute();
      },
    },
    '0007_history_activity': {
      async up(db: Kysely<any>) {
        // What else judged each beat, for a policy replay: the agent's last activity on the server
        // clock, and whether a collector failed (its facts unknown). Null on samples from before.
        await db.schema.alterTable('metric_samples').addColumn('last_activity_at', 'bigint').execute();
        await db.schema.alterTable('metric_samples').addColumn('collector_error', 'integer').execute();
      },
    },
    '0008_rollup_replay_facts': {
      async up(db: Kysely<any>) {
        // A policy replay over the rollups, where raw samples are gone (store/history.ts ROLLUP_FACTS).
        await addRollupFacts(db);
      },
    },
    '0009_instance_labels': {
      async up(db: Kysely<any>) {
        // Operator-set labels. A selector term is an `exists` on (key, value) per instance, which the
        // second index answers without reading the table; the primary key serves an instance's labels.
        await db.schema
          .createTable('instance_labels')
          .addColumn('instance_id', 'bigint', (c) => c.notNull().references('instances.instance_id').onDelete('cascade'))
          .addColumn('key', 'text', (c) => c.notNull())
          .addColumn('value', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('instance_labels_pk', ['instance_id', 'key'])
          .execute();
        await db.schema.createIndex('instance_labels_key_value').on('instance_labels').columns(['key', 'value', 'instance_id']).execute();
      },
    },
    '0010_admin_limits': {
      async up(db: Kysely<any>) {
        // Who last set each bounded setting: an owner's value is bounded by the admin limits when
        // evaluated, an admin's stands. Rows stored before hold owners' values (0).
        for (const column of ['threshold_set_by_admin', 'enabled_set_by_admin', 'dry_run_set_by_admin']) {
          await db.schema.alterTable('instances').addColumn(column, 'integer', (c) => c.notNull().defaultTo(0)).execute();
        }
      },
    },
    '0011_policies': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('policies')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('priority', 'integer', (c) => c.notNull().unique())
          .addColumn('spec_json', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .addColumn('updated_by', 'text', (c) => c.notNull())
          .execute();
        // The heartbeat matches an instance's labels against the policies from the one row it reads.
        await db.schema.alterTable('instances').addColumn('labels_json', 'text', (c) => c.notNull().defaultTo('{}')).execute();
        const rows: { instance_id: number | string; key: string; value: string }[] = await db
          .selectFrom('instance_labels')
          .select(['instance_id', 'key', 'value'])
          .orderBy('instance_id')
          .orderBy('key')
          .execute();
        const byInstance = new Map<string, Record<string, string>>();
        for (const row of rows) {
          const id = String(row.instance_id);
          byInstance.set(id, { ...(byInstance.get(id) ?? {}), [row.key]: row.value });
        }
        for (const [id, labels] of byInstance) {
          await db.updateTable('instances').set({ labels_json: JSON.stringify(labels) }).where('instance_id', '=', Number(id)).execute();
        }
      },
    },
  };
}

export const COUNT_SHARDS = 16;

/**
 * Per-owner counts by status, kept by triggers so that no write path can forget them: counting 100k
 * rows for every list page would cost tens of milliseconds. Counts are sharded by instance id so
 * concurrent transitions (PostgreSQL replicas) rarely wait on the same counter row, and each trigger
 * touches its two rows in status order, so two transitions can never deadlock on them.
 */
async function createStatusCounts(db: Kysely<any>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('instance_counts')
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('shard', 'integer', (c) => c.notNull())
    .addColumn('n', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('instance_counts_pk', ['owner', 'status', 'shard'])
    .execute();
  const add = (who: 'old' | 'new', delta: 1 | -1) =>
    `insert into instance_counts (owner, status, shard, n) values (${who}.owner, ${who}.status, ${who}.instance_id % ${COUNT_SHARDS}, ${delta})
     on conflict (owner, status, shard) do update set n = instance_counts.n + (${delta})`;
  if (dialect === 'sqlite') {
    await sql.raw(`create trigger instances_count_insert after insert on instances begin ${add('new', 1)}; end`).execute(db);
    await sql.raw(`create trigger instances_count_delete after delete on instances begin ${add('old', -1)}; end`).execute(db);
    await sql
      .raw(
        `create trigger instances_count_update after update of status, owner on instances
         when old.status is not new.status or old.owner is not new.owner
         begin ${add('old', -1)}; ${add('new', 1)}; end`,
      )
      .execute(db);
    return;
  }
  await sql
    .raw(
      `create function dumont_count_instances() returns trigger language plpgsql as $$
       begin
         if tg_op = 'INSERT' then ${add('new', 1)};
         elsif tg_op = 'DELETE' then ${add('old', -1)};
         elsif (old.owner, old.status) < (new.owner, new.status) then ${add('old', -1)}; ${add('new', 1)};
         else ${add('new', 1)}; ${add('old', -1)};
         end if;
         return null;
       end $$`,
    )
    .execute(db);
  await sql
    .raw(`create trigger instances_count after insert or delete on instances for each row execute function dumont_count_instances()`)
    .execute(db);
  await sql
    .raw(
      `create trigger instances_count_change after update of status, owner on instances for each row
       when (old.status is distinct from new.status or old.owner is distinct from new.owner)
       execute function dumont_count_instances()`,
    )
    .execute(db);
}

export function migrationProvider(dialect: Dialect): MigrationProvider {
  return { getMigrations: async () => migrations(dialect) };
}
