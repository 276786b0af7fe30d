// The console's shell: who is logged in, the navigation, and the hash router
// that mounts one page at a time (#/overview, #/routes, #/users/alice, …).

import * as api from './api.js';
import { h, replace } from './dom.js';
import { badge, button, errorState, loading, toast } from './ui.js';
import { renderLogin, renderPasswordChange } from './pages/login.js';
import overview from './pages/overview.js';
import routes from './pages/routes.js';
import users from './pages/users.js';
import rateLimits from './pages/rate-limits.js';
import upstreams from './pages/upstreams.js';
import logs from './pages/logs.js';
import audit from './pages/audit.js';

const PAGES = { overview, routes, upstreams, users, 'rate-limits': rateLimits, logs, audit };
const DEFAULT_PAGE = 'overview';

const root = document.getElementById('app');
let session = null; // the auth/me answer
let unmount = null; // cleanup of the mounted page (timers, event streams)
let shell = null;

function setBusy(busy) {
  root.setAttribute('aria-busy', busy ? 'true' : 'false');
}

function unmountPage() {
  if (unmount) { try { unmount(); } catch { /* a page's cleanup must not block the next */ } }
  unmount = null;
}

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [name, ...params] = parts;
  return PAGES[name] ? { name, params } : { name: DEFAULT_PAGE, params: [] };
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ---- logged out / forced password change -----------------------------------

function showLogin(notice) {
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  unmountPage();
  session = null;
  shell = null;
  api.setCsrfToken(null);
  setBusy(false);
  renderLogin(root, {
    notice,
    onLoggedIn: (answer) => start(answer),
  });
}

function showPasswordChange() {
  unmountPage();
  shell = null;
  setBusy(false);
  renderPasswordChange(root, {
    user: session?.user,
    onChanged: (answer) => {
      toast('Password changed.');
      start(answer);
    },
    onLogout: logout,
  });
}

async function logout() {
  try {
    await api.post('auth/logout', {}, { quiet: true });
  } catch { /* logged out already, or gone: the login form is right either way */ }
  showLogin('You have logged out.');
}

// ---- the shell --------------------------------------------------------------

const NAV = [
  ['overview', 'Overview'],
  ['routes', 'Routes'],
  ['upstreams', 'Upstreams'],
  ['users', 'Users & sessions'],
  ['rate-limits', 'Rate limits'],
  ['logs', 'Live log'],
  ['audit', 'Audit'],
];

function buildShell() {
  const navId = 'site-nav';
  const toggle = h('button', {
    type: 'button', class: 'btn btn-ghost nav-toggle', 'aria-expanded': 'false', 'aria-controls': navId,
  }, h('span', { class: 'nav-toggle-bars', 'aria-hidden': 'true' }), 'Menu');
  const nav = h('nav', { id: navId, class: 'nav', 'aria-label': 'Sections' },
    h('p', { class: 'nav-who' }, 'Logged in as ', h('strong', {}, session.user), ` (${session.role})`),
    h('ul', {}, NAV.map(([name, label]) => h('li', {}, h('a', { href: `#/${name}`, dataset: { page: name } }, label)))));
  const setOpen = (open) => {
    toggle.setAttribute('aria-expanded', String(open));
    nav.classList.toggle('open', open);
  };
  toggle.addEventListener('click', () => setOpen(toggle.getAttribute('aria-expanded') !== 'true'));
  nav.addEventListener('click', (e) => { if (e.target.closest('a')) setOpen(false); });
  nav.addEventListener('keydown', (e) => { if (e.key === 'Escape' && nav.classList.contains('open')) { setOpen(false); toggle.focus(); } });

  const main = h('main', { id: 'main', class: 'main', tabindex: '-1' });
  const who = h('div', { class: 'who' },
    h('span', { class: 'who-name', title: 'Logged in as' }, session.user),
    badge(session.role, session.role === 'admin' ? 'info' : 'muted', session.role === 'viewer' ? 'Read-only: you can look, not change' : null),
    button('Log out', logout, { kind: 'ghost', small: true }));
  const frame = h('div', { class: 'shell' },
    h('header', { class: 'topbar' },
      h('a', { class: 'brand', href: '#/overview' }, h('img', { src: 'favicon.svg', alt: '', width: 24, height: 24 }), 'Portcullis'),
      toggle,
      who),
    nav,
    main);
  replace(root, frame);
  return { main, nav };
}

function start(answer) {
  session = answer;
  api.setCsrfToken(answer.csrf_token);
  if (answer.must_change_password) {
    showPasswordChange();
    return;
  }
  shell = buildShell();
  route();
}

function route() {
  if (!session || !shell) return;
  // A dialog belongs to the page that opened it (Back closes it too).
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  unmountPage();
  const { name, params } = parseHash();
  const page = PAGES[name];
  for (const a of shell.nav.querySelectorAll('a')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${page.title} · Portcullis`;
  const container = h('div', { class: 'page', dataset: { page: name } });
  replace(shell.main, container);
  setBusy(true);
  const ctx = {
    session,
    canWrite: session.role === 'admin',
    params,
    navigate,
    setBusy,
  };
  const controller = new AbortController();
  const cleanup = page.render(container, ctx, controller.signal);
  unmount = () => { controller.abort(); if (typeof cleanup === 'function') cleanup(); };
  setBusy(false);
  // Move focus to the new page's heading so keyboard and screen-reader users
  // land on it (not on load, where the browser keeps its own focus).
  if (document.activeElement && document.activeElement !== document.body) {
    container.querySelector('.page-title')?.focus();
  }
}

// ---- boot -------------------------------------------------------------------

api.on('unauthorized', () => {
  if (session) showLogin('Your session has ended. Log in again.');
});
api.on('passwordChangeRequired', () => {
  if (session) session.must_change_password = true;
  showPasswordChange();
});
window.addEventListener('hashchange', route);

async function boot() {
  replace(root, h('main', { id: 'main', class: 'boot' }, loading('Loading the console…')));
  try {
    start(await api.get('auth/me', { quiet: true }));
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 401) showLogin();
    else if (err instanceof api.ApiError && err.code === 'password_change_required') showPasswordChange();
    else replace(root, h('main', { id: 'main', class: 'boot' }, errorState(err, boot)));
  }
}

boot();
