// Live log: the most recent access-log records, then new ones as they happen
// (Server-Sent Events), with filters, pause/resume and each record in full.

import * as api from '../api.js';
import { fmtMs, fmtTime, h, replace, timeEl } from '../dom.js';
import { badge, button, code, copyBox, field, kvList, openDialog, pageHeader, readForm } from '../ui.js';

const MAX_ROWS = 500;
const FILTERS = [
  { name: 'status', label: 'Status', type: 'select', options: [{ value: '', label: 'any' }, '2xx', '3xx', '4xx', '5xx'] },
  { name: 'route', label: 'Route', placeholder: 'route id' },
  { name: 'user', label: 'User', placeholder: 'username' },
  { name: 'client', label: 'Client address', placeholder: '203.0.113.7' },
  { name: 'request_id', label: 'Request id' },
];

const userOf = (r) => r.user ?? r.user_id ?? null;
const latencyOf = (r) => r.latency_ms ?? r.duration_ms ?? null;
const statusTone = (s) => (s >= 500 ? 'bad' : s >= 400 ? 'warn' : s >= 300 ? 'info' : 'ok');

function showRecord(r) {
  const json = JSON.stringify(r, null, 2);
  openDialog({
    title: `${r.method} ${r.path} → ${r.status}`,
    wide: true,
    content: [
      kvList(Object.entries(r).map(([k, v]) => [k, v === null || v === undefined
        ? h('span', { class: 'muted' }, 'null')
        : typeof v === 'object' ? code(JSON.stringify(v)) : k === 'timestamp' ? timeEl(v) : String(v)])),
      copyBox(json, 'The record as JSON'),
    ],
  });
}

function recordRow(r) {
  const latency = latencyOf(r);
  const user = userOf(r);
  const cell = (label, attrs, ...content) => h('td', { ...attrs, dataset: { label } }, ...content);
  return h('tr', { class: r.status >= 500 ? 'row-bad' : null },
    h('th', { scope: 'row', dataset: { label: 'Time' } }, h('button', {
      type: 'button', class: 'link-button', onclick: () => showRecord(r), 'aria-label': `Details of ${r.method} ${r.path} at ${fmtTime(r.timestamp)}`,
    }, fmtTime(r.timestamp))),
    cell('Status', {}, badge(String(r.status), statusTone(r.status))),
    cell('Request', { class: 'wrap path' }, h('span', { class: 'method' }, r.method), ' ', r.path, r.query ? h('span', { class: 'muted' }, `?${r.query}`) : null),
    cell('Route', {}, r.route ?? '—'),
    cell('User', {}, user ?? h('span', { class: 'muted' }, '—')),
    cell('Client', {}, r.client_ip ?? '—'),
    cell('Latency', { class: 'num' }, latency === null ? '—' : fmtMs(latency)),
    cell('Request id', {}, h('code', { title: r.request_id }, String(r.request_id || '').slice(0, 8))));
}

