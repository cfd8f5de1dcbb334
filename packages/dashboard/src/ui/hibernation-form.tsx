import type { HibernationPolicyPatch, InstanceDetail } from '@dumont/protocol';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, errorMessage } from './api.js';
import { FieldError } from './field-error.js';

interface Values {
  enabled: boolean;
  threshold_minutes: string;
  ignore_gpu_processes: boolean;
  dry_run: boolean;
}

const fromDetail = (detail: InstanceDetail): Values => ({
  enabled: detail.hibernation.enabled,
  threshold_minutes: String(detail.hibernation.threshold_minutes),
  ignore_gpu_processes: detail.hibernation.ignore_gpu_processes,
  dry_run: detail.hibernation.dry_run,
});

/** The instance's hibernation policy. While the user edits, the 5-second refresh leaves the form alone. */
export function HibernationForm({ detail, base, onSaved }: { detail: InstanceDetail; base: string; onSaved: () => Promise<void> }) {
  const [values, setValues] = useState<Values>(() => fromDetail(detail));
  const [dirty, setDirty] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const [saved, setSaved] = useState<string | null>(null);

  useEffect(() => {
    if (!dirty) setValues(fromDetail(detail));
  }, [detail, dirty]);

  const change = (patch: Partial<Values>) => {
    setValues({ ...values, ...patch });
    setDirty(true);
    setSaved(null);
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    const threshold = Number(values.threshold_minutes);
    if (values.threshold_minutes.trim() === '' || !Number.isFinite(threshold)) {
      setError(new ApiError(400, 'invalid_request', 'Enter the idle time in minutes (a number above 0).', 'threshold_minutes'));
      return;
    }
    const body: HibernationPolicyPatch = {
      enabled: values.enabled,
      threshold_minutes: threshold,
      ignore_gpu_processes: values.ignore_gpu_processes,
      dry_run: values.dry_run,
    };
    setBusy(true);
    try {
      await api<InstanceDetail>('PATCH', `${base}/hibernation`, { body });
      setDirty(false);
      setError(null);
      setSaved('Saved.');
      await onSaved();
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'error', errorMessage(err)));
    } finally {
      setBusy(false);
    }
  };
  const fieldError = (field: keyof Values) => (error?.field === field ? error.message : null);

  return (
    <section class="card" aria-labelledby="hibernation-title">
      <h2 id="hibernation-title">Hibernation</h2>
      <form onSubmit={submit} noValidate class="settings">
        <label class="check">
          <input type="checkbox" name="enabled" checked={values.enabled} onChange={(e) => change({ enabled: e.currentTarget.checked })} />
          Hibernate when idle
        </label>
        <div class="field">
          <label for="threshold-minutes">Idle threshold (minutes)</label>
          <input
            id="threshold-minutes"
            name="threshold_minutes"
            type="number"
            min={1}
            max={10080}
            step="any"
            value={values.threshold_minutes}
            onInput={(e) => change({ threshold_minutes: e.currentTarget.value })}
            aria-invalid={fieldError('threshold_minutes') ? true : undefined}
            aria-describedby={fieldError('threshold_minutes') ? 'threshold-error' : undefined}
          />
          <FieldError id="threshold-error" message={fieldError('threshold_minutes')} />
          <LimitsHint detail={detail} />
        </div>
        <label class="check">
          <input
            type="checkbox"
            name="ignore_gpu_processes"
            checked={values.ignore_gpu_processes}
            onChange={(e) => change({ ignore_gpu_processes: e.currentTarget.checked })}
          />
          Ignore GPU processes (judge by utilization only)
        </label>
        <label class="check">
          <input type="checkbox" name="dry_run" checked={values.dry_run} onChange={(e) => change({ dry_run: e.currentTarget.checked })} />
          Dry run (record, never stop)
        </label>
        {error && !error.field?.match(/^(threshold_minutes)$/) && (
          <p class="error" role="alert">
            {error.message}
          </p>
        )}
        <div class="button-row">
          <button type="submit" class="primary" disabled={busy || !dirty}>
            Save
          </button>
          {dirty && (
            <button
              type="button"
              onClick={() => {
                setDirty(false);
                setError(null);
              }}
            >
              Discard changes
            </button>
          )}
          <span class="muted" role="status">
            {saved}
          </span>
        </div>
      </form>
    </section>
  );
}

/** The owners' limits on this instance, and any stored value they bound (admins may exceed them). */
function LimitsHint({ detail }: { detail: InstanceDetail }) {
  const { limits, threshold_minutes_requested: requested } = detail.hibernation;
  if (!limits) return null;
  return (
    <p class="muted hint" data-hint="hibernation-limits">
      Owners may set up to {limits.max_threshold_minutes} min{limits.owner_may_disable ? '' : ', and may not turn hibernation off or to dry run'}.
      {requested !== undefined && ` ${requested} min was asked; ${detail.hibernation.threshold_minutes} applies.`}
    </p>
  );
}
