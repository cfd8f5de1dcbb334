import type { ReplayInstanceFigures, ReplayRegret, ReplayResponse } from '@dumont/protocol';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, errorMessage, query } from './api.js';
import { FieldError } from './field-error.js';
import { date, decimal, duration, usd } from './format.js';
import { PolicyChart, type SavingsUnit } from './policy-chart.js';

/** The form as typed; empty means the server's default. */
export interface PolicyQuery {
  threshold_minutes: string;
  utilization_percent: string;
  warning_seconds: string;
  regret_minutes: string;
  /** `datetime-local` values, the browser's local time. */
  from: string;
  to: string;
  instance: string;
}

export const INITIAL_POLICY_QUERY: PolicyQuery = {
  threshold_minutes: '10,20,30,60',
  utilization_percent: '',
  warning_seconds: '',
  regret_minutes: '',
  from: '',
  to: '',
  instance: '',
};

type Field = keyof PolicyQuery;
const FIELDS: readonly Field[] = ['threshold_minutes', 'utilization_percent', 'warning_seconds', 'regret_minutes', 'from', 'to', 'instance'];

/** Which row's details are open: the policy that ran, or a replayed one by its place in the answer. */
type Selected = 'actual' | number | null;

interface Figures {
  hibernations: number;
  gpu_hours_saved: number;
  usd_saved: number;
  regrets: ReplayRegret[];
  instances: ReplayInstanceFigures[];
}

/** `2026-11-29T10:00` in the browser's zone → RFC 3339 in UTC; '' stays unset. */
function isoOf(local: string, field: 'from' | 'to'): string | undefined {
  if (!local.trim()) return undefined;
  const at = new Date(local);
  if (Number.isNaN(at.getTime())) throw new ApiError(400, 'invalid_request', `${field}: enter a date and time`, field);
  return at.toISOString();
}

/**
 * `GET /agent/replay`: the hibernation policy replayed over the recorded history at several thresholds,
 * beside what the policy that ran did, so that an operator can weigh what each would save against how
 * often it would have stopped a machine someone came back to.
 */
