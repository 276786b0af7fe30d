// Routes: the match table with each route's origin, policy, limits and
// state; create, edit and delete API routes; send a test request through the
// real proxy pipeline. Routes from the configuration file are read-only here.

import * as api from '../api.js';
import { h, replace, splitList, timeEl } from '../dom.js';
import {
  badge, button, code, confirm, empty, errorState, formDialog, kvList, loading, openDialog, pageHeader, section, table, toast,
} from '../ui.js';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE'];
const AUTH_OPTIONS = [
  { value: 'authenticated', label: 'authenticated' },
  { value: 'public', label: 'public' },
];

const list = (xs) => (Array.isArray(xs) ? xs : xs ? [xs] : []);

function originBadge(route) {
  return route.origin === 'file' ? badge('file', 'muted', 'Defined in the configuration file: read-only here') : badge('api', 'info', 'Created through the admin API');
}

function stateBadges(route) {
  const problems = list(route.problems);
  return h('span', { class: 'badges' },
    route.serving === false ? badge('not serving', 'bad') : badge('serving', 'ok'),
    route.shadowed ? badge('shadowed', 'warn', 'Another route with the same id takes precedence') : null,
    problems.length ? badge(`${problems.length} problem${problems.length > 1 ? 's' : ''}`, 'bad', problems.map((p) => `${p.key}: ${p.problem}`).join('\n')) : null);
}

function authText(route) {
  const parts = [route.auth || 'authenticated'];
  if (list(route.roles).length) parts.push(`roles: ${list(route.roles).join(' | ')}`);
  if (list(route.permissions).length) parts.push(`perms: ${list(route.permissions).join(' & ')}`);
  return h('span', { class: route.auth === 'public' ? 'auth-public' : null }, parts.join(' · '));
}

function limitsText(route) {
  const limits = list(route.rate_limit);
  return limits.length ? limits.join(', ') : h('span', { class: 'muted' }, 'none');
}

function methodsText(route) {
  return route.methods && route.methods.length ? route.methods.join(' ') : h('span', { class: 'muted' }, 'any');
}

/** A path that the route matches, to prefill the test form. */
function samplePath(pattern) {
  return String(pattern || '/').replace(/\{[^}]+\}/g, 'x').replace(/\/\*$/, '/');
}

// ---- forms ------------------------------------------------------------------

function routeFields(route, editing) {
  const r = route || {};
  const rateLimit = list(r.rate_limit);
  return [
    { name: 'id', label: 'Id', required: true, value: r.id, readonly: editing, hint: editing ? 'The id cannot change.' : 'Letters, digits, - _ . — the name in logs and metrics.' },
    { name: 'path', label: 'Path', required: true, value: r.path, placeholder: '/api/*', hint: 'Exact (/health), with parameters (/users/{id}) or a prefix ending in /*.' },
    { name: 'upstream', label: 'Upstream', required: true, value: r.upstream, placeholder: 'http://127.0.0.1:9000', hint: 'http(s)://host[:port][/base], or the name of an upstream service' },
    { name: 'methods', label: 'Methods (none ticked: every method)', type: 'checks', options: METHODS, value: r.methods || [] },
    { name: 'auth', label: 'Who may use it', type: 'select', options: withCurrent(AUTH_OPTIONS, r.auth), value: r.auth || 'authenticated', hint: 'authenticated: only with a valid session; public: anyone.' },
    { name: 'roles', label: 'Roles (any one of)', value: list(r.roles).join(', '), placeholder: 'admin, support', hint: 'Comma-separated; only with an authenticated route.' },
    { name: 'permissions', label: 'Permissions (every one of)', value: list(r.permissions).join(', '), placeholder: 'billing:read' },
    { name: 'rate_limit', label: 'Rate-limit policies', value: rateLimit.join(', '), placeholder: 'server default', hint: 'Comma-separated policy names; empty for the server default, “none” for no limit.' },
    { name: 'timeout', label: 'Upstream timeout', value: r.timeout || '', placeholder: 'server default', hint: 'A duration such as 5s or 1m 30s.' },
    { name: 'strip_prefix', label: 'Strip the matched prefix before forwarding', type: 'checkbox', value: r.strip_prefix },
    { name: 'preserve_host', label: 'Send the client’s Host upstream', type: 'checkbox', value: r.preserve_host },
    { name: 'csrf', label: 'Reject cross-site unsafe requests (CSRF)', type: 'checkbox', value: r.csrf ?? true },
    { name: 'login_redirect', label: 'Redirect page loads without a session to the login page', type: 'checkbox', value: r.login_redirect },
    { name: 'websocket', label: 'Tunnel WebSocket upgrades to the upstream', type: 'checkbox', value: r.websocket ?? true },
    { name: 'tunnel_idle_timeout', label: 'WebSocket idle timeout', value: r.tunnel_idle_timeout || '', placeholder: '1h', hint: 'A tunnel carrying nothing either way for this long is closed.' },
  ];
}

