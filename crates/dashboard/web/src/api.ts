// The API client: every request goes to this origin's /api/v1/ with the
// session cookie; state-changing requests carry the session's CSRF token.
// Errors keep the API's own message so pages can show it as worded.

/** An API error: the HTTP status and the API's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The logged-in user as GET /api/v1/session reports them. */
export interface Session {
  user: string;
  admin: boolean;
  csrf: string | null;
}

let csrf: string | null = null;
const unauthorizedListeners: Array<() => void> = [];

/** Called when a request finds the session gone (401), e.g. expired. */
export function onUnauthorized(listener: () => void): void {
  unauthorizedListeners.push(listener);
}

/** Remembers the CSRF token of the current session. */
export function setCsrf(token: string | null): void {
  csrf = token;
}

async function errorOf(response: Response): Promise<ApiError> {
  let code = "HTTP";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "object") {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // Not JSON: the status line is all there is to say.
  }
  return new ApiError(response.status, code, message);
}

/**
 * Sends a request to `/api/v1${path}`; throws ApiError for non-2xx answers.
 * A change refused for a stale CSRF token (a login in another tab replaced
 * the session cookie) is retried once with the current session's token.
 */
export async function request(method: string, path: string, body?: unknown): Promise<Response> {
  try {
    return await sendOnce(method, path, body);
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "CSRF")) throw error;
    const session = await get<Session>("/session");
    setCsrf(session.csrf);
    return sendOnce(method, path, body);
  }
}

async function sendOnce(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrf) headers["X-Wharf-CSRF"] = csrf;
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && path !== "/session") unauthorizedListeners.forEach((l) => l());
    throw error;
  }
  return response;
}

/** GET returning JSON. */
export async function get<T>(path: string): Promise<T> {
  return (await request("GET", path)).json();
}

/** A state-changing request returning JSON, or null for an empty answer. */
export async function send<T>(method: string, path: string, body?: unknown): Promise<T | null> {
  const response = await request(method, path, body);
  const text = await response.text();
  return text ? (JSON.parse(text) as T) : null;
}

/** Encodes one path segment (repository names keep their `/` as %2F). */
export function seg(value: string): string {
  return encodeURIComponent(value);
}

/** Logs in with a password; the server sets the session cookie. */
export async function login(username: string, password: string): Promise<Session> {
  const session = (await send<Session>("POST", "/session", { username, password }))!;
  setCsrf(session.csrf);
  return session;
}

/** The current session, or null when not logged in. */
export async function currentSession(): Promise<Session | null> {
  try {
    const session = await get<Session>("/session");
    setCsrf(session.csrf);
    return session;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

/** Ends the session (clears the cookie). */
export async function logout(): Promise<void> {
  await request("DELETE", "/session");
  setCsrf(null);
}