export function PolicyView(props: { query: PolicyQuery; setQuery: (q: PolicyQuery) => void }) {
  const { query: values, setQuery } = props;
  const [answer, setAnswer] = useState<ReplayResponse | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const [selected, setSelected] = useState<Selected>(null);
  const [unit, setUnit] = useState<SavingsUnit | null>(null);
  // Only the newest replay asked may paint: an older one answering late is dropped.
  const generation = useRef(0);

  const replay = async () => {
    const mine = ++generation.current;
    setBusy(true);
    try {
      const path = `/api/v1/agent/replay${query({
        threshold_minutes: values.threshold_minutes.trim(),
        utilization_percent: values.utilization_percent.trim(),
        warning_seconds: values.warning_seconds.trim(),
        regret_minutes: values.regret_minutes.trim(),
        from: isoOf(values.from, 'from'),
        to: isoOf(values.to, 'to'),
        instance: values.instance.replace(/\s+/g, ''),
      })}`;
      const next = await api<ReplayResponse>('GET', path);
      if (mine !== generation.current) return;
      setAnswer(next);
      setError(null);
      setSelected(null);
    } catch (e) {
      if (mine !== generation.current) return;
      // A refused query shows no figures: the table must never look like the answer to what is now typed.
      setAnswer(null);
      setError(e instanceof ApiError ? e : new ApiError(0, 'error', errorMessage(e)));
    } finally {
      if (mine === generation.current) setBusy(false);
    }
  };

  // One replay with what the form holds on arrival; after that, only the button asks.
  useEffect(() => {
    void replay();
    return () => {
      generation.current++;
    };
  }, []);

  const change = (field: Field, value: string) => setQuery({ ...values, [field]: value });
  const fieldError = (field: Field) => (error?.field === field ? error.message : null);
  const input = (field: Field, label: string, attrs: Record<string, unknown>) => {
    const message = fieldError(field);
    const id = `policy-${field.replace(/_/g, '-')}`;
    return (
      <div class="field">
        <label for={id}>{label}</label>
        <input
          id={id}
          name={field}
          value={values[field]}
          onInput={(e) => change(field, e.currentTarget.value)}
          aria-invalid={message ? true : undefined}
          aria-describedby={message ? `${id}-error` : undefined}
          {...attrs}
        />
        <FieldError id={`${id}-error`} message={message} />
      </div>
    );
  };

  const priced = answer ? answer.policies.some((p) => p.usd_saved > 0) || answer.actual.usd_saved > 0 : false;
  const shownUnit: SavingsUnit = unit ?? (priced ? 'usd' : 'gpu_hours');
  const nothing = answer !== null && answer.actual.hibernations === 0 && answer.policies.every((p) => p.hibernations === 0);
  const details: { title: string; figures: Figures } | null =
    answer === null || selected === null
      ? null
      : selected === 'actual'
        ? { title: 'The policy that ran', figures: answer.actual }
        : answer.policies[selected]
          ? { title: `${decimal(answer.policies[selected].threshold_minutes, 2)}-minute threshold`, figures: answer.policies[selected] }
          : null;
  const first = answer?.policies[0];
  // Newer servers say where the raw samples begin; before that, a replay reads coarser 5-minute rollups.
  const rawFrom = (answer as { raw_from?: string } | null)?.raw_from;
  const coarseBefore = answer && rawFrom && Date.parse(rawFrom) > Date.parse(answer.from) ? rawFrom : null;

  return (
    <main id="main" class="policy" tabIndex={-1}>
      <div class="page-title">
        <h1>Policy</h1>
      </div>
      <p class="muted intro">
        The hibernation policy replayed over the recorded history, once per idle threshold: what each would have saved, and its
        regrets (a machine stopped and wanted again within the regret window).
      </p>
      <section class="card" aria-labelledby="replay-form-title">
        <h2 id="replay-form-title">Replay</h2>
        <form
          class="replay-form"
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            void replay();
          }}
        >
          <div class="replay-fields">
            {input('threshold_minutes', 'Thresholds (minutes, comma-separated)', { type: 'text', inputMode: 'decimal', autocomplete: 'off', class: 'wide' })}
            {input('utilization_percent', 'Idle below utilization (%)', { type: 'number', min: 0, max: 100, step: 'any', placeholder: 'server default' })}
            {input('warning_seconds', 'Warning (seconds)', { type: 'number', min: 0, step: 'any', placeholder: 'server default' })}
            {input('regret_minutes', 'Regret window (minutes)', { type: 'number', min: 0, step: 'any', placeholder: '60' })}
            {input('from', 'From', { type: 'datetime-local', step: 1 })}
            {input('to', 'To', { type: 'datetime-local', step: 1 })}
            {input('instance', 'Instances (ids, comma-separated)', { type: 'text', inputMode: 'numeric', autocomplete: 'off', placeholder: 'all I can see' })}
          </div>
          {error && !FIELDS.includes(error.field as Field) && (
            <p class="error" role="alert">
              {errorMessage(error)}
            </p>
          )}
          <div class="button-row">
            <button type="submit" class="primary" disabled={busy}>
              Replay
            </button>
            <span class="muted" role="status">
              {busy ? 'Replaying the recorded history…' : ''}
            </span>
          </div>
        </form>
      </section>

      {answer && (
        <section class="card replay-result" aria-labelledby="replay-result-title" aria-busy={busy}>
          <div class="section-head">
            <h2 id="replay-result-title">Savings against regrets</h2>
            {!nothing && (
              <div class="segmented" role="group" aria-label="Chart savings in">
                <button type="button" aria-pressed={shownUnit === 'usd'} onClick={() => setUnit('usd')}>
                  USD
                </button>
                <button type="button" aria-pressed={shownUnit === 'gpu_hours'} onClick={() => setUnit('gpu_hours')}>
                  GPU-hours
                </button>
              </div>
            )}
          </div>
          <p class="muted replay-range">
            {date(answer.from)} to {date(answer.to)}
            {first && (
              <>
                {' '}
                · idle below {decimal(first.utilization_percent, 2)} % utilization · {duration(first.warning_seconds)} warning
              </>
            )}
            {coarseBefore && <> · before {date(coarseBefore)}, replayed from 5-minute rollups</>}
          </p>
          {nothing && (
            <p class="banner empty-replay" role="status">
              Nothing to compare: no replayed threshold would have hibernated anything in this range, and nothing was hibernated.
              Either nothing was recorded here, or no instance was idle long enough.
            </p>
          )}
          {!nothing && answer.policies.length > 0 && <PolicyChart policies={answer.policies} unit={shownUnit} />}
          <div class="table-scroll" tabIndex={0} role="region" aria-label="Replayed policies">
            <table class="replay">
              <caption class="muted">Choose a row to list its regrets and its figures per instance.</caption>
              <thead>
                <Heads first="Policy" num={['Threshold', ...FIGURES]} />
              </thead>
              <tbody>
                <FigureRow
                  label="Actual (the policy that ran)"
                  threshold="as configured"
                  figures={answer.actual}
                  selected={selected === 'actual'}
                  onSelect={() => setSelected(selected === 'actual' ? null : 'actual')}
                  data-policy="actual"
                />
                {answer.policies.map((policy, index) => (
                  <FigureRow
                    key={index}
                    label={`Replayed at ${decimal(policy.threshold_minutes, 2)} min`}
                    threshold={`${decimal(policy.threshold_minutes, 2)} min`}
                    figures={policy}
                    selected={selected === index}
                    onSelect={() => setSelected(selected === index ? null : index)}
                    data-policy={String(policy.threshold_minutes)}
                  />
                ))}
              </tbody>
            </table>
          </div>
          {details && <PolicyDetails title={details.title} figures={details.figures} />}
        </section>
      )}
    </main>
  );
}

