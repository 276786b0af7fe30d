// Users and their sessions: create users, set roles and permissions, reset a
// password, disable/enable, delete; list a user's sessions with their device
// details, issue one (its token shown once) and revoke one or all.

import * as api from '../api.js';
import { fmtNumber, h, replace, splitList, timeEl } from '../dom.js';
import {
  badge, button, code, confirm, copyBox, empty, errorState, formDialog, kvList, loading, openDialog, pageHeader, section, table, toast,
} from '../ui.js';

const nameOf = (u) => u.name ?? u.username;
const list = (xs) => (Array.isArray(xs) ? xs : []);
const ROLE_HINT = 'Comma-separated. “admin” may use and change everything in this console, “viewer” may look only; other roles are for your routes.';

function userBadges(u) {
  return h('span', { class: 'badges' },
    u.disabled ? badge('disabled', 'bad') : badge('active', 'ok'),
    u.must_change_password ? badge('must change password', 'warn') : null);
}

function tags(xs) {
  return list(xs).length ? h('span', { class: 'tags' }, list(xs).map((x) => h('span', { class: 'tag' }, x))) : h('span', { class: 'muted' }, '—');
}

// ---- user actions -----------------------------------------------------------

async function createUser(after) {
  const created = await formDialog({
    title: 'New user',
    submitLabel: 'Create user',
    fields: [
      { name: 'username', label: 'Username', required: true, hint: '1–64 characters: letters, digits, . _ - @' },
      { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'new-password', hint: 'At least 12 characters by default.' },
      { name: 'roles', label: 'Roles', placeholder: 'viewer', hint: ROLE_HINT },
      { name: 'permissions', label: 'Permissions', placeholder: 'billing:read', hint: 'Comma-separated.' },
    ],
    submit: (v) => api.post('users', {
      username: v.username.trim(), password: v.password, roles: splitList(v.roles), permissions: splitList(v.permissions),
    }),
  });
  if (created) {
    toast(`User ${nameOf(created)} created.`);
    after(created);
  }
}

async function patchUser(u, body, what) {
  const answer = await api.patch(`users/${api.enc(nameOf(u))}`, body);
  const n = answer?.sessions_revoked || 0;
  toast(`${what}${n ? ` ${n} session${n > 1 ? 's' : ''} revoked.` : ''}`);
  return answer;
}

async function editAccess(u, after) {
  const done = await formDialog({
    title: `Roles and permissions of ${nameOf(u)}`,
    intro: 'Saving revokes the user’s sessions, so the new roles apply from their next login.',
    fields: [
      { name: 'roles', label: 'Roles', value: list(u.roles).join(', '), hint: ROLE_HINT },
      { name: 'permissions', label: 'Permissions', value: list(u.permissions).join(', '), hint: 'Comma-separated.' },
    ],
    submit: (v) => patchUser(u, { roles: splitList(v.roles), permissions: splitList(v.permissions) }, 'Roles and permissions saved.'),
  });
  if (done) after();
}

async function resetPassword(u, after) {
  const done = await formDialog({
    title: `Reset the password of ${nameOf(u)}`,
    intro: 'The user’s sessions are revoked; give them the new password by a safe channel.',
    submitLabel: 'Set password',
    fields: [{ name: 'password', label: 'New password', type: 'password', required: true, autocomplete: 'new-password' }],
    submit: (v) => patchUser(u, { password: v.password }, 'Password changed.'),
  });
  if (done) after();
}

async function toggleDisabled(u, after) {
  const disabling = !u.disabled;
  if (disabling) {
    const ok = await confirm({
      title: `Disable ${nameOf(u)}?`,
      message: 'They cannot log in and every session they have is revoked at once. You can enable them again later.',
      confirmLabel: 'Disable user',
    });
    if (!ok) return;
  }
  try {
    await patchUser(u, { disabled: disabling }, disabling ? `${nameOf(u)} disabled.` : `${nameOf(u)} enabled.`);
    after();
  } catch (err) {
    toast(api.describe(err), 'bad');
  }
}

async function deleteUser(u, after) {
  const ok = await confirm({
    title: `Delete ${nameOf(u)}?`,
    message: 'The user and every session they have are gone for good.',
    confirmLabel: 'Delete user',
  });
  if (!ok) return;
  try {
    await api.del(`users/${api.enc(nameOf(u))}`);
    toast(`User ${nameOf(u)} deleted.`);
    after();
  } catch (err) {
    toast(api.describe(err), 'bad');
  }
}

// ---- sessions ---------------------------------------------------------------

