// Upstream services: each service's settings and the state of every target
// (up, ejected after failed requests, on trial, or down by its checks).

import * as api from '../api.js';
import { fmtNumber, fmtSeconds, h, replace } from '../dom.js';
import { badge, code, empty, errorState, loading, pageHeader, poll, table } from '../ui.js';

const REFRESH_MS = 3000;

const STATES = {
  up: ['up', 'ok', 'Takes requests'],
  ejected: ['ejected', 'bad', 'Out after failed requests, until its ejection ends'],
  trial: ['on trial', 'warn', 'Ejection over: one request or health check decides'],
  down: ['down', 'bad', 'Failing its health checks'],
};

function stateBadge(target) {
  const [text, tone, title] = STATES[target.state] || [target.state, 'muted'];
  const left = target.ejected_for_seconds;
  return badge(left ? `${text} · ${fmtSeconds(Math.ceil(left))} left` : text, tone, title);
}

function servicePanel(s) {
  const up = s.targets.filter((t) => t.state === 'up').length;
  const health = s.health ? `checks ${s.health.path} every ${s.health.interval}` : 'no active checks';
  return h('section', { class: 'panel', 'aria-label': `Service ${s.name}` },
    h('div', { class: 'panel-head' },
      h('h2', {}, s.name),
      h('span', { class: 'badges' },
        badge(`${up} of ${s.targets.length} up`, up === s.targets.length ? 'ok' : up ? 'warn' : 'bad'),
        badge(s.balance.replace('_', ' ') + (s.hash_key ? ` on ${s.hash_key}` : ''), 'info'),
        s.panicking ? badge('panic: spreading over all', 'bad', 'Too few targets are healthy') : null,
        s.breaker_state !== 'closed' ? badge(`breaker ${s.breaker_state.replace('_', '-')}`, 'bad') : null)),
    h('p', { class: 'muted small' },
      `Routes: ${s.routes.length ? s.routes.join(', ') : 'none'} · ${health} · `
      + `${s.retries} ${s.retries === 1 ? 'retry' : 'retries'} · at most ${fmtNumber(s.max_in_flight)} in flight`),
    table({
      label: `Targets of ${s.name}`,
      rowClass: (t) => (t.state === 'up' ? null : 'row-bad'),
      rows: s.targets,
      columns: [
        { label: 'Target', class: 'wrap', cell: (t) => (t.address ? [code(t.url), h('span', { class: 'muted' }, ` at ${t.address}`)] : code(t.url)) },
        { label: 'Weight', class: 'num', cell: (t) => fmtNumber(t.weight) },
        { label: 'State', cell: stateBadge },
        { label: 'In flight', class: 'num', cell: (t) => fmtNumber(t.in_flight) },
        { label: 'Tries', class: 'num', cell: (t) => fmtNumber(t.requests) },
        { label: 'Failed', class: 'num', cell: (t) => fmtNumber(t.failures) },
        { label: 'Ejections', class: 'num', cell: (t) => fmtNumber(t.ejections) },
      ],
    }));
}

export default {
  title: 'Upstreams',
  render(container, ctx, signal) {
    const services = h('div', { class: 'policies' }, loading('Loading services…'));
    const refresh = h('span', { class: 'live-status muted small' }, `Refreshes every ${REFRESH_MS / 1000} s`);
    replace(container, pageHeader('Upstream services', refresh), services);
    let loadedOnce = false;
    async function load() {
      try {
        const listed = await api.get('upstreams', { signal });
        replace(services, listed.length
          ? listed.map(servicePanel)
          : empty('No [upstreams.<name>] services are configured; routes go to one URL each.'));
        loadedOnce = true;
      } catch (err) {
        if (err.name === 'AbortError') return;
        if (!loadedOnce) replace(services, errorState(err, load));
        else replace(refresh, badge('not updating', 'bad', api.describe(err)));
      }
    }
    return poll(load, REFRESH_MS);
  },
};