function withCurrent(options, current) {
  return !current || options.some((o) => o.value === current) ? options : [...options, { value: current, label: current }];
}

/** Form values → the route spec the API takes. Empty optional fields are left out. */
function routeSpec(v) {
  const spec = {
    id: v.id.trim(),
    path: v.path.trim(),
    upstream: v.upstream.trim(),
    auth: v.auth,
    strip_prefix: v.strip_prefix,
    preserve_host: v.preserve_host,
    csrf: v.csrf,
    login_redirect: v.login_redirect,
    websocket: v.websocket,
  };
  if (v.methods.length) spec.methods = v.methods;
  const roles = splitList(v.roles);
  const permissions = splitList(v.permissions);
  if (roles.length) spec.roles = roles;
  if (permissions.length) spec.permissions = permissions;
  const limits = splitList(v.rate_limit);
  if (limits.length === 1 && limits[0] === 'none') spec.rate_limit = 'none';
  else if (limits.length) spec.rate_limit = limits;
  if (v.timeout.trim()) spec.timeout = v.timeout.trim();
  if (v.tunnel_idle_timeout.trim()) spec.tunnel_idle_timeout = v.tunnel_idle_timeout.trim();
  return spec;
}

/** The route's settings the form does not show (its header rules), kept as they are on save. */
function unshown(route) {
  const kept = {};
  for (const key of ['request_headers', 'response_headers']) {
    const rules = route[key];
    if (rules && (rules.remove?.length || Object.keys(rules.set || {}).length || Object.keys(rules.add || {}).length)) kept[key] = rules;
  }
  return kept;
}

async function editRoute(route, reload) {
  const editing = Boolean(route);
  const saved = await formDialog({
    title: editing ? `Edit route ${route.id}` : 'New route',
    submitLabel: editing ? 'Save changes' : 'Create route',
    wide: true,
    intro: 'Checked by the same rules as the configuration file; it takes effect for new requests as soon as it is saved.',
    fields: routeFields(route, editing),
    submit: (values) => (editing
      ? api.put(`routes/${api.enc(route.id)}`, { ...unshown(route), ...routeSpec(values) })
      : api.post('routes', routeSpec(values))),
  });
  if (saved) {
    toast(editing ? `Route ${saved.id} saved.` : `Route ${saved.id} created.`);
    reload();
  }
}

async function deleteRoute(route, after) {
  const ok = await confirm({
    title: `Delete route ${route.id}?`,
    message: `Requests to ${route.path} will no longer reach ${route.upstream} (another route may match them instead). This cannot be undone.`,
    confirmLabel: 'Delete route',
  });
  if (!ok) return;
  try {
    await api.del(`routes/${api.enc(route.id)}`);
    toast(`Route ${route.id} deleted.`);
    after();
  } catch (err) {
    toast(`Could not delete ${route.id}: ${api.describe(err)}`, 'bad');
  }
}