let proxyBase = null;
/** The proxy listener's URL for the curl line, from the effective config. */
async function proxyUrl() {
  if (proxyBase) return proxyBase;
  try {
    const config = await api.get('config');
    const server = config?.server || {};
    let listen = String(server.listen || '127.0.0.1:8080');
    listen = listen.replace(/^0\.0\.0\.0(?=:)/, location.hostname).replace(/^\[::\](?=:)/, location.hostname);
    const tls = Boolean(server.tls || server.tls_cert);
    proxyBase = `${tls ? 'https' : 'http'}://${listen}`;
  } catch {
    proxyBase = 'http://GATEWAY:PORT';
  }
  return proxyBase;
}

function showIssued(u, issued, base) {
  const cookie = `${issued.cookie_name}=${issued.token}`;
  openDialog({
    title: `Session issued for ${nameOf(u)}`,
    wide: true,
    content: [
      h('p', { class: 'banner banner-warn' }, h('strong', {}, 'Copy the token now: '), 'it is shown this once and cannot be read again.'),
      kvList([['Session id', code(issued.id)], ['Expires', timeEl(issued.expires_at)]]),
      copyBox(issued.token, 'Token'),
      copyBox(`Cookie: ${cookie}`, 'Cookie header'),
      copyBox(`curl -H 'Cookie: ${cookie}' ${base}/`, 'Try it with curl'),
      h('p', { class: 'muted small' }, 'The gateway rotates session tokens: a long-lived client should keep the cookie the gateway sends back (curl: -b jar -c jar).'),
    ],
    actions: [button('Done', (e) => e.target.closest('dialog').close(), { kind: 'primary' })],
  });
}

async function issueSession(u, after) {
  const base = proxyUrl();
  const issued = await formDialog({
    title: `Issue a session for ${nameOf(u)}`,
    intro: 'For a script or a backend service calling routes through the gateway as this user.',
    submitLabel: 'Issue session',
    fields: [{ name: 'ttl', label: 'Lifetime', placeholder: 'server default', hint: 'A duration such as 1h or 30m; empty for session.max_lifetime.' }],
    submit: (v) => api.post('sessions', v.ttl.trim() ? { user: nameOf(u), ttl: v.ttl.trim() } : { user: nameOf(u) }),
  });
  if (issued) {
    showIssued(u, issued, await base);
    after();
  }
}

async function revokeSession(s, after) {
  const ok = await confirm({ title: 'Revoke this session?', message: `Session ${s.id.slice(0, 12)}… of ${s.user} stops working at once.`, confirmLabel: 'Revoke' });
  if (!ok) return;
  try {
    await api.del(`sessions/${api.enc(s.id)}`);
    toast('Session revoked.');
    after();
  } catch (err) {
    toast(api.describe(err), 'bad');
  }
}

async function revokeAll(u, after) {
  const ok = await confirm({ title: `Revoke every session of ${nameOf(u)}?`, message: 'Every browser and client logged in as this user is logged out at once.', confirmLabel: 'Revoke all' });
  if (!ok) return;
  try {
    const r = await api.del(`users/${api.enc(nameOf(u))}/sessions`);
    toast(`${fmtNumber(r?.revoked ?? 0)} session(s) revoked.`);
    after();
  } catch (err) {
    toast(api.describe(err), 'bad');
  }
}

function isRevoked(s) {
  return Boolean(s.revoked_at || s.revoked === true);
}

function sessionsTable(sessions, ctx, reload) {
  return table({
    label: 'Sessions',
    rowClass: (s) => (isRevoked(s) ? 'row-muted' : null),
    rows: sessions,
    columns: [
      { label: 'Session', cell: (s) => h('code', { title: s.id }, `${s.id.slice(0, 8)}…`) },
      { label: 'Created', cell: (s) => timeEl(s.created_at) },
      { label: 'Last seen', cell: (s) => timeEl(s.last_seen_at ?? s.last_seen, { relative: true }) },
      {
        label: 'Expires',
        cell: (s) => [timeEl(s.expires_at), h('div', { class: 'small muted' }, 'idle: ', timeEl(s.idle_expires_at, { relative: true }))],
      },
      { label: 'Client', cell: (s) => (s.client_ip ? code(s.client_ip) : h('span', { class: 'muted' }, 'issued by an admin')) },
      { label: 'User agent', class: 'wrap ua', cell: (s) => s.user_agent || h('span', { class: 'muted' }, '—') },
      { label: 'State', cell: (s) => (isRevoked(s) ? badge('revoked', 'muted') : badge('live', 'ok')) },
      ...(ctx.canWrite ? [{
        label: 'Actions',
        class: 'actions',
        cell: (s) => (isRevoked(s) ? null : button('Revoke', () => revokeSession(s, reload), { small: true, kind: 'danger', 'aria-label': `Revoke session ${s.id.slice(0, 12)}` })),
      }] : []),
    ],
  });
}

