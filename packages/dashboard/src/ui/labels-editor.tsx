import type { InstanceDetail, InstancePatch } from '@dumont/protocol';
import { useState } from 'preact/hooks';
import { api, ApiError, errorMessage } from './api.js';
import { FieldError } from './field-error.js';

/**
 * The instance's labels: each removable, and a key and value to add or change one. Every change is a
 * merge patch of the one label it is about, so two people editing different labels never undo each other.
 */
export function LabelsEditor({ detail, base, onSaved }: { detail: InstanceDetail; base: string; onSaved: () => Promise<void> }) {
  const [key, setKey] = useState('');
  const [value, setValue] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const labels = Object.entries(detail.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));

  const patch = async (change: Record<string, string | null>) => {
    setBusy(true);
    try {
      const body: InstancePatch = { labels: change };
      await api<InstanceDetail>('PATCH', base, { body });
      setError(null);
      await onSaved();
      return true;
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'error', errorMessage(err)));
      return false;
    } finally {
      setBusy(false);
    }
  };
  const add = async (e: Event) => {
    e.preventDefault();
    if (key.trim() === '') {
      setError(new ApiError(400, 'invalid_request', 'Enter a label key, such as team.', 'labels'));
      return;
    }
    if (await patch({ [key.trim()]: value.trim() })) {
      setKey('');
      setValue('');
    }
  };
  // The server names the label it refused (`labels.Team`) or the whole set (`labels`: too many).
  const fieldMessage = error?.field?.startsWith('labels') ? error.message : null;

  return (
    <section class="card" aria-labelledby="labels-title">
      <h2 id="labels-title">Labels</h2>
      {labels.length === 0 ? (
        <p class="muted">No labels. Labels group instances for the list's filter, savings and /metrics.</p>
      ) : (
        <ul class="labels editable" aria-label="Labels">
          {labels.map(([k, v]) => (
            <li key={k} class="label-chip">
              {k}={v}
              <button type="button" class="chip-remove" aria-label={`Remove label ${k}`} disabled={busy} onClick={() => void patch({ [k]: null })}>
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      <form onSubmit={add} noValidate class="label-form">
        <div class="field">
          <label for="label-key">Key</label>
          <input
            id="label-key"
            name="label_key"
            value={key}
            maxLength={63}
            placeholder="team"
            onInput={(e) => setKey(e.currentTarget.value)}
            aria-invalid={fieldMessage ? true : undefined}
            aria-describedby={fieldMessage ? 'label-error' : undefined}
          />
        </div>
        <div class="field">
          <label for="label-value">Value</label>
          <input id="label-value" name="label_value" value={value} maxLength={63} placeholder="vision" onInput={(e) => setValue(e.currentTarget.value)} />
        </div>
        <button type="submit" disabled={busy}>
          Set label
        </button>
      </form>
      <FieldError id="label-error" message={fieldMessage} />
      {error && !fieldMessage && (
        <p class="error" role="alert">
          {error.message}
        </p>
      )}
    </section>
  );
}
