import type { RegisterInstanceRequest, RegisterInstanceResponse } from '@dumont/protocol';
import { useState } from 'preact/hooks';
import { api, ApiError, errorMessage } from './api.js';
import { Modal } from './dialog.js';
import { FieldError } from './field-error.js';

/** Registers an instance, then shows its agent token once with the install command the server gave. */
export function AddInstanceDialog({ onClose }: { onClose: () => void }) {
  const [form, setForm] = useState({ instance_id: '', hostname: '', provider: '', provider_instance_id: '', price_per_hour: '' });
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const [registered, setRegistered] = useState<RegisterInstanceResponse | null>(null);
  const set = (key: keyof typeof form) => (e: Event) => setForm({ ...form, [key]: (e.currentTarget as HTMLInputElement).value });

  const submit = async (e: Event) => {
    e.preventDefault();
    const id = Number(form.instance_id);
    if (!/^\d+$/.test(form.instance_id.trim()) || !Number.isSafeInteger(id) || id < 1) {
      setError(new ApiError(400, 'invalid_request', 'Enter the provider’s numeric instance id (a whole number from 1).', 'instance_id'));
      return;
    }
    const body: RegisterInstanceRequest = { instance_id: id };
    if (form.hostname.trim()) body.hostname = form.hostname.trim();
    if (form.provider.trim()) body.provider = form.provider.trim();
    if (form.provider_instance_id.trim()) body.provider_instance_id = form.provider_instance_id.trim();
    if (form.price_per_hour.trim()) body.price_per_hour = Number(form.price_per_hour);
    setBusy(true);
    try {
      setRegistered(await api<RegisterInstanceResponse>('POST', '/api/v1/agent/instances', { body }));
      setError(null);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'error', errorMessage(err)));
    } finally {
      setBusy(false);
    }
  };

  if (registered) {
    return (
      <Modal title={`Instance ${registered.instance_id} registered`} onClose={onClose} wide>
        {registered.rotated && (
          <p class="banner warning">This instance was registered before: it has a new token now and the old one stops working.</p>
        )}
        <p>
          The agent token is shown <strong>only once</strong>. On the GPU host, save it to <code>./dumont-agent.token</code> first,
          then run the install command there as root.
        </p>
        <CopyField label="Agent token" value={registered.agent_token} name="agent_token" />
        <CopyField label="Install command" value={registered.install_command} name="install_command" multiline />
        <div class="dialog-actions">
          <button type="button" class="primary" autofocus onClick={onClose}>
            Done
          </button>
        </div>
      </Modal>
    );
  }

  const fieldError = (field: string) => (error?.field === field ? error.message : null);
  const generalError = error && !['instance_id', 'hostname', 'provider', 'provider_instance_id', 'price_per_hour'].includes(error.field ?? '') ? error : null;
  return (
    <Modal title="Add instance" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <Field label="Instance id" name="instance_id" value={form.instance_id} onInput={set('instance_id')} error={fieldError('instance_id')} required inputMode="numeric" autofocus />
        <Field label="Hostname (optional)" name="hostname" value={form.hostname} onInput={set('hostname')} error={fieldError('hostname')} />
        <details>
          <summary>Provider (optional)</summary>
          <Field label="Provider" name="provider" value={form.provider} onInput={set('provider')} error={fieldError('provider')} placeholder="none, vast, webhook, command" />
          <Field label="Provider’s instance id" name="provider_instance_id" value={form.provider_instance_id} onInput={set('provider_instance_id')} error={fieldError('provider_instance_id')} />
          <Field label="Price per hour (USD)" name="price_per_hour" value={form.price_per_hour} onInput={set('price_per_hour')} error={fieldError('price_per_hour')} inputMode="decimal" />
        </details>
        {generalError && (
          <p class="error" role="alert">
            {generalError.message}
          </p>
        )}
        <div class="dialog-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            Register
          </button>
        </div>
      </form>
    </Modal>
  );
}

function Field(props: {
  label: string;
  name: string;
  value: string;
  onInput: (e: Event) => void;
  error: string | null;
  required?: boolean;
  autofocus?: boolean;
  placeholder?: string;
  inputMode?: 'numeric' | 'decimal';
}) {
  const errorId = `${props.name}-error`;
  return (
    <div class="field">
      <label for={`add-${props.name}`}>{props.label}</label>
      <input
        id={`add-${props.name}`}
        name={props.name}
        value={props.value}
        onInput={props.onInput}
        required={props.required}
        autofocus={props.autofocus}
        placeholder={props.placeholder}
        inputMode={props.inputMode}
        autocomplete="off"
        aria-invalid={props.error ? true : undefined}
        aria-describedby={props.error ? errorId : undefined}
      />
      <FieldError id={errorId} message={props.error} />
    </div>
  );
}

function CopyField(props: { label: string; value: string; name: string; multiline?: boolean }) {
  const [copied, setCopied] = useState<string | null>(null);
  const id = `copy-${props.name}`;
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.value);
      setCopied('Copied.');
    } catch {
      // No clipboard (an insecure origin, a denied permission): select it for a manual copy.
      const field = document.getElementById(id) as HTMLTextAreaElement | HTMLInputElement | null;
      field?.select();
      setCopied('Selected: press Ctrl+C (⌘C) to copy.');
    }
  };
  return (
    <div class="field copy-field">
      <label for={id}>{props.label}</label>
      <div class="copy-row">
        {props.multiline ? (
          <textarea id={id} name={props.name} readOnly rows={3} value={props.value} class="mono" spellcheck={false} />
        ) : (
          <input id={id} name={props.name} readOnly value={props.value} class="mono" spellcheck={false} autocomplete="off" />
        )}
        <button type="button" onClick={copy} aria-label={`Copy ${props.label.toLowerCase()}`}>
          Copy
        </button>
      </div>
      <span class="muted" role="status">
        {copied}
      </span>
    </div>
  );
}
