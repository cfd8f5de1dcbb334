import type { ErrorBody, SessionView } from '@dumont/protocol';

/** What the server answered with instead of success: its `{error, message, field?}`, or our reading of a bare failure. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The session's CSRF token lives in memory only: a reload asks the server for it again. */
let csrfToken: string | null = null;
let onUnauthorized: () => void = () => {};

export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

/** Called when a request made with the session cookie answers 401: the session expired or was revoked. */
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

export interface RequestOptions {
  body?: unknown;
  /** Session requests answer 401 as part of their contract; only other routes mean "logged out". */
  expectUnauthorized?: boolean;
}

export async function api<T>(method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken !== null) headers['x-csrf-token'] = csrfToken;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: options.body === undefined ? null : JSON.stringify(options.body),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection; the page retries on its own.');
  }
  const text = await response.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (response.ok) return json as T;
  if (response.status === 401 && !options.expectUnauthorized) onUnauthorized();
  const body = (json ?? {}) as Partial<ErrorBody>;
  const retryAfter = Number(response.headers.get('retry-after'));
  throw new ApiError(
    response.status,
    body.error ?? `http_${response.status}`,
    body.message ?? `The server answered ${response.status} ${response.statusText}.`.replace(' .', '.'),
    body.field,
    Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
  );
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) {
    return error.retryAfterSeconds ? `${error.message} Try again in ${error.retryAfterSeconds} s.` : error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

/** Builds a query string from the parameters that are set; a list repeats its parameter (`label=a=b&label=c=d`). */
export function query(params: Record<string, string | number | readonly string[] | null | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) for (const item of value) search.append(key, item);
    else if (value !== null && value !== undefined && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export type Session = SessionView;