// ---- views ------------------------------------------------------------------

function renderList(container, ctx, signal) {
  const body = h('div', {}, loading('Loading users…'));
  const newBtn = ctx.canWrite ? button('New user', () => createUser((u) => ctx.navigate(`#/users/${encodeURIComponent(nameOf(u))}`)), { kind: 'primary' }) : null;
  replace(container, pageHeader('Users & sessions', newBtn), body);

  async function load() {
    try {
      const users = await api.get('users', { signal });
      if (!users.length) { replace(body, empty('No users yet.')); return; }
      replace(body, table({
        label: 'Users',
        rowClass: (u) => (u.disabled ? 'row-muted' : null),
        rows: users,
        columns: [
          { label: 'User', cell: (u) => h('a', { href: `#/users/${encodeURIComponent(nameOf(u))}` }, nameOf(u)) },
          { label: 'Roles', cell: (u) => tags(u.roles) },
          { label: 'Permissions', cell: (u) => tags(u.permissions) },
          { label: 'State', cell: userBadges },
          // Only when the gateway counts them in the listing.
          ...(users.some((u) => u.sessions !== undefined) ? [{ label: 'Sessions', class: 'num', cell: (u) => fmtNumber(u.sessions ?? 0) }] : []),
          { label: 'Created', cell: (u) => timeEl(u.created_at) },
        ],
      }));
    } catch (err) {
      if (err.name !== 'AbortError') replace(body, errorState(err, load));
    }
  }
  load();
}

function renderDetail(container, ctx, name, signal) {
  const toolbar = h('div', { class: 'toolbar' });
  const info = h('div', {}, loading('Loading the user…'));
  const sessionsBody = h('div', {}, loading('Loading sessions…'));
  const sessionTools = h('div', { class: 'toolbar' });
  replace(container,
    pageHeader(name, h('a', { class: 'btn btn-ghost', href: '#/users' }, '← All users')),
    toolbar,
    info,
    h('section', { class: 'panel', 'aria-labelledby': 'user-sessions' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'user-sessions' }, 'Sessions'), sessionTools),
      sessionsBody));

  async function loadSessions(u) {
    try {
      const sessions = await api.get(`sessions${api.query({ user: name })}`, { signal });
      const live = sessions.filter((s) => !isRevoked(s));
      replace(sessionTools, ctx.canWrite ? [
        button('Issue session', () => issueSession(u, load), { kind: 'primary', small: true, disabled: u.disabled, title: u.disabled ? 'The user is disabled' : null }),
        button('Revoke all', () => revokeAll(u, load), { kind: 'danger', small: true, disabled: !live.length }),
      ] : null);
      replace(sessionsBody, sessions.length ? sessionsTable(sessions, ctx, load) : empty(`${name} has no sessions.`));
    } catch (err) {
      if (err.name !== 'AbortError') replace(sessionsBody, errorState(err, load));
    }
  }

  async function load() {
    try {
      const u = await api.get(`users/${api.enc(name)}`, { signal });
      replace(toolbar, ctx.canWrite ? [
        button('Roles & permissions', () => editAccess(u, load)),
        button('Reset password', () => resetPassword(u, load)),
        button(u.disabled ? 'Enable' : 'Disable', () => toggleDisabled(u, load), { kind: u.disabled ? '' : 'danger' }),
        button('Delete user', () => deleteUser(u, () => ctx.navigate('#/users')), { kind: 'danger' }),
      ] : null);
      replace(info, section('Account', kvList([
        ['State', userBadges(u)],
        ['Roles', tags(u.roles)],
        ['Permissions', tags(u.permissions)],
        ['Created', timeEl(u.created_at)],
        ['Updated', timeEl(u.updated_at)],
      ])));
      await loadSessions(u);
    } catch (err) {
      if (err.name === 'AbortError') return;
      if (err.status === 404) {
        replace(info, empty(`There is no user ${name}.`, h('a', { href: '#/users' }, 'All users')));
        replace(sessionsBody);
      } else replace(info, errorState(err, load));
    }
  }
  load();
}

export default {
  title: 'Users & sessions',
  render(container, ctx, signal) {
    const [name] = ctx.params;
    if (name) renderDetail(container, ctx, name, signal);
    else renderList(container, ctx, signal);
  },
};
