// Rate limits: each policy with its busiest keys, and the login throttle's
// counted usernames and addresses; reset one key to unblock a client.

import * as api from '../api.js';
import { fmtNumber, fmtSeconds, h, replace } from '../dom.js';
import { badge, button, code, confirm, empty, errorState, loading, pageHeader, poll, table, toast } from '../ui.js';

const REFRESH_MS = 5000;

function meter(count, limit) {
  const pct = limit ? Math.min(100, Math.round((100 * count) / limit)) : 0;
  const bar = h('span', { class: ['meter-bar', pct >= 100 ? 'meter-full' : pct >= 80 ? 'meter-high' : null] });
  bar.style.width = `${pct}%`;
  return h('span', { class: 'meter', title: `${count} of ${limit}`, role: 'img', 'aria-label': `${pct} % of the limit` }, bar);
}

async function resetKey(what, path, after) {
  const ok = await confirm({ title: `Reset ${what}?`, message: 'Its count is forgotten: a blocked client can send requests again at once.', confirmLabel: 'Reset', danger: false });
  if (!ok) return;
  try {
    await api.del(path);
    toast(`${what} reset.`);
  } catch (err) {
    toast(err.status === 404 ? 'Nothing was counted for it any more.' : api.describe(err), err.status === 404 ? 'ok' : 'bad');
  }
  after();
}

function policyPanel(p, ctx, reload) {
  const overrides = Object.entries(p.roles || {});
  const busiest = p.busiest || [];
  return h('section', { class: 'panel', 'aria-label': `Policy ${p.name}` },
    h('div', { class: 'panel-head' },
      h('h2', {}, p.name),
      h('span', { class: 'badges' },
        badge(`${fmtNumber(p.limit)} per ${fmtSeconds(p.window_seconds)}`, 'info'),
        p.fail ? badge(`store down: fail ${p.fail}`, 'muted') : null)),
    overrides.length ? h('p', { class: 'muted small' }, 'Per role: ', overrides.map(([role, limit]) => `${role} ${fmtNumber(limit)}`).join(', ')) : null,
    busiest.length ? table({
      label: `Busiest keys of ${p.name}`,
      rowClass: (k) => (k.count >= p.limit ? 'row-bad' : null),
      rows: busiest,
      columns: [
        { label: 'Key', class: 'wrap', cell: (k) => code(k.key) },
        { label: 'Count', class: 'num', cell: (k) => fmtNumber(k.count) },
        { label: 'Of the limit', cell: (k) => meter(k.count, p.limit) },
        ...(ctx.canWrite ? [{
          label: 'Actions', class: 'actions',
          cell: (k) => button('Reset', () => resetKey(`key ${k.key} of ${p.name}`, `rate-limits/${api.enc(p.name)}/${api.enc(k.key)}`, reload), { small: true, 'aria-label': `Reset ${k.key} of ${p.name}` }),
        }] : []),
      ],
    }) : h('p', { class: 'muted' }, 'No key counted in the current window.'));
}

export default {
  title: 'Rate limits',
  render(container, ctx, signal) {
    const policies = h('div', { class: 'policies' }, loading('Loading policies…'));
    const throttle = h('div', {}, loading());
    const refresh = h('span', { class: 'live-status muted small' }, `Refreshes every ${REFRESH_MS / 1000} s`);
    replace(container,
      pageHeader('Rate limits', refresh),
      policies,
      h('section', { class: 'panel', 'aria-labelledby': 'rl-throttle' },
        h('h2', { id: 'rl-throttle' }, 'Login throttle'),
        h('p', { class: 'muted small' }, 'Usernames and client addresses with failed logins in the failure window; locked ones get 429 until the window passes or you reset them.'),
        throttle));

    let loadedOnce = false;
    async function load() {
      try {
        const [limits, locked] = await Promise.all([api.get('rate-limits', { signal }), api.get('login-throttle', { signal })]);
        replace(policies, limits.length ? limits.map((p) => policyPanel(p, ctx, load)) : empty('No rate-limit policies are configured.'));
        replace(throttle, locked.length ? table({
          label: 'Login throttle',
          rowClass: (t) => (t.locked ? 'row-bad' : null),
          rows: locked,
          columns: [
            { label: 'Value', class: 'wrap', cell: (t) => code(t.value) },
            { label: 'Kind', cell: (t) => (t.kind === 'user' ? 'username' : 'address') },
            { label: 'Failures', class: 'num', cell: (t) => fmtNumber(t.failures) },
            { label: 'State', cell: (t) => (t.locked ? badge('locked out', 'bad') : badge('counting', 'warn')) },
            ...(ctx.canWrite ? [{
              label: 'Actions', class: 'actions',
              cell: (t) => button('Reset', () => resetKey(`${t.kind} ${t.value}`, `login-throttle/${api.enc(t.kind)}/${api.enc(t.value)}`, load), { small: true, 'aria-label': `Reset ${t.kind} ${t.value}` }),
            }] : []),
          ],
        }) : empty('No failed logins in the window.'));
        loadedOnce = true;
      } catch (err) {
        if (err.name === 'AbortError') return;
        if (!loadedOnce) replace(policies, errorState(err, load));
        else replace(refresh, badge('not updating', 'bad', api.describe(err)));
      }
    }
    // Poll only while no dialog is open, so a confirmation does not jump.
    return poll(() => (document.querySelector('dialog[open]') ? null : load()), REFRESH_MS);
  },
};
