import type { CommandListResponse, CommandType, CommandView, EventListResponse, EventView, InstanceDetail } from '@dumont/protocol';
import { useState } from 'preact/hooks';
import { api, ApiError, errorMessage, query } from './api.js';
import { ConfirmDialog } from './dialog.js';
import { FieldError } from './field-error.js';
import { ago, celsius, countdown, date, decimal, duration, percent, text, UNKNOWN, usd } from './format.js';
import { LabelsEditor } from './labels-editor.js';
import { HibernationForm } from './hibernation-form.js';
import { EffectivePolicy } from './effective-policy.js';
import { POLL_MS, remaining, useNow, usePoll } from './hooks.js';
import { MetricsCharts } from './metrics-charts.js';
import { StatusBadge } from './status-badge.js';

const EVENTS_PAGE = 20;

interface Loaded {
  detail: InstanceDetail;
  fetchedAt: number;
}

export function InstanceView({ instanceId }: { instanceId: number }) {
  const base = `/api/v1/agent/instances/${instanceId}`;
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [loadError, setLoadError] = useState<ApiError | null>(null);
  const [events, setEvents] = useState<EventView[]>([]);
  const [olderCursor, setOlderCursor] = useState<string | null>(null);
  const [loadedOlder, setLoadedOlder] = useState(false);
  const [commands, setCommands] = useState<CommandView[]>([]);
  const now = useNow();

  const refresh = usePoll(
    async (isCurrent) => {
      try {
        const [detail, firstEvents, commandList] = await Promise.all([
          api<InstanceDetail>('GET', base),
          api<EventListResponse>('GET', `${base}/events${query({ limit: EVENTS_PAGE })}`),
          api<CommandListResponse>('GET', `${base}/commands`),
        ]);
        if (!isCurrent()) return;
        setLoaded({ detail, fetchedAt: Date.now() });
        setLoadError(null);
        setEvents((previous) => mergeEvents(firstEvents.events, loadedOlder ? previous : []));
        if (!loadedOlder) setOlderCursor(firstEvents.next_cursor);
        setCommands(commandList.commands);
      } catch (e) {
        if (isCurrent()) setLoadError(e instanceof ApiError ? e : new ApiError(0, 'error', errorMessage(e)));
      }
    },
    POLL_MS,
    [instanceId],
  );

  const [olderError, setOlderError] = useState<string | null>(null);
  const loadOlder = async () => {
    if (!olderCursor) return;
    try {
      const page = await api<EventListResponse>('GET', `${base}/events${query({ limit: EVENTS_PAGE, cursor: olderCursor })}`);
      setLoadedOlder(true);
      setEvents((previous) => mergeEvents(previous, page.events));
      setOlderCursor(page.next_cursor);
      setOlderError(null);
    } catch (e) {
      setOlderError(errorMessage(e));
    }
  };

  if (!loaded) {
    return (
      <main id="main" class="instance" tabIndex={-1}>
        <p>
          <a href="#/">← Fleet</a>
        </p>
        {loadError ? (
          <p class="error" role="alert">
            {loadError.status === 404 ? `Instance ${instanceId} was not found (or is not yours).` : loadError.message}
          </p>
        ) : (
          <p class="muted">Loading instance {instanceId}…</p>
        )}
      </main>
    );
  }

  const { detail } = loaded;
  const left = remaining(detail.hibernation.hibernate_in_seconds, loaded.fetchedAt, now);
  return (
    <main id="main" class="instance" tabIndex={-1}>
      <p class="breadcrumb">
        <a href="#/">← Fleet</a>
      </p>
      <div class="page-title">
        <h1>{text(detail.hostname)}</h1>
        <StatusBadge status={detail.status} />
        <span class="muted mono">#{detail.instance_id}</span>
      </div>
      {loadError && (
        <p class="error" role="alert">
          {loadError.message}
        </p>
      )}
      {left !== null && (
        <div class="banner warning countdown-banner">
          {left > 0 ? (
            <>
              Hibernates in <time class="countdown" role="timer">{countdown(left)}</time> unless it becomes busy or is kept alive.
            </>
          ) : (
            'The hibernate command is out; the agent is checking once more before it hibernates.'
          )}
        </div>
      )}
      {detail.hibernation.dry_run && <div class="banner info">Dry run: where this instance would hibernate, the event log records it and nothing is stopped.</div>}

      <div class="columns">
        <Summary detail={detail} now={now} />
        <Actions detail={detail} base={base} onDone={refresh} />
      </div>

      <MetricsCharts instanceId={instanceId} />

      <LabelsEditor detail={detail} base={base} onSaved={refresh} />

      <EffectivePolicy view={detail.effective_policy} />

      <div class="columns">
        <HibernationForm detail={detail} base={base} onSaved={refresh} />
        <section class="card" aria-labelledby="commands-title">
          <h2 id="commands-title">Commands</h2>
          <Commands commands={commands} />
        </section>
      </div>

      <section class="card" aria-labelledby="events-title">
        <h2 id="events-title">Events</h2>
        <ol class="timeline">
          {events.map((event) => (
            <li key={event.id} data-event-id={event.id} data-event-type={event.type}>
              <time dateTime={event.at} title={date(event.at)}>
                {date(event.at)}
              </time>
              <span class="event-type">{event.type.replace(/_/g, ' ')}</span>
              <span class="event-reason">{event.reason}</span>
            </li>
          ))}
          {events.length === 0 && <li class="muted">No events yet.</li>}
        </ol>
        {olderCursor && (
          <button type="button" onClick={loadOlder}>
            Load more events
          </button>
        )}
        {olderError && (
          <p class="error" role="alert">
            {olderError}
          </p>
        )}
      </section>
    </main>
  );
}