const FIGURES = ['Hibernations', 'GPU-hours saved', 'USD saved', 'Regrets'];

function Heads(props: { first: string; text?: string[]; num: string[] }) {
  return (
    <tr>
      {[props.first, ...(props.text ?? [])].map((label) => (
        <th scope="col">{label}</th>
      ))}
      {props.num.map((label) => (
        <th scope="col" class="num">
          {label}
        </th>
      ))}
    </tr>
  );
}

function FigureRow(props: { label: string; threshold: string; figures: Figures; selected: boolean; onSelect: () => void; 'data-policy': string }) {
  const { figures } = props;
  return (
    <tr class={props.selected ? 'selected' : undefined} data-policy={props['data-policy']} onClick={props.onSelect}>
      <th scope="row">
        {/* The row takes the click; the button makes it reachable and announced from the keyboard. */}
        <button type="button" class="row-select" aria-expanded={props.selected}>
          {props.label}
        </button>
      </th>
      <td class="num">{props.threshold}</td>
      <td class="num" data-field="hibernations">
        {figures.hibernations}
      </td>
      <td class="num" data-field="gpu_hours_saved">
        {decimal(figures.gpu_hours_saved, 2)}
      </td>
      <td class="num" data-field="usd_saved">
        {usd(figures.usd_saved)}
      </td>
      <td class="num" data-field="regrets">
        {figures.regrets.length}
      </td>
    </tr>
  );
}

function PolicyDetails({ title, figures }: { title: string; figures: Figures }) {
  return (
    <div class="policy-details">
      <h3 id="regrets-title">Regrets: {title}</h3>
      {figures.regrets.length === 0 ? (
        <p class="muted">No regrets: no machine it stopped was wanted again within the regret window.</p>
      ) : (
        <div class="table-scroll" tabIndex={0} role="region" aria-labelledby="regrets-title">
          <table class="regrets">
            <thead>
              <Heads first="Instance" text={['Hibernated at', 'Busy again at']} num={['Asleep for']} />
            </thead>
            <tbody>
              {figures.regrets.map((regret) => (
                <tr key={`${regret.instance_id}-${regret.hibernated_at}`} data-instance-id={regret.instance_id}>
                  <td>
                    <a href={`#/instances/${regret.instance_id}`}>{regret.instance_id}</a>
                  </td>
                  <td>
                    <time dateTime={regret.hibernated_at}>{date(regret.hibernated_at)}</time>
                  </td>
                  <td>
                    <time dateTime={regret.busy_again_at}>{date(regret.busy_again_at)}</time>
                  </td>
                  <td class="num">{duration((Date.parse(regret.busy_again_at) - Date.parse(regret.hibernated_at)) / 1000)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h3 id="per-instance-title">Per instance: {title}</h3>
      {figures.instances.length === 0 ? (
        <p class="muted">No instance was hibernated.</p>
      ) : (
        <div class="table-scroll" tabIndex={0} role="region" aria-labelledby="per-instance-title">
          <table class="per-instance">
            <thead>
              <Heads first="Instance" num={FIGURES} />
            </thead>
            <tbody>
              {figures.instances.map((row) => (
                <tr key={row.instance_id} data-instance-id={row.instance_id}>
                  <td>
                    <a href={`#/instances/${row.instance_id}`}>{row.instance_id}</a>
                  </td>
                  <td class="num">{row.hibernations}</td>
                  <td class="num">{decimal(row.gpu_hours_saved, 2)}</td>
                  <td class="num">{usd(row.usd_saved)}</td>
                  <td class="num">{row.regret_count}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
