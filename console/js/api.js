// The public JSON API, called with the signed-in user's bearer token. The console has no other
// way to do anything: what the token may not do, the gateway refuses here as it would to curl.
//
// The token lives in sessionStorage only (gone when the tab closes, never in a URL, a cookie or
// localStorage) and is sent only in the Authorization header to this origin.

const KEY = 'sluice.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** An error answer of the API (or of the network), with its stable code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when the token stops working (401), so the page can go back to sign-in. */
let onUnauthenticated = () => {};
export function whenUnauthenticated(fn) {
  onUnauthenticated = fn;
}

function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // Not JSON (a proxy's page, say): the status is all there is.
  }
  const e = body && body.error;
  return new ApiError(res.status, (e && e.code) || `http_${res.status}`, (e && e.message) || res.statusText || 'request failed');
}

/**
 * One call: `api('GET', '/v1/apps')`, `api('PATCH', path, body)`. Resolves to the parsed JSON
 * (null for 204), rejects with ApiError.
 */
export async function api(method, path, body, { signal } = {}) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', 'the gateway could not be reached');
  }
  if (res.status === 401 && token()) onUnauthenticated();
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return null;
  return res.json();
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') p.set(k, v);
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

/** A path segment from an id (ids are opaque strings). */
export const seg = encodeURIComponent;

/**
 * Runs a query and streams its answer as NDJSON. Callbacks: onColumns(columns), onRows(batch of
 * row arrays), and the promise resolves to the summary line ({row_count, truncated,
 * elapsed_ms}) or, for a write, the JSON answer ({rows_affected}). A refusal, or an error line
 * after rows began, rejects with ApiError. Aborting `signal` ends the HTTP request, which makes
 * the gateway cancel the statement on the database server.
 */
export async function streamQuery(appId, body, { signal, onColumns, onRows }) {
  let res;
  try {
    res = await fetch(`/v1/apps/${seg(appId)}/query`, {
      method: 'POST',
      headers: headers({ 'Content-Type': 'application/json', Accept: 'application/x-ndjson' }),
      body: JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', 'the gateway could not be reached');
  }
  if (res.status === 401 && token()) onUnauthenticated();
  if (!res.ok) throw await errorFrom(res);
  const type = res.headers.get('Content-Type') || '';
  if (!type.includes('application/x-ndjson')) {
    // Writes answer plain JSON ({rows_affected}).
    return res.json();
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let summary = null;
  const handle = (line) => {
    if (!line) return;
    const v = JSON.parse(line);
    if (Array.isArray(v)) return v;
    if (v.columns) onColumns(v.columns);
    else if (v.error) throw new ApiError(200, v.error.code, v.error.message);
    else summary = v;
    return null;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split('\n');
    buffer = lines.pop();
    const batch = [];
    for (const line of lines) {
      const row = handle(line);
      if (row) batch.push(row);
    }
    if (batch.length) onRows(batch);
  }
  const last = handle(buffer);
  if (last) onRows([last]);
  if (!summary) throw new ApiError(0, 'stream_cut', 'the answer ended before its last line');
  return summary;
}