function Summary({ detail, now }: { detail: InstanceDetail; now: number }) {
  const provider = detail.provider;
  return (
    <section class="card" aria-labelledby="summary-title">
      <h2 id="summary-title">Overview</h2>
      <dl class="facts">
        <dt>Last heartbeat</dt>
        <dd title={date(detail.last_heartbeat)}>{ago(detail.last_heartbeat, now)}</dd>
        <dt>Idle for</dt>
        <dd>{detail.status === 'idle' ? duration(detail.activity.idle_seconds) : UNKNOWN}</dd>
        <dt>Uptime</dt>
        <dd>{detail.last_heartbeat ? duration(detail.uptime_hours * 3600) : UNKNOWN}</dd>
        <dt>Processes / users</dt>
        <dd>
          {text(detail.activity.process_count?.toString())} / {text(detail.activity.active_users?.toString())}
        </dd>
        <dt>Agent</dt>
        <dd class="mono">{text(detail.agent_version)}</dd>
        <dt>Provider</dt>
        <dd>
          {provider.name} {provider.instance_id !== String(detail.instance_id) && <span class="mono">({provider.instance_id})</span>}
          {' · '}
          {provider.state ? provider.state.replace(/_/g, ' ') : 'no action yet'}
          {provider.updated_at && <span class="muted"> since {date(provider.updated_at)}</span>}
          {provider.last_error && <span class="error-text"> — last error: {provider.last_error}</span>}
        </dd>
        <dt>Price</dt>
        <dd>{detail.price_per_hour === null ? UNKNOWN : `${usd(detail.price_per_hour)} / h`}</dd>
        <dt>Saved</dt>
        <dd>
          {decimal(detail.savings.hibernated_hours)} h hibernated, {decimal(detail.savings.gpu_hours_saved)} GPU-hours
          {detail.price_per_hour !== null && `, ${usd(detail.savings.usd_saved)}`}
        </dd>
        {detail.postponed_until && Date.parse(detail.postponed_until) > now - 60_000 && (
          <>
            <dt>Kept alive until</dt>
            <dd>{date(detail.postponed_until)}</dd>
          </>
        )}
        <dt>Registered</dt>
        <dd>{date(detail.registered_at)}</dd>
      </dl>
      {detail.collector_errors.length > 0 && (
        <div class="banner warning">
          Collector errors on the last beat (its metrics are unknown):
          <ul>
            {detail.collector_errors.map((c) => (
              <li key={c.collector}>
                <strong>{c.collector}</strong>: {c.message}
              </li>
            ))}
          </ul>
        </div>
      )}
      {detail.gpus.length > 0 && (
        <div class="table-scroll" tabIndex={0} role="region" aria-label="GPUs now">
          <table class="gpus">
            <thead>
              <tr>
                <th scope="col">GPU</th>
                <th scope="col">Name</th>
                <th scope="col" class="num">Util.</th>
                <th scope="col" class="num">Memory</th>
                <th scope="col" class="num">Temp.</th>
                <th scope="col" class="num">Power</th>
              </tr>
            </thead>
            <tbody>
              {detail.gpus.map((gpu) => (
                <tr key={gpu.index}>
                  <td>{gpu.index}</td>
                  <td>{text(gpu.name)}</td>
                  <td class="num">{percent(gpu.utilization_percent)}</td>
                  <td class="num">
                    {gpu.memory_used_mb == null ? UNKNOWN : `${decimal(gpu.memory_used_mb / 1024)}`} / {gpu.memory_total_mb == null ? UNKNOWN : `${decimal(gpu.memory_total_mb / 1024)} GiB`}
                  </td>
                  <td class="num">{celsius(gpu.temperature_celsius)}</td>
                  <td class="num">{gpu.power_watts == null ? UNKNOWN : `${decimal(gpu.power_watts, 0)} W`}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

type Pending = { kind: 'restart' | 'hibernate' } | null;

function Actions({ detail, base, onDone }: { detail: InstanceDetail; base: string; onDone: () => Promise<void> }) {
  const [minutes, setMinutes] = useState('30');
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [confirming, setConfirming] = useState<Pending>(null);
  const asleep = detail.status === 'hibernating' || detail.status === 'hibernated';

  const act = async (work: () => Promise<string>) => {
    setBusy(true);
    setMessage(null);
    setError(null);
    try {
      setMessage(await work());
      await onDone();
    } catch (e) {
      setError(e instanceof ApiError ? e : new ApiError(0, 'error', errorMessage(e)));
    } finally {
      setBusy(false);
    }
  };
  const keepAlive = (e: Event) => {
    e.preventDefault();
    void act(async () => {
      const answer = await api<{ message: string }>('POST', `${base}/keep-alive${query({ minutes: minutes.trim() })}`);
      return answer.message;
    });
  };
  const command = (type: CommandType) =>
    act(async () => {
      await api<CommandView>('POST', `${base}/commands`, { body: { type } });
      return type === 'hibernate' ? 'Hibernation started.' : `The ${type} command is queued for the agent's next heartbeat.`;
    });

  return (
    <section class="card" aria-labelledby="actions-title">
      <h2 id="actions-title">Actions</h2>
      <form class="inline-form" onSubmit={keepAlive} noValidate>
        <label for="keep-alive-minutes">Keep alive for (minutes)</label>
        <div class="inline-row">
          <input
            id="keep-alive-minutes"
            name="minutes"
            type="number"
            min={1}
            max={1440}
            step={1}
            value={minutes}
            onInput={(e) => setMinutes(e.currentTarget.value)}
            aria-invalid={error?.field === 'minutes' ? true : undefined}
            aria-describedby={error?.field === 'minutes' ? 'keep-alive-error' : undefined}
          />
          <button type="submit" disabled={busy || asleep}>
            Keep alive
          </button>
        </div>
        <FieldError id="keep-alive-error" message={error?.field === 'minutes' ? error.message : null} />
        <KeepAliveLimits detail={detail} />
      </form>
      <div class="button-row">
        {detail.status === 'hibernated' && (
          <button type="button" class="primary" disabled={busy} onClick={() => void act(async () => (await api('POST', `${base}/wake`), 'Waking: the first heartbeat makes it active.'))}>
            Wake
          </button>
        )}
        <button type="button" disabled={busy} onClick={() => void command('snapshot')}>
          Snapshot
        </button>
        <button type="button" class="danger" disabled={busy} onClick={() => setConfirming({ kind: 'restart' })}>
          Restart…
        </button>
        <button type="button" class="danger" disabled={busy || asleep || detail.status === 'waking'} onClick={() => setConfirming({ kind: 'hibernate' })}>
          Hibernate now…
        </button>
      </div>
      <p class="muted" role="status">
        {message}
      </p>
      {error && error.field !== 'minutes' && (
        <p class="error" role="alert">
          {error.message}
        </p>
      )}
      {confirming && (
        <ConfirmDialog
          title={confirming.kind === 'restart' ? 'Restart this instance?' : 'Hibernate this instance now?'}
          message={
            confirming.kind === 'restart'
              ? `The agent on ${detail.hostname ?? `instance ${detail.instance_id}`} runs its restart hook at its next heartbeat. Running work is interrupted.`
              : `${detail.hostname ?? `Instance ${detail.instance_id}`} is hibernated without the usual warning. The agent still checks that the GPUs are idle before and after its hook.`
          }
          confirmLabel={confirming.kind === 'restart' ? 'Restart' : 'Hibernate now'}
          onCancel={() => setConfirming(null)}
          onConfirm={() => {
            const kind = confirming.kind;
            setConfirming(null);
            void command(kind);
          }}
        />
      )}
    </section>
  );
}

function Commands({ commands }: { commands: CommandView[] }) {
  if (commands.length === 0) return <p class="muted">No commands yet.</p>;
  return (
    <div class="table-scroll" tabIndex={0} role="region" aria-label="Commands">
      <table class="commands">
        <thead>
          <tr>
            <th scope="col">Command</th>
            <th scope="col">State</th>
            <th scope="col">Issued</th>
            <th scope="col">Completed</th>
            <th scope="col">Detail</th>
          </tr>
        </thead>
        <tbody>
          {commands.map((c) => (
            <tr key={c.id} data-command-type={c.type}>
              <td>{c.type}</td>
              <td>
                <span class={`badge command-${c.state}`}>{c.state}</span>
              </td>
              <td>
                {date(c.issued_at)} <span class="muted">by {c.issued_by}</span>
              </td>
              <td>{date(c.completed_at)}</td>
              <td class="detail">{text(c.detail)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Newest first, each event once. */
function mergeEvents(a: EventView[], b: EventView[]): EventView[] {
  const byId = new Map<number, EventView>();
  for (const event of [...a, ...b]) byId.set(event.id, event);
  return [...byId.values()].sort((x, y) => y.id - x.id);
}

/** What owners may ask of a keep-alive here (admins may ask more); nothing when the server sets no limits. */
function KeepAliveLimits({ detail }: { detail: InstanceDetail }) {
  const limits = detail.hibernation.limits;
  if (!limits) return null;
  const budget =
    limits.keep_alive_budget_minutes === null ? '' : `; ${limits.keep_alive_left_minutes ?? 0} of ${limits.keep_alive_budget_minutes} min left in 24 h`;
  return (
    <p class="muted hint" data-hint="keep-alive-limits">
      Owners: up to {limits.max_keep_alive_minutes} min a time{budget}.
    </p>
  );
}
