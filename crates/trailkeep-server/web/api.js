// The one way the UI talks to the server: the /v1 JSON API with the session cookie. Writes carry
// the session's CSRF token; a 401 sends the user back to the sign-in page.

let csrfToken = null;
let onSignedOut = () => {};

export function setCsrf(token) {
  csrfToken = token;
}

export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export class ApiError extends Error {
  constructor(status, body) {
    const message = body?.error?.message || (typeof body === "string" && body) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
    this.details = body?.error?.details || [];
  }
}

/** Builds a same-origin URL; array values repeat the parameter (account=a&account=b). */
export function url(path, params = {}) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) u.searchParams.append(k, one);
  }
  return u;
}

export async function api(method, path, { params, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const r = await fetch(url(path, params), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  const type = r.headers.get("Content-Type") || "";
  const data = r.status === 204 ? null : type.includes("json") ? await r.json() : await r.text();
  if (r.status === 401 && path !== "/ui/session") onSignedOut();
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const get = (path, params, signal) => api("GET", path, { params, signal });
export const post = (path, body) => api("POST", path, { body });
export const patch = (path, body) => api("PATCH", path, { body });
export const del = (path) => api("DELETE", path);
