import type { InstanceStatus, InstanceSummary, ListInstancesResponse, SavingsResponse } from '@dumont/protocol';
import { useState } from 'preact/hooks';
import { api, errorMessage, query, type Session } from './api.js';
import { AddInstanceDialog } from './add-instance-dialog.js';
import { ago, celsius, countdown, date, decimal, duration, percent, STATUS_LABELS, text, UNKNOWN, usd } from './format.js';
import { POLL_MS, remaining, useDebounced, useNow, usePoll } from './hooks.js';
import { StatusBadge } from './status-badge.js';

export const PAGE_SIZE = 50;
const STATUSES = Object.keys(STATUS_LABELS) as InstanceStatus[];

/** A row as listed; `temperature_celsius` is newer than some servers. */
type Row = Omit<InstanceSummary, 'labels'> & { temperature_celsius?: number | null; labels?: Record<string, string> };

type SortKey = 'instance_id' | 'hostname' | 'last_heartbeat' | 'idle_seconds' | 'hibernate_in_seconds' | 'gpu_utilization';

/** What the fleet table shows; kept by the app so that coming back from an instance finds it as it was. */
export interface FleetQuery {
  status: InstanceStatus | null;
  search: string;
  /** A label selector as typed: `team=vision, kind=notebook` (every term must match). */
  labels: string;
  /** A sortable column, `-` first for descending; '' = the server's order (by id). */
  sort: string;
  /** Cursors of the pages before this one, the last being this page's. */
  cursors: string[];
}

export const INITIAL_FLEET_QUERY: FleetQuery = { status: null, search: '', labels: '', sort: '', cursors: [] };

/** The selector's terms, as the API takes them (one `label=` each). */
export function selectorTerms(text: string): string[] {
  return text.split(/[\s,]+/).filter(Boolean);
}

interface Loaded {
  list: ListInstancesResponse;
  rows: Row[];
  fetchedAt: number;
}

