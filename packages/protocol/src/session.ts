import { Type, type Static } from '@sinclair/typebox';
import { IsoTimestamp } from './common.js';

/** `POST /api/v1/session`: the dashboard's login form (JSON, or the form's own url-encoded post). */
export const LoginRequest = Type.Object(
  {
    api_key: Type.String({ minLength: 1, maxLength: 512 }),
  },
  { additionalProperties: false },
);
export type LoginRequest = Static<typeof LoginRequest>;

/**
 * The logged-in session (`POST` and `GET /api/v1/session`). The session itself travels in an HttpOnly
 * cookie the page cannot read; `csrf_token` is what the page sends as `X-CSRF-Token` with every change.
 */
export const SessionView = Type.Object({
  owner: Type.String(),
  admin: Type.Boolean(),
  csrf_token: Type.String(),
  expires_at: IsoTimestamp,
});
export type SessionView = Static<typeof SessionView>;
