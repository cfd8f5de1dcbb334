import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, errorMessage, setCsrfToken, setUnauthorizedHandler, type Session } from './api.js';
import { FleetView, INITIAL_FLEET_QUERY, type FleetQuery } from './fleet-view.js';
import { InstanceView } from './instance-view.js';
import { Login } from './login.js';
import { INITIAL_POLICY_QUERY, PolicyView, type PolicyQuery } from './policy-view.js';

type Route = { view: 'fleet' } | { view: 'policy' } | { view: 'instance'; instanceId: number };

function readRoute(): Route {
  if (location.hash === '#/policy') return { view: 'policy' };
  const match = /^#\/instances\/(\d{1,16})$/.exec(location.hash);
  return match ? { view: 'instance', instanceId: Number(match[1]) } : { view: 'fleet' };
}

const TITLES = { fleet: 'Fleet', policy: 'Policy' } as const;

function App() {
  // undefined: not asked yet; null: not logged in.
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [notice, setNotice] = useState<string | null>(null);
  const [route, setRoute] = useState<Route>(readRoute);
  const [fleetQuery, setFleetQuery] = useState<FleetQuery>(INITIAL_FLEET_QUERY);
  const [policyQuery, setPolicyQuery] = useState<PolicyQuery>(INITIAL_POLICY_QUERY);

  const adopt = (next: Session | null) => {
    setCsrfToken(next?.csrf_token ?? null);
    setSession(next);
  };

  useEffect(() => {
    setUnauthorizedHandler(() => {
      adopt(null);
      setNotice('Your session ended. Sign in again.');
    });
    // The session cookie is HttpOnly; the server sets a readable hint beside it. Without the hint there is
    // no session to ask about, and asking would only be answered with a 401.
    if (/(?:^|;\s*)dumont_signed_in=1(?:;|$)/.test(document.cookie)) {
      api<Session>('GET', '/api/v1/session', { expectUnauthorized: true })
        .then(adopt)
        .catch(() => adopt(null));
    } else adopt(null);
    const onHash = () => {
      setRoute(readRoute());
      window.scrollTo(0, 0);
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    document.title = route.view === 'instance' ? `Instance ${route.instanceId} · Dumont` : `${TITLES[route.view]} · Dumont`;
  }, [route]);

  const [logoutError, setLogoutError] = useState<string | null>(null);
  const logout = async () => {
    try {
      await api('DELETE', '/api/v1/session', { expectUnauthorized: true });
    } catch (e) {
      // Already gone on the server is as good as logged out; anything else is worth saying.
      if (!(e instanceof ApiError && e.status === 401)) {
        setLogoutError(errorMessage(e));
        return;
      }
    }
    setLogoutError(null);
    setNotice('You are signed out.');
    setFleetQuery(INITIAL_FLEET_QUERY);
    setPolicyQuery(INITIAL_POLICY_QUERY);
    // Whoever logs in next starts at the fleet, not on the page the last user left open.
    if (location.hash !== '#/') history.replaceState(null, '', '#/');
    setRoute({ view: 'fleet' });
    adopt(null);
  };

  if (session === undefined) return <p class="loading muted">Loading…</p>;
  if (session === null)
    return (
      <Login
        notice={notice}
        onLoggedIn={(s) => {
          setNotice(null);
          adopt(s);
        }}
      />
    );
  return (
    <>
      <a class="skip-link" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById('main')?.focus())}>
        Skip to content
      </a>
      <header class="topbar">
        <a class="brand" href="#/">
          Dumont
        </a>
        <nav class="views" aria-label="Views">
          <a href="#/" aria-current={route.view === 'fleet' ? 'page' : undefined}>
            Fleet
          </a>
          <a href="#/policy" aria-current={route.view === 'policy' ? 'page' : undefined}>
            Policy
          </a>
        </nav>
        <div class="who">
          <span>
            {session.owner}
            {session.admin && <span class="badge admin">admin</span>}
          </span>
          <button type="button" onClick={logout}>
            Log out
          </button>
        </div>
      </header>
      {logoutError && (
        <p class="error page-error" role="alert">
          {logoutError}
        </p>
      )}
      {route.view === 'instance' ? (
        <InstanceView key={route.instanceId} instanceId={route.instanceId} />
      ) : route.view === 'policy' ? (
        <PolicyView query={policyQuery} setQuery={setPolicyQuery} />
      ) : (
        <FleetView session={session} query={fleetQuery} setQuery={setFleetQuery} />
      )}
    </>
  );
}

render(<App />, document.getElementById('app')!);