export function FleetView(props: { session: Session; query: FleetQuery; setQuery: (q: FleetQuery) => void }) {
  const { query: q, setQuery } = props;
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [savings, setSavings] = useState<SavingsResponse | null>(null);
  const [adding, setAdding] = useState(false);
  const search = useDebounced(q.search.trim(), 300);
  const selector = useDebounced(q.labels.trim(), 300);
  const labelTerms = selectorTerms(selector);
  const now = useNow();
  const cursor = q.cursors.at(-1) ?? null;

  const refresh = usePoll(
    async (isCurrent) => {
      try {
        const path = `/api/v1/agent/instances${query({ status: q.status, q: search, label: labelTerms, sort: q.sort, limit: PAGE_SIZE, cursor })}`;
        const list = await api<ListInstancesResponse>('GET', path);
        if (!isCurrent()) return;
        setLoaded({ list, rows: arrange(list.instances, search, q.sort), fetchedAt: Date.now() });
        setError(null);
      } catch (e) {
        if (isCurrent()) setError(errorMessage(e));
      }
    },
    POLL_MS,
    [q.status, search, selector, q.sort, cursor],
  );
  usePoll(
    async (isCurrent) => {
      try {
        // The savings of the instances the selector picks, as the table lists them.
        const answer = await api<SavingsResponse>('GET', `/api/v1/agent/savings${query({ label: labelTerms })}`);
        if (isCurrent()) setSavings(answer);
      } catch {
        // The table shows connection trouble (or the selector's error); savings stay as last read.
      }
    },
    60_000,
    [selector],
  );

  const list = loaded?.list;
  const total = list ? STATUSES.reduce((sum, s) => sum + list[`${s}_count`], 0) : null;
  const changeSearch = (search: string) => setQuery({ ...q, search, cursors: [] });
  const changeLabels = (labels: string) => setQuery({ ...q, labels, cursors: [] });
  const sortBy = (key: SortKey) => setQuery({ ...q, sort: q.sort === key ? `-${key}` : q.sort === `-${key}` ? '' : key, cursors: [] });

  return (
    <main id="main" class="fleet" tabIndex={-1}>
      <div class="page-title">
        <h1>Fleet</h1>
        {/* Any key may register instances for its own owner (the API's rule); admins for themselves. */}
        <button type="button" class="primary" onClick={() => setAdding(true)}>
          Add instance
        </button>
      </div>
      {list?.mass_silence && (
        <div class="banner warning" role="status">
          <strong>Mass silence:</strong> {list.mass_silence.silent} of {list.mass_silence.watched} instances went silent at once
          (since {date(list.mass_silence.since)}). No hibernation is scheduled or fired until they report again.
        </div>
      )}
      <SavingsPanel savings={savings} />
      <nav class="status-tabs" aria-label="Filter by status">
        <button type="button" aria-pressed={q.status === null} onClick={() => setQuery({ ...q, status: null, cursors: [] })}>
          All <span class="count">{total ?? UNKNOWN}</span>
        </button>
        {STATUSES.map((status) => (
          <button
            type="button"
            key={status}
            class={`tab-${status}`}
            data-status={status}
            aria-pressed={q.status === status}
            onClick={() => setQuery({ ...q, status, cursors: [] })}
          >
            {STATUS_LABELS[status]} <span class="count">{list ? list[`${status}_count`] : UNKNOWN}</span>
          </button>
        ))}
      </nav>
      <div class="toolbar">
        <label class="search">
          <span>Search</span>
          <input
            type="search"
            name="q"
            placeholder="Hostname or instance id"
            maxLength={255}
            value={q.search}
            onInput={(e) => changeSearch(e.currentTarget.value)}
          />
        </label>
        <label class="search">
          <span>Label selector</span>
          <input
            type="search"
            name="label"
            placeholder="team=vision, kind=notebook"
            maxLength={1024}
            value={q.labels}
            onInput={(e) => changeLabels(e.currentTarget.value)}
          />
        </label>
        <span class="muted" aria-live="polite">
          {list ? pageSummary(list.count, q.cursors.length, loaded.rows.length) : 'Loading…'}
        </span>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="table-scroll" tabIndex={0} role="region" aria-label="Instances">
        <table class="instances">
          <thead>
            <tr>
              <th scope="col">Status</th>
              <SortHeader label="Hostname" column="hostname" sort={q.sort} onSort={sortBy} />
              <SortHeader label="Instance" column="instance_id" sort={q.sort} onSort={sortBy} />
              <th scope="col" class="num">GPUs</th>
              <SortHeader label="Utilization" column="gpu_utilization" sort={q.sort} onSort={sortBy} num />
              <th scope="col" class="num">Memory</th>
              <th scope="col" class="num">Temp.</th>
              <SortHeader label="Idle" column="idle_seconds" sort={q.sort} onSort={sortBy} num />
              <SortHeader label="Hibernates in" column="hibernate_in_seconds" sort={q.sort} onSort={sortBy} num />
              <th scope="col">Agent</th>
              <SortHeader label="Last heartbeat" column="last_heartbeat" sort={q.sort} onSort={sortBy} />
            </tr>
          </thead>
          <tbody>
            {loaded?.rows.map((row) => {
              const left = remaining(row.hibernate_in_seconds, loaded.fetchedAt, now);
              return (
                <tr key={row.instance_id} data-instance-id={row.instance_id}>
                  <td>
                    <StatusBadge status={row.status} />
                  </td>
                  <td>
                    <a href={`#/instances/${row.instance_id}`}>{text(row.hostname)}</a>
                    <LabelChips labels={row.labels} />
                  </td>
                  <td class="mono">{row.instance_id}</td>
                  <td class="num">{row.gpu_count > 0 ? row.gpu_count : UNKNOWN}</td>
                  <td class="num">{percent(row.gpu_utilization)}</td>
                  <td class="num">{percent(row.memory_used_percent)}</td>
                  <td class="num">{celsius(row.temperature_celsius)}</td>
                  <td class="num">{row.status === 'idle' ? duration(row.idle_seconds) : UNKNOWN}</td>
                  <td class="num">{left === null ? UNKNOWN : <time class="countdown">{countdown(left)}</time>}</td>
                  <td class="mono">{text(row.agent_version)}</td>
                  <td title={date(row.last_heartbeat)}>{ago(row.last_heartbeat, now)}</td>
                </tr>
              );
            })}
            {loaded && loaded.rows.length === 0 && (
              <tr>
                <td colSpan={11} class="empty">
                  {total === 0 ? 'No instances yet.' : 'No instance matches.'}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <div class="pager">
        <button type="button" disabled={q.cursors.length === 0} onClick={() => setQuery({ ...q, cursors: q.cursors.slice(0, -1) })}>
          Previous
        </button>
        <button
          type="button"
          disabled={!list?.next_cursor}
          onClick={() => list?.next_cursor && setQuery({ ...q, cursors: [...q.cursors, list.next_cursor] })}
        >
          Next
        </button>
      </div>
      {adding && (
        <AddInstanceDialog
          onClose={() => {
            setAdding(false);
            void refresh();
          }}
        />
      )}
    </main>
  );
}

function SortHeader(props: { label: string; column: SortKey; sort: string; onSort: (key: SortKey) => void; num?: boolean }) {
  const direction = props.sort === props.column ? 'ascending' : props.sort === `-${props.column}` ? 'descending' : 'none';
  return (
    <th scope="col" class={props.num ? 'num' : undefined} aria-sort={direction}>
      <button type="button" class="sort" onClick={() => props.onSort(props.column)}>
        {props.label}
        <span aria-hidden="true" class="sort-mark">
          {direction === 'ascending' ? '▲' : direction === 'descending' ? '▼' : '↕'}
        </span>
      </button>
    </th>
  );
}

function SavingsPanel({ savings }: { savings: SavingsResponse | null }) {
  return (
    <section class="savings" aria-labelledby="savings-title">
      <h2 id="savings-title">Saved by hibernation, last 30 days</h2>
      <dl>
        <div>
          <dt>Hibernated</dt>
          <dd>{savings ? `${decimal(savings.hibernated_hours)} h` : UNKNOWN}</dd>
        </div>
        <div>
          <dt>GPU-hours saved</dt>
          <dd>{savings ? decimal(savings.gpu_hours_saved) : UNKNOWN}</dd>
        </div>
        <div>
          <dt>Money saved</dt>
          <dd>{savings ? usd(savings.usd_saved) : UNKNOWN}</dd>
        </div>
        {savings && savings.would_have_saved_hours > 0 && (
          <div>
            <dt>Dry run would have saved</dt>
            <dd>
              {decimal(savings.would_have_saved_hours)} h, {usd(savings.would_have_saved_usd)}
            </dd>
          </div>
        )}
      </dl>
    </section>
  );
}

function pageSummary(count: number, pagesBefore: number, shown: number): string {
  if (shown === 0) return `${count} instances`;
  const first = pagesBefore * PAGE_SIZE + 1;
  return `${first}–${first + shown - 1} of ${count} instances`;
}

/**
 * The page as the server ordered it, filtered and sorted once more in the same way: a server that does
 * not know `q` or `sort` yet ignores them, and the page still does what the user asked of what it shows.
 */
function arrange(rows: Row[], search: string, sort: string): Row[] {
  const needle = search.toLowerCase();
  const matched = needle
    ? rows.filter((r) => String(r.instance_id).includes(needle) || (r.hostname ?? '').toLowerCase().includes(needle))
    : rows.slice();
  if (!sort) return matched;
  const descending = sort.startsWith('-');
  const key = (descending ? sort.slice(1) : sort) as SortKey;
  const value = (row: Row): number | string | null => {
    const v = row[key];
    if (key === 'last_heartbeat') return typeof v === 'string' ? Date.parse(v) : null;
    return v ?? null;
  };
  return matched.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const byId = descending ? b.instance_id - a.instance_id : a.instance_id - b.instance_id;
    // As the server does: unknown values last whichever way, ties by id in the same direction.
    if (x === null || y === null) return x === y ? byId : x === null ? 1 : -1;
    const order = typeof x === 'string' ? (x < (y as string) ? -1 : x > (y as string) ? 1 : 0) : x - (y as number);
    return (descending ? -order : order) || byId;
  });
}

/** An instance's labels as `key=value` chips; nothing when it has none (or the server is older than labels). */
export function LabelChips({ labels }: { labels: Record<string, string> | undefined }) {
  const entries = Object.entries(labels ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
  if (entries.length === 0) return null;
  return (
    <ul class="labels" aria-label="Labels">
      {entries.map(([key, value]) => (
        <li key={key} class="label-chip">
          {key}={value}
        </li>
      ))}
    </ul>
  );
}