/** Headers as {name: value} or as [{name, value}] (which keeps repeated names). */
function headersTable(headers, label) {
  const pairs = Array.isArray(headers) ? headers.map((x) => [x.name, x.value]) : Object.entries(headers || {});
  const rows = pairs.sort(([a], [b]) => a.localeCompare(b));
  if (!rows.length) return h('p', { class: 'muted' }, 'None.');
  return table({
    label,
    rows,
    cards: false,
    columns: [
      { label: 'Header', cell: ([k]) => code(k) },
      { label: 'Value', class: 'wrap', cell: ([, v]) => (Array.isArray(v) ? v.join(', ') : String(v)) },
    ],
  });
}

function testRoute(route) {
  const method = h('select', { id: 'test-method', name: 'method' }, (route.methods?.length ? route.methods : METHODS).map((m) => h('option', { value: m }, m)));
  const path = h('input', { id: 'test-path', name: 'path', value: samplePath(route.path), spellcheck: 'false', autocomplete: 'off' });
  const send = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Send');
  const result = h('div', { class: 'test-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'form test-form' },
    h('div', { class: 'inline-fields' },
      h('div', { class: 'field' }, h('label', { for: 'test-method' }, 'Method'), method),
      h('div', { class: 'field grow' }, h('label', { for: 'test-path' }, 'Path'), path),
      send),
    result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    send.disabled = true;
    replace(result, h('p', { class: 'muted' }, 'Sending…'));
    try {
      const r = await api.post(`routes/${api.enc(route.id)}/test`, { method: method.value, path: path.value });
      const tone = r.status >= 500 ? 'bad' : r.status >= 400 ? 'warn' : 'ok';
      replace(result,
        h('p', { class: 'test-summary' }, badge(`HTTP ${r.status}`, tone), ` in ${Number(r.latency_ms).toFixed(1)} ms`,
          r.method && r.path ? h('span', { class: 'muted' }, ` — ${r.method} ${r.path}`) : null),
        // null: the request never reached the upstream; absent: the
        // gateway does not report them (older versions).
        r.upstream_request_headers !== undefined ? [
          h('h3', {}, 'Headers the upstream received'),
          r.upstream_request_headers ? headersTable(r.upstream_request_headers, 'Headers the upstream received') : h('p', { class: 'muted' }, 'The request did not reach the upstream.'),
        ] : null,
        h('h3', {}, 'Response headers'),
        headersTable(r.response_headers, 'Response headers'),
        h('h3', {}, 'Response body (start)'),
        r.body ? h('pre', { class: 'pre' }, r.body, r.body_truncated ? h('span', { class: 'muted' }, '\n… (cut)') : null) : h('p', { class: 'muted' }, 'Empty.'));
    } catch (err) {
      replace(result, h('p', { class: 'form-alert', role: 'alert' }, api.describe(err)));
    } finally {
      send.disabled = false;
    }
  });
  openDialog({
    title: `Send a test request to ${route.id}`,
    wide: true,
    content: [h('p', { class: 'muted' }, 'The request goes through the real proxy pipeline: routing, authentication, rate limits, then the upstream.'), form],
  });
  path.focus();
}

function actions(route, ctx, reload, afterDelete = reload) {
  if (!ctx.canWrite) return null;
  const readOnly = route.origin === 'file';
  return h('span', { class: 'row-actions' },
    button('Test', () => testRoute(route), { small: true, 'aria-label': `Send a test request to ${route.id}` }),
    readOnly ? null : button('Edit', () => editRoute(route, reload), { small: true, 'aria-label': `Edit route ${route.id}` }),
    readOnly ? null : button('Delete', () => deleteRoute(route, afterDelete), { small: true, kind: 'danger', 'aria-label': `Delete route ${route.id}` }));
}

// ---- views ------------------------------------------------------------------

