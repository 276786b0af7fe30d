// Overview: live charts of the gateway's per-second stats, totals for the
// window, and the routes whose upstream is failing.

import uPlot from '../../vendor/uplot/uPlot.esm.js';
import * as api from '../api.js';
import { cssVar, fmtMs, fmtNumber, h, replace } from '../dom.js';
import { badge, errorState, loading, pageHeader, poll, table } from '../ui.js';

const POLL_MS = 2000;
const RECENT_SECONDS = 60; // "failing now" looks at the last minute

const CHARTS = [
  {
    id: 'requests', title: 'Requests per second by status class', unit: 'req/s', rate: true, baseline: true,
    series: [['s2xx', '2xx', '--c-2xx'], ['s3xx', '3xx', '--c-3xx'], ['s4xx', '4xx', '--c-4xx'], ['s5xx', '5xx', '--c-5xx']],
  },
  {
    id: 'latency', title: 'Latency', unit: 'ms',
    series: [['p50_ms', 'p50', '--c-p50'], ['p95_ms', 'p95', '--c-p95'], ['p99_ms', 'p99', '--c-p99']],
  },
  {
    id: 'problems', title: 'Refusals and failures per second', unit: '/s', rate: true,
    series: [['rate_limited', '429 rate limited', '--c-429'], ['auth_failures', 'auth failures', '--c-auth'], ['upstream_errors', 'upstream errors', '--c-5xx']],
  },
];

const sum = (arr, from = 0) => (arr || []).slice(from).reduce((a, b) => a + (b || 0), 0);
const lastValue = (arr, within) => {
  for (let i = (arr || []).length - 1, n = 0; i >= 0 && n < within; i -= 1, n += 1) {
    if (arr[i] !== null && arr[i] !== undefined) return arr[i];
  }
  return null;
};

function chartOptions(spec, width) {
  const text = cssVar('--text-muted');
  const grid = cssVar('--border');
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: '12px system-ui, sans-serif' };
  return {
    width,
    height: 200,
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Number.isFinite(max) ? Math.max(1, max * 1.1) : 1] } },
    axes: [axis, { ...axis, size: 56, values: (u, vals) => vals.map((v) => (spec.unit === 'ms' ? `${v} ms` : fmtNumber(v))) }],
    series: [
      { label: 'time' },
      ...spec.series.map(([, label, color]) => ({
        label,
        stroke: cssVar(color),
        width: 2,
        // Latency exists only in seconds with traffic: a dot per second
        // shows a lone request that a line could not.
        points: spec.unit === 'ms' ? { show: true, size: 4, fill: cssVar(color) } : { show: false },
        spanGaps: false,
        value: (u, v) => (v === null || v === undefined ? '—' : spec.unit === 'ms' ? fmtMs(v) : `${fmtNumber(Math.round(v * 100) / 100)}${spec.unit === 'req/s' ? ' req/s' : '/s'}`),
      })),
    ],
  };
}

/** Zeros become gaps, except next to a non-zero value (so a spike rises from 0). */
function onlyNearNonZero(values) {
  return values.map((v, i) => (v || values[i - 1] || values[i + 1] ? v : null));
}

function chartData(spec, stats) {
  const n = stats.seconds;
  const step = stats.interval_seconds || 1;
  const xs = Array.from({ length: n }, (_, i) => stats.start + i * step);
  const ys = spec.series.map(([key], i) => {
    const values = stats.overall[key] || [];
    const rates = spec.rate ? values.map((v) => (v === null || v === undefined ? null : v / step)) : values;
    // Only 2xx draws the zero baseline; the others show where they
    // happen, so a flat line of zero 5xx does not paint the chart red.
    return spec.rate && !(spec.baseline && i === 0) ? onlyNearNonZero(rates) : rates;
  });
  return [xs, ...ys];
}

