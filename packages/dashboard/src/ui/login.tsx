import { useRef, useState } from 'preact/hooks';
import { api, ApiError, errorMessage, type Session } from './api.js';

/**
 * Sends the key once to open a cookie session; the key is never kept, in storage or in the field. Without
 * script the same form posts to the server, which answers with a redirect and the cookie.
 */
export function Login({ onLoggedIn, notice }: { onLoggedIn: (session: Session) => void; notice: string | null }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    const field = input.current!;
    const apiKey = field.value.trim();
    if (!apiKey) {
      setError('Enter your API key.');
      field.focus();
      return;
    }
    setBusy(true);
    try {
      const session = await api<Session>('POST', '/api/v1/session', { body: { api_key: apiKey }, expectUnauthorized: true });
      field.value = '';
      onLoggedIn(session);
    } catch (err) {
      field.value = '';
      setError(err instanceof ApiError && err.status === 401 ? 'That API key is not valid.' : errorMessage(err));
      field.focus();
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" class="login" tabIndex={-1}>
      <form method="post" action="/api/v1/session" onSubmit={submit} class="card login-card" noValidate>
        <h1>Dumont</h1>
        <p class="muted">Sign in with an API key to see your GPU fleet.</p>
        {notice && <p class="banner info">{notice}</p>}
        <div class="field">
          <label for="api-key">API key</label>
          <input
            ref={input}
            id="api-key"
            name="api_key"
            type="password"
            autocomplete="off"
            spellcheck={false}
            required
            autofocus
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? 'api-key-error' : undefined}
          />
          {error && (
            <p id="api-key-error" class="error field-error" role="alert">
              {error}
            </p>
          )}
        </div>
        <button type="submit" class="primary" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}
