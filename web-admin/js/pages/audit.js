// Audit: every admin change — who, from where, what, before → after, outcome —
// newest first, with filters and paging back in time.

import * as api from '../api.js';
import { h, replace, timeEl } from '../dom.js';
import { badge, button, code, empty, errorState, field, kvList, loading, openDialog, pageHeader, readForm, table } from '../ui.js';

const PAGE_SIZE = 50;
const FILTERS = [
  { name: 'actor', label: 'Who', placeholder: 'username' },
  { name: 'action', label: 'Action', placeholder: 'route.create' },
  { name: 'target', label: 'Target', placeholder: 'route id, user…' },
];

function json(value) {
  if (value === null || value === undefined) return h('p', { class: 'muted' }, 'nothing');
  return h('pre', { class: 'pre' }, JSON.stringify(value, null, 2));
}

function showEntry(e) {
  openDialog({
    title: `${e.action} ${e.target ?? ''}`.trim(),
    wide: true,
    content: [
      kvList([
        ['When', timeEl(e.at)],
        ['Who', e.actor],
        ['Via', e.via],
        ['From', e.address ? code(e.address) : '—'],
        ['Outcome', outcome(e)],
        e.error ? ['Error', e.error] : null,
        ['Entry', code(String(e.id))],
      ]),
      h('div', { class: 'diff' },
        h('div', {}, h('h3', {}, 'Before'), json(e.before)),
        h('div', {}, h('h3', {}, 'After'), json(e.after))),
    ],
  });
}

function outcome(e) {
  return e.outcome === 'success' ? badge('success', 'ok') : badge(e.outcome || 'failure', 'bad', e.error || null);
}

export default {
  title: 'Audit',
  render(container, ctx, signal) {
    const form = h('form', { class: 'filters', 'aria-label': 'Filters' },
      FILTERS.map(field),
      h('div', { class: 'filter-actions' },
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Apply'),
        h('button', { type: 'reset', class: 'btn btn-ghost' }, 'Clear filters')));
    const body = h('div', {}, loading('Loading the audit trail…'));
    const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
    replace(container,
      pageHeader('Audit'),
      h('p', { class: 'muted' }, 'Every change made through the admin API or this console, newest first.'),
      h('details', { class: 'panel filter-panel', open: window.matchMedia('(min-width: 700px)').matches }, h('summary', {}, 'Filters'), form),
      body,
      pager);

    let filters = {};
    const history = []; // the `before` cursor of each earlier page, for "Newer"

    async function load(before) {
      replace(body, loading('Loading the audit trail…'));
      try {
        const entries = await api.get(`audit${api.query({ ...filters, limit: PAGE_SIZE, before })}`, { signal });
        if (!entries.length) {
          replace(body, empty(before ? 'No older entries.' : 'No admin changes recorded yet.'));
        } else {
          replace(body, table({
            label: 'Audit trail',
            rowClass: (e) => (e.outcome !== 'success' ? 'row-bad' : null),
            rows: entries,
            columns: [
              { label: 'When', cell: (e) => h('button', { type: 'button', class: 'link-button', onclick: () => showEntry(e), 'aria-label': `Details of ${e.action} ${e.target ?? ''}` }, timeEl(e.at)) },
              { label: 'Who', cell: (e) => e.actor },
              { label: 'Via', cell: (e) => e.via ?? '—' },
              { label: 'From', cell: (e) => (e.address ? code(e.address) : '—') },
              { label: 'Action', cell: (e) => code(e.action) },
              { label: 'Target', class: 'wrap', cell: (e) => e.target ?? '—' },
              { label: 'Outcome', cell: outcome },
            ],
          }));
        }
        const older = entries.length === PAGE_SIZE ? entries[entries.length - 1].id : null;
        replace(pager,
          history.length ? button('← Newer', () => load(history.pop() || undefined)) : null,
          older !== null ? button('Older →', () => { history.push(before ?? ''); load(older); }) : null);
      } catch (err) {
        if (err.name !== 'AbortError') replace(body, errorState(err, () => load(before)));
      }
    }

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      filters = Object.fromEntries(Object.entries(readForm(form, FILTERS)).map(([k, v]) => [k, v.trim()]).filter(([, v]) => v));
      history.length = 0;
      load();
    });
    form.addEventListener('reset', () => setTimeout(() => { filters = {}; history.length = 0; load(); }));
    load();
  },
};