function routeRows(stats) {
  const n = stats.seconds;
  const recent = Math.max(0, n - Math.ceil(RECENT_SECONDS / (stats.interval_seconds || 1)));
  return Object.entries(stats.routes || {}).map(([id, s]) => ({
    id,
    requests: sum(s.requests),
    s4xx: sum(s.s4xx),
    s5xx: sum(s.s5xx),
    upstreamErrors: sum(s.upstream_errors),
    recentUpstreamErrors: sum(s.upstream_errors, recent),
    recentRequests: sum(s.requests, recent),
    p99: lastValue(s.p99_ms, 10),
  })).sort((a, b) => (b.recentUpstreamErrors > 0) - (a.recentUpstreamErrors > 0) || b.requests - a.requests || a.id.localeCompare(b.id));
}

function card(label, value, tone, detail) {
  return h('div', { class: ['stat', tone && `stat-${tone}`] },
    h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value' }, value),
    detail ? h('div', { class: 'stat-detail' }, detail) : null);
}

export default {
  title: 'Overview',
  render(container) {
    // Five minutes by default: a burst still shows as more than a sliver.
    let seconds = 300;
    const range = h('select', { 'aria-label': 'Time window' },
      h('option', { value: '60' }, 'Last minute'),
      h('option', { value: '300', selected: true }, 'Last 5 minutes'),
      h('option', { value: '900' }, 'Last 15 minutes'));
    const status = h('span', { class: 'live-status', role: 'status' }, badge('connecting', 'muted'));
    const alertSlot = h('div', { class: 'overview-alert' });
    const cards = h('div', { class: 'stats' }, loading());
    const chartHosts = {};
    const figures = CHARTS.map((spec) => {
      chartHosts[spec.id] = h('div', { class: 'chart', dataset: { chart: spec.id }, role: 'img', 'aria-label': `${spec.title}, the last minutes, updated every few seconds` });
      return h('figure', { class: 'panel chart-panel' }, h('figcaption', {}, spec.title), chartHosts[spec.id]);
    });
    const routesSlot = h('div', {}, loading());
    const chartsBox = h('div', { class: 'charts' }, figures);
    replace(container,
      pageHeader('Overview', status, range),
      alertSlot,
      cards,
      chartsBox,
      h('section', { class: 'panel', 'aria-labelledby': 'ov-routes' }, h('h2', { id: 'ov-routes' }, 'Routes'), routesSlot));

    const plots = {};
    let lastStats = null;
    const widthOf = (el) => Math.max(240, Math.floor(el.clientWidth));
    const draw = (stats) => {
      for (const spec of CHARTS) {
        const data = chartData(spec, stats);
        if (plots[spec.id]) plots[spec.id].setData(data);
        else plots[spec.id] = new uPlot(chartOptions(spec, widthOf(chartHosts[spec.id])), data, chartHosts[spec.id]);
      }
    };
    const rebuild = () => {
      for (const id of Object.keys(plots)) { plots[id].destroy(); delete plots[id]; }
      if (lastStats) draw(lastStats);
    };
    const resize = new ResizeObserver(() => {
      for (const spec of CHARTS) plots[spec.id]?.setSize({ width: widthOf(chartHosts[spec.id]), height: 200 });
    });
    for (const el of Object.values(chartHosts)) resize.observe(el);
    const scheme = matchMedia('(prefers-color-scheme: dark)');
    scheme.addEventListener('change', rebuild);

    const renderCards = (stats) => {
      const o = stats.overall;
      const requests = sum(o.requests);
      const errors = sum(o.s5xx);
      const step = stats.interval_seconds || 1;
      const nowRate = sum(o.requests, Math.max(0, stats.seconds - 5)) / (5 * step);
      replace(cards,
        card('Requests', fmtNumber(requests), null, `${fmtNumber(Math.round(nowRate * 10) / 10)} req/s now`),
        card('Success (2xx/3xx)', requests ? `${((100 * (sum(o.s2xx) + sum(o.s3xx))) / requests).toFixed(1)} %` : '—'),
        card('Client errors (4xx)', fmtNumber(sum(o.s4xx)), sum(o.s4xx) ? 'warn' : null),
        card('Server errors (5xx)', fmtNumber(errors), errors ? 'bad' : null),
        card('Rate limited (429)', fmtNumber(sum(o.rate_limited)), sum(o.rate_limited) ? 'warn' : null),
        card('Auth failures', fmtNumber(sum(o.auth_failures)), sum(o.auth_failures) ? 'warn' : null),
        card('Upstream errors', fmtNumber(sum(o.upstream_errors)), sum(o.upstream_errors) ? 'bad' : null),
        card('p99 latency', fmtMs(lastValue(o.p99_ms, 10)), null, `p50 ${fmtMs(lastValue(o.p50_ms, 10))}`));
    };

    const renderRoutes = (stats) => {
      const rows = routeRows(stats);
      const failing = rows.filter((r) => r.recentUpstreamErrors > 0);
      replace(alertSlot, failing.length
        ? h('div', { class: 'banner banner-bad', role: 'alert' },
          h('strong', {}, failing.length === 1 ? 'An upstream is failing: ' : `${failing.length} upstreams are failing: `),
          failing.map((r, i) => [i ? ', ' : '', h('a', { href: `#/routes/${encodeURIComponent(r.id)}` }, r.id)]),
          ` — upstream errors in the last ${RECENT_SECONDS} s.`)
        : null);
      if (!rows.length) {
        replace(routesSlot, h('p', { class: 'state state-empty' }, 'No route has served a request in this window.'));
        return;
      }
      replace(routesSlot, table({
        label: 'Traffic per route',
        rowClass: (r) => (r.recentUpstreamErrors > 0 ? 'row-bad' : null),
        rows,
        columns: [
          { label: 'Route', cell: (r) => h('a', { href: `#/routes/${encodeURIComponent(r.id)}` }, r.id) },
          { label: 'State', cell: (r) => (r.recentUpstreamErrors > 0 ? badge('upstream failing', 'bad') : r.recentRequests ? badge('ok', 'ok') : badge('idle', 'muted')) },
          { label: 'Requests', class: 'num', cell: (r) => fmtNumber(r.requests) },
          { label: '4xx', class: 'num', cell: (r) => fmtNumber(r.s4xx) },
          { label: '5xx', class: 'num', cell: (r) => fmtNumber(r.s5xx) },
          { label: 'Upstream errors', class: 'num', cell: (r) => fmtNumber(r.upstreamErrors) },
          { label: 'p99 now', class: 'num', cell: (r) => fmtMs(r.p99) },
        ],
      }));
    };

    let failures = 0;
    let stop = () => {};
    stop = poll(async () => {
      try {
        const stats = await api.get(`stats${api.query({ seconds })}`);
        lastStats = stats;
        failures = 0;
        replace(status, badge('live', 'ok', `Updated every ${POLL_MS / 1000} s`));
        renderCards(stats);
        draw(stats);
        renderRoutes(stats);
      } catch (err) {
        failures += 1;
        replace(status, badge('not updating', 'bad'));
        if (err.status === 404) {
          // No stats endpoint on this gateway: asking again will not help.
          stop();
          chartsBox.hidden = true;
          replace(cards, errorState(err));
          replace(routesSlot, h('p', { class: 'state state-empty' }, 'No traffic figures without the stats endpoint.'));
          return;
        }
        if (!lastStats) replace(cards, errorState(err));
        else if (failures === 1) replace(alertSlot, h('div', { class: 'banner banner-bad', role: 'alert' }, `The stats could not be refreshed: ${api.describe(err)}`));
      }
    }, POLL_MS);

    range.addEventListener('change', () => {
      seconds = Number(range.value);
      for (const id of Object.keys(plots)) { plots[id].destroy(); delete plots[id]; }
    });

    return () => {
      stop();
      resize.disconnect();
      scheme.removeEventListener('change', rebuild);
      for (const p of Object.values(plots)) p.destroy();
    };
  },
};
