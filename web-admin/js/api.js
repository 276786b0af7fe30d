// The one place the console talks to the admin API.
//
// Every URL is relative to the page (/admin/), so `api/routes` is
// /admin/api/routes. The session cookie is HttpOnly and never seen here; what
// the console holds is the CSRF token from the login answer, sent on every
// call that can change something. The API also checks the Origin header,
// which a same-origin fetch sends by itself.

import { fmtWait } from './dom.js';

const JSON_TYPE = 'application/json';

let csrfToken = null;
const listeners = { unauthorized: [], passwordChangeRequired: [] };

export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** Called with the error when a call answers 401 or 403 password_change_required. */
export function on(event, fn) {
  listeners[event].push(fn);
}

function emit(event, detail) {
  for (const fn of listeners[event]) fn(detail);
}

/** An API error: HTTP status, the error code and message from the JSON body,
 *  per-field problems, and Retry-After in seconds when the answer had one. */
export class ApiError extends Error {
  constructor({ status, code, message, errors = [], retryAfter = null, correlationId = null }) {
    super(message || code || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.errors = errors;
    this.retryAfter = retryAfter;
    this.correlationId = correlationId;
  }

  /** Field problems for `key` (matched loosely, see fieldName()). */
  problemsFor(name) {
    return this.errors.filter((e) => fieldName(e.key) === name).map((e) => e.problem);
  }
}

/** The form field a problem's key path belongs to: "routes[0].upstream",
 *  "upstream" and "methods[2]" → "upstream" / "methods". */
export function fieldName(key) {
  const last = String(key || '').split('.').pop();
  return last.replace(/\[\d+\]$/, '');
}

/**
 * request('GET', 'routes') → parsed JSON (null for 204).
 * Options: `quiet` — do not raise the global 401/403 events (the login form
 * handles its own 401).
 */
export async function request(method, path, body, { quiet = false, signal } = {}) {
  const headers = { Accept: JSON_TYPE };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  if (method !== 'GET' && method !== 'HEAD') {
    if (csrfToken) headers['X-CSRF-Token'] = csrfToken;
    if (body !== undefined) {
      headers['Content-Type'] = JSON_TYPE;
      init.body = JSON.stringify(body);
    }
  }
  let response;
  try {
    response = await fetch(`api/${path}`, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError({ status: 0, code: 'network', message: 'The gateway could not be reached. Is it running?' });
  }
  const data = await readBody(response);
  if (response.ok) return data;

  const error = new ApiError({
    status: response.status,
    code: data?.error || `http_${response.status}`,
    message: data?.message || response.statusText || `HTTP ${response.status}`,
    errors: Array.isArray(data?.errors) ? data.errors : [],
    retryAfter: parseRetryAfter(response.headers.get('Retry-After')),
    correlationId: data?.correlation_id || null,
  });
  if (!quiet) {
    if (response.status === 401) emit('unauthorized', error);
    else if (response.status === 403 && error.code === 'password_change_required') emit('passwordChangeRequired', error);
  }
  throw error;
}

async function readBody(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try {
      return JSON.parse(text);
    } catch {
      return { error: 'bad_response', message: 'The gateway sent malformed JSON.' };
    }
  }
  return { error: `http_${response.status}`, message: text.slice(0, 300) };
}

function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

export const get = (path, opts) => request('GET', path, undefined, opts);
export const post = (path, body, opts) => request('POST', path, body ?? {}, opts);
export const put = (path, body, opts) => request('PUT', path, body, opts);
export const patch = (path, body, opts) => request('PATCH', path, body, opts);
export const del = (path, opts) => request('DELETE', path, undefined, opts);

/** `routes/${enc(id)}` — path segments from user data are always encoded. */
export const enc = encodeURIComponent;

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A human sentence for any error thrown by request(). */
export function describe(err) {
  if (!(err instanceof ApiError)) return String(err?.message || err);
  switch (err.code) {
    case 'read_only': return 'Your role is read-only: you can look, not change.';
    case 'csrf_rejected': return 'The request was refused as a possible cross-site request. Reload the page and try again.';
    case 'http_404': return 'This gateway does not offer that yet (404): it may be older than this console.';
    case 'rate_limit_exceeded':
      return err.retryAfter !== null ? `Too many attempts. Try again in ${fmtWait(err.retryAfter)}.` : 'Too many attempts. Try again later.';
    default: return err.message;
  }
}