export default {
  title: 'Live log',
  render(container) {
    const status = h('span', { class: 'live-status', role: 'status' }, badge('connecting', 'muted'));
    const pauseBtn = button('Pause', () => (paused ? resume() : pause()), { 'aria-pressed': 'false' });
    const clearBtn = button('Clear', () => { rows.replaceChildren(); seen.clear(); showEmpty(); }, { kind: 'ghost' });
    const filterForm = h('form', { class: 'filters', 'aria-label': 'Filters' },
      FILTERS.map(field),
      h('div', { class: 'filter-actions' },
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Apply'),
        h('button', { type: 'reset', class: 'btn btn-ghost' }, 'Clear filters')));
    const rows = h('tbody', {});
    const missedNote = h('p', { class: 'notice small', role: 'status', hidden: true });
    const emptyRow = h('p', { class: 'state state-empty' }, 'Waiting for requests… Records appear here as the proxy answers them.');
    const tableEl = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Access log' },
      h('table', { class: 'table log-table' },
        h('thead', {}, h('tr', {}, ['Time', 'Status', 'Request', 'Route', 'User', 'Client', 'Latency', 'Request id'].map((t) => h('th', { scope: 'col' }, t)))),
        rows));
    replace(container,
      pageHeader('Live log', status, pauseBtn, clearBtn),
      h('details', { class: 'panel filter-panel', open: window.matchMedia('(min-width: 700px)').matches },
        h('summary', {}, 'Filters'), filterForm),
      missedNote,
      emptyRow,
      tableEl);

    let source = null;
    let closed = false;
    let retries = 0;
    let missed = 0;
    let paused = false;
    let pending = [];
    const seen = new Set();
    let filters = {};

    function showEmpty() {
      emptyRow.hidden = rows.children.length > 0;
      tableEl.hidden = rows.children.length === 0;
    }

    function add(records, { atTop = true } = {}) {
      const frag = document.createDocumentFragment();
      for (const r of records) {
        const key = r.request_id ? `${r.request_id}|${r.timestamp}` : null;
        if (key && seen.has(key)) continue;
        if (key) seen.add(key);
        frag.append(recordRow(r));
      }
      if (atTop) rows.prepend(frag); else rows.append(frag);
      while (rows.children.length > MAX_ROWS) rows.lastElementChild.remove();
      showEmpty();
    }

    function setStatus(text, tone, title) {
      replace(status, badge(text, tone, title));
    }

    function pause() {
      paused = true;
      pauseBtn.setAttribute('aria-pressed', 'true');
      pauseBtn.textContent = 'Resume';
      setStatus('paused', 'warn');
    }

    function resume() {
      paused = false;
      pauseBtn.setAttribute('aria-pressed', 'false');
      pauseBtn.textContent = 'Pause';
      // pending holds oldest first; each add() puts its batch on top.
      add(pending.reverse());
      pending = [];
      setStatus(source && source.readyState === EventSource.OPEN ? 'live' : 'connecting', source && source.readyState === EventSource.OPEN ? 'ok' : 'muted');
    }

    function onRecord(event) {
      let record;
      try { record = JSON.parse(event.data); } catch { return; }
      if (paused) {
        pending.push(record);
        if (pending.length > MAX_ROWS) pending.shift();
        pauseBtn.textContent = `Resume (${pending.length} new)`;
      } else {
        add([record]);
      }
    }

    function connect() {
      if (source) source.close();
      if (closed) return;
      const es = new EventSource(`api/logs/stream${api.query({ ...filters })}`);
      source = es;
      es.addEventListener('open', () => {
        retries = 0;
        if (!paused) setStatus('live', 'ok', 'New records appear as they happen');
      });
      es.addEventListener('message', onRecord);
      // The gateway says how many records a slow reader missed.
      es.addEventListener('lagged', (event) => {
        missed += Number(event.data) || 0;
        replace(missedNote, `${missed} record${missed === 1 ? '' : 's'} skipped: the log moved faster than this page could show it.`);
        missedNote.hidden = false;
      });
      es.addEventListener('error', () => {
        if (es !== source) return;
        if (es.readyState === EventSource.CLOSED) {
          setStatus('disconnected', 'bad');
          // Closed for good: find out whether the session ended (that call
          // sends the console back to the login page on 401).
          // A few tries, further apart each time, then it is left to the user.
          api.get('auth/me').then(() => {
            retries += 1;
            if (es === source && retries <= 5) setTimeout(connect, 1000 * 2 ** retries);
          }, () => {});
        } else if (!paused) {
          setStatus('reconnecting', 'warn');
        }
      });
    }

    async function start() {
      // Stop the old stream first: records for the old filters must not
      // slip in while the new ones load.
      if (source) { source.close(); source = null; }
      setStatus('connecting', 'muted');
      rows.replaceChildren();
      seen.clear();
      pending = [];
      showEmpty();
      emptyRow.textContent = 'Loading recent records…';
      try {
        const recent = await api.get(`logs${api.query({ ...filters, limit: 100 })}`);
        // newest first: append keeps that order
        add(recent, { atTop: false });
      } catch (err) {
        if (err.name === 'AbortError') return;
        setStatus('error', 'bad', api.describe(err));
        if (err.status > 0) {
          // A filter the gateway refuses (400), or no log endpoint at all
          // (404): the stream would fail the same way.
          emptyRow.textContent = err.status === 404 ? api.describe(err) : `The filters were refused: ${api.describe(err)}`;
          showEmpty();
          return;
        }
      }
      emptyRow.textContent = 'Waiting for requests… Records appear here as the proxy answers them.';
      showEmpty();
      connect();
    }

    filterForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const v = readForm(filterForm, FILTERS);
      filters = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, x.trim()]).filter(([, x]) => x));
      start();
    });
    filterForm.addEventListener('reset', () => {
      setTimeout(() => { filters = {}; start(); });
    });

    start();
    return () => { closed = true; if (source) source.close(); source = null; };
  },
};
