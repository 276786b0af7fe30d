// A tiny DOM helper and the formatters every page shares.
//
// Elements are built with h(), never from HTML strings, so that nothing the API
// returns (paths, user agents, log lines) is ever parsed as markup.

/**
 * h('button', {class: 'btn', onclick: fn}, 'Save') → <button class="btn">Save</button>
 * Attributes: `class`, `dataset`, `on<event>` (listeners), booleans (set when
 * true, left out when false), anything else via setAttribute. Children may be
 * strings, numbers, nodes, arrays or null/undefined/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'value' && 'value' in el) el.value = value;
    else if (name === 'checked' || name === 'selected') el[name] = Boolean(value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace every child of `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let idCounter = 0;
/** A document-unique id, for label/aria wiring. */
export function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

// ---- formatting -----------------------------------------------------------

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
// This year's dates leave the year out: tables stay narrow.
const dateTimeThisYear = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const shortDateTime = (d) => (d.getFullYear() === new Date().getFullYear() ? dateTimeThisYear : dateTime).format(d);
const timeOnly = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const number = new Intl.NumberFormat();

/** RFC 3339 string (or unix seconds) → local date and time; '—' when absent. */
export function fmtDateTime(value) {
  const d = toDate(value);
  return d ? dateTime.format(d) : '—';
}

export function fmtTime(value) {
  const d = toDate(value);
  return d ? timeOnly.format(d) : '—';
}

/** "in 5 min", "3 h ago"; '—' when absent. */
export function fmtRelative(value, now = Date.now()) {
  const d = toDate(value);
  if (!d) return '—';
  const diff = Math.round((d.getTime() - now) / 1000);
  const abs = Math.abs(diff);
  if (abs < 5) return 'just now';
  let text;
  if (abs < 45) text = `${abs} s`;
  else if (abs < 2700) text = `${Math.round(abs / 60)} min`;
  else if (abs < 129600) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} d`;
  return diff >= 0 ? `in ${text}` : `${text} ago`;
}

/** A <time> element showing the relative time, with the exact one on hover. */
export function timeEl(value, { relative = false } = {}) {
  const d = toDate(value);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: d.toISOString(), title: dateTime.format(d) },
    relative ? fmtRelative(d) : shortDateTime(d));
}

export function fmtNumber(n) {
  return n === null || n === undefined || Number.isNaN(n) ? '—' : number.format(n);
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** A wait in words: 42 s, 11 min 18 s, 2 h 5 min. */
export function fmtWait(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  const m = Math.round((s % 3600) / 60);
  return `${Math.floor(s / 3600)} h${m ? ` ${m} min` : ''}`;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return '—';
  if (s % 86400 === 0) return `${s / 86400} d`;
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  const d = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "a, b ,c" → ['a', 'b', 'c'] */
export function splitList(text) {
  return String(text || '').split(',').map((s) => s.trim()).filter(Boolean);
}

/** A CSS custom property of the document, e.g. cssVar('--c-ok'). */
export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