function renderList(container, ctx, signal) {
  const body = h('div', {}, loading('Loading routes…'));
  const newBtn = ctx.canWrite ? button('New route', () => editRoute(null, load), { kind: 'primary' }) : null;
  replace(container, pageHeader('Routes', newBtn), body);

  async function load() {
    try {
      const routes = await api.get('routes', { signal });
      if (!routes.length) {
        replace(body, empty('No routes yet: nothing is proxied.', newBtn ? button('Create the first route', () => editRoute(null, load), { kind: 'primary' }) : null));
        return;
      }
      replace(body,
        h('p', { class: 'muted' }, `${routes.length} route${routes.length > 1 ? 's' : ''}, in the order they are matched. Routes from the configuration file are read-only here.`),
        table({
          label: 'Routes',
          rowClass: (r) => (list(r.problems).length || r.serving === false ? 'row-bad' : r.shadowed ? 'row-warn' : null),
          rows: routes,
          columns: [
            { label: 'Id', cell: (r) => h('a', { href: `#/routes/${encodeURIComponent(r.id)}` }, r.id) },
            { label: 'Origin', cell: originBadge },
            // Paths and URLs never break mid-token; the table scrolls instead.
            { label: 'Path', cell: (r) => [code(r.path), h('div', { class: 'small' }, methodsText(r))] },
            { label: 'Upstream', cell: (r) => code(r.upstream) },
            { label: 'Auth', cell: authText },
            { label: 'Limits', cell: limitsText },
            { label: 'State', cell: stateBadges },
            ...(ctx.canWrite ? [{ label: 'Actions', class: 'actions', cell: (r) => actions(r, ctx, load) }] : []),
          ],
        }));
    } catch (err) {
      if (err.name !== 'AbortError') replace(body, errorState(err, load));
    }
  }
  load();
}

function renderDetail(container, ctx, id, signal) {
  const body = h('div', {}, loading('Loading the route…'));
  replace(container, pageHeader(`Route ${id}`, h('a', { class: 'btn btn-ghost', href: '#/routes' }, '← All routes')), body);

  async function load() {
    try {
      const r = await api.get(`routes/${api.enc(id)}`, { signal });
      const problems = list(r.problems);
      replace(body,
        ctx.canWrite ? h('div', { class: 'toolbar' }, actions(r, ctx, load, () => ctx.navigate('#/routes'))) : null,
        r.origin === 'file' ? h('p', { class: 'notice' }, 'This route comes from the configuration file: change it there and reload the gateway.') : null,
        problems.length ? h('div', { class: 'banner banner-bad', role: 'alert' }, h('strong', {}, 'Problems: '), h('ul', {}, problems.map((p) => h('li', {}, code(p.key), ' ', p.problem)))) : null,
        section('Definition', kvList([
          ['Origin', originBadge(r)],
          ['State', stateBadges(r)],
          ['Path', code(r.path)],
          ['Methods', methodsText(r)],
          ['Upstream', code(r.upstream)],
          ['Strip prefix', r.strip_prefix ? 'yes' : 'no'],
          ['Preserve Host', r.preserve_host ? 'yes' : 'no'],
          ['Timeout', r.timeout || 'server default'],
          ['Auth', authText(r)],
          ['CSRF check', r.csrf === false ? 'off' : 'on'],
          ['Login redirect', r.login_redirect ? 'yes' : 'no'],
          ['WebSockets', r.websocket === false ? 'not tunnelled' : `tunnelled, closed after ${r.tunnel_idle_timeout || '1h'} idle`],
          ['Rate limits', limitsText(r)],
          r.created_at ? ['Created', timeEl(r.created_at)] : null,
          r.updated_at ? ['Updated', [timeEl(r.updated_at), r.updated_by ? ` by ${r.updated_by}` : '']] : null,
        ])));
    } catch (err) {
      if (err.name === 'AbortError') return;
      if (err.status === 404) replace(body, empty(`There is no route ${id} (any more).`, h('a', { href: '#/routes' }, 'All routes')));
      else replace(body, errorState(err, load));
    }
  }
  load();
}

export default {
  title: 'Routes',
  render(container, ctx, signal) {
    const [id] = ctx.params;
    if (id) renderDetail(container, ctx, id, signal);
    else renderList(container, ctx, signal);
  },
};
