// The v1 API, from the browser: the same origin, the key as
// `Authorization: Bearer` on every call. The key lives in this tab's
// sessionStorage only.

const KEY = "berth.key";

export function key() {
  return sessionStorage.getItem(KEY);
}

export function setKey(value) {
  sessionStorage.setItem(KEY, value);
}

export function forget() {
  sessionStorage.removeItem(KEY);
  admin = undefined;
}

/** An error answer of the API: `{"error": {"code", "message", ...}}`. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

/** `/a/b/c` with each segment escaped. */
export function path(...segments) {
  return "/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
}

/** `?a=1&b=2` with the empty members left out ("" when none is left). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

/**
 * Sends a request with the signed-in key (or `options.key`). A 401 to the
 * signed-in key signs out: the page asks for a key again.
 */
export async function request(method, url, options = {}) {
  const headers = new Headers(options.headers || {});
  const presented = options.key ?? key();
  headers.set("Authorization", "Bearer " + presented);
  const resp = await fetch(url, {
    method,
    headers,
    body: options.body,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
    signal: options.signal,
  });
  if (resp.status === 401 && options.key === undefined) {
    forget();
    window.dispatchEvent(new CustomEvent("berth:unauthorized"));
  }
  return resp;
}

/** A failed answer as an ApiError, from its JSON body when it has one. */
export async function errorOf(resp) {
  let text = "";
  try {
    text = await resp.text();
  } catch {
    // The body was cut off; the status says enough.
  }
  return errorFromBody(resp, text);
}

export function errorFromBody(resp, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.code === "string") {
      return new ApiError(resp.status, body.error.code, body.error.message, body.error);
    }
  } catch {
    // Not JSON: fall through to the status.
  }
  const reason = resp.statusText ? ` ${resp.statusText}` : "";
  return new ApiError(resp.status, `http_${resp.status}`, `HTTP ${resp.status}${reason}`);
}

/** GETs JSON; anything but 2xx throws an ApiError. */
export async function json(url, options = {}) {
  const resp = await request("GET", url, options);
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

/** Whether `candidate` is a key this server accepts (it lists functions). */
export async function accepts(candidate) {
  const resp = await request("GET", "/v1/functions", { key: candidate });
  if (resp.status === 401) return false;
  if (!resp.ok) throw await errorOf(resp);
  return true;
}

let admin;

/** Whether the signed-in key is the admin's: only it may list tenants. */
export async function isAdmin() {
  if (admin === undefined) {
    const resp = await request("GET", "/v1/tenants");
    admin = resp.ok;
    await resp.body?.cancel();
  }
  return admin;
}

let operations;

/**
 * The paths of this server's API, from its OpenAPI document (no key
 * needed): what the console may offer depends on what the server has.
 */
export function apiPaths() {
  operations ??= fetch("/openapi.json", { credentials: "omit", cache: "no-store" })
    .then((r) => (r.ok ? r.json() : {}))
    .then((doc) => doc.paths || {})
    .catch(() => ({}));
  return operations;
}
