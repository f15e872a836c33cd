// The controller's REST API (/api/v1), signed in with the session cookie; state-changing
// requests carry the session's CSRF token.

let session = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch {
      // Not JSON: keep the status line.
    }
    if (response.status === 401 && path !== "/sessions") session = null;
    throw new ApiError(response.status, message);
  }
  return response;
}

// The JSON of a request (null for 204).
export async function api(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

// The JSON and the headers.
export async function apiWithHeaders(path, options) {
  const response = await request(path, options);
  return { body: await response.json(), headers: response.headers };
}

export function currentSession() {
  return session;
}

export function canOperate() {
  return session !== null && (session.role === "operator" || session.role === "admin");
}

// The session behind the cookie, if any.
export async function loadSession() {
  try {
    session = await api("/sessions/current");
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
    session = null;
  }
  return session;
}

export async function signIn(token) {
  session = await api("/sessions", { method: "POST", body: { token } });
  return session;
}

export async function signOut() {
  try {
    await api("/sessions/current", { method: "DELETE" });
  } finally {
    session = null;
  }
}

export function path(...parts) {
  return parts.map((p) => encodeURIComponent(String(p))).join("/");
}
