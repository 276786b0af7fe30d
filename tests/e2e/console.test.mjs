// The console's scenarios, in order: each builds on the state the previous
// ones left (the admin's new password, the route and users they created).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  apiFromPage, changePassword, consoleUrl, env, eventually, launchBrowser, login, openConsole, screenshot, settle, viaProxy, visit, watch,
} from './lib/harness.mjs';

const ADMIN_PASSWORD = 'e2e-admin-password-1';
const ALICE = { name: 'e2e-alice', password: 'e2e-alice-password-1' };
const VIEWER = { name: 'e2e-viewer', password: 'e2e-viewer-password-1', newPassword: 'e2e-viewer-password-2' };
const ROUTE_ID = 'e2e-echo';

const passwordFile = path.join(env.storage, 'initial-admin-password');
const API = (p) => new RegExp(`^/admin/api/${p}$`);

let browser;
let page;
let seen;
// What the running gateway offers of the contract, probed after the first
// login; what it lacks is reported by the last test, not hidden.
const features = { stats: true, logs: true };
const gaps = [];

/** Allow a missing endpoint's 404 (the pages ask for it once). */
function allowMissing(watcher) {
  if (!features.stats) watcher.expect(404, API('stats'), 'GET');
  if (!features.logs) watcher.expect(404, API('logs'), 'GET');
}

/** Back to the answers every page may get: only those 404s. */
function baseline(watcher) {
  watcher.reset();
  allowMissing(watcher);
}

before(async () => {
  browser = await launchBrowser();
  page = browser.page;
  seen = watch(page);
});

after(async () => {
  await browser?.close();
});

test('first login: the initial password, then the forced change', async () => {
  assert.ok(fs.existsSync(passwordFile), 'the gateway wrote the initial admin password');
  const initial = fs.readFileSync(passwordFile, 'utf8').trim();
  assert.ok(initial.length >= 12, 'the initial password is long');

  seen.expect(401, API('auth/me'), 'GET'); // not logged in yet
  seen.expect(401, API('auth/login'), 'POST'); // the wrong password below
  await openConsole(page);
  await screenshot(page, 'login');

  // A wrong password is refused in words, not silently.
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password', { exact: true }).fill('not-the-password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Wrong username or password' }).waitFor();

  await page.getByLabel('Password', { exact: true }).fill(initial);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Choose a new password' }).waitFor();
  await screenshot(page, 'password-change');

  // The two new passwords must agree before anything is sent.
  await page.getByLabel('Current password').fill(initial);
  await page.getByLabel('New password', { exact: true }).fill(ADMIN_PASSWORD);
  await page.getByLabel('New password again').fill(`${ADMIN_PASSWORD}x`);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.locator('[data-field="confirm_password"] .field-error').filter({ hasText: 'differ' }).waitFor();

  await changePassword(page, initial, ADMIN_PASSWORD);
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  await eventually(() => !fs.existsSync(passwordFile), { what: 'the initial password file to be deleted' });

  // Which endpoints of the contract this gateway has (they answer 404 with
  // no body when absent).
  for (const [name, probe] of [['stats', 'api/stats?seconds=60'], ['logs', 'api/logs?limit=1']]) {
    const res = await page.request.get(`${consoleUrl}${probe}`);
    features[name] = res.status() !== 404;
    if (!features[name]) gaps.push(`GET /admin/api/${probe.slice(4)} answers 404: the endpoint is missing`);
  }
  allowMissing(seen);

  // Reloading keeps the session (cookie) and shows the page again.
  await page.reload();
  await settle(page);
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  seen.assertClean('first login');
  baseline(seen);
});

test('creating a route and seeing a request pass through the proxy', async () => {
  await visit(page, '#/routes');
  await page.getByRole('button', { name: 'New route' }).click();
  const dialog = page.getByRole('dialog', { name: 'New route' });
  await dialog.getByLabel('Id', { exact: true }).fill(ROUTE_ID);
  await dialog.getByLabel('Path', { exact: true }).fill('/e2e/*');
  await dialog.getByLabel('Upstream', { exact: true }).fill(env.upstream);
  await dialog.getByLabel('Who may use it').selectOption('public');
  await dialog.getByRole('button', { name: 'Create route' }).click();
  await dialog.waitFor({ state: 'detached' });

  const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: ROUTE_ID, exact: true }) });
  await row.waitFor();
  assert.match(await row.innerText(), /\bapi\b/, 'the new route is marked as made through the API');

  const res = await eventually(async () => {
    const r = await viaProxy('/e2e/hello?from=e2e');
    return r.status === 200 ? r : null;
  }, { what: 'the new route to serve' });
  assert.equal(res.json.path, '/e2e/hello?from=e2e', 'the upstream got the request');

  // "Send a test request" shows the status and what the upstream received.
  await row.getByRole('button', { name: `Send a test request to ${ROUTE_ID}` }).click();
  const test = page.getByRole('dialog', { name: `Send a test request to ${ROUTE_ID}` });
  await test.getByLabel('Path').fill('/e2e/from-the-console');
  await test.getByRole('button', { name: 'Send' }).click();
  await test.getByText('HTTP 200').waitFor();
  // The echo upstream answers with the request it received: its body shows
  // the request went through the proxy with the gateway's headers.
  assert.match(await test.locator('pre').innerText(), /"x-request-id"/);
  const upstreamHeaders = test.getByRole('region', { name: 'Headers the upstream received' });
  if (await upstreamHeaders.count()) {
    assert.match(await upstreamHeaders.innerText(), /x-request-id/i);
  } else {
    gaps.push('POST /admin/api/routes/{id}/test: no upstream_request_headers in the answer, so the console cannot list the headers the upstream received');
  }
  await screenshot(page, 'route-test-request');
  await test.getByRole('button', { name: 'Close' }).click();
  seen.assertClean('route creation');
});

test('an invalid upstream shows the API\'s error under the field', async () => {
  seen.expect(400, API('routes'), 'POST');
  await page.getByRole('button', { name: 'New route' }).click();
  const dialog = page.getByRole('dialog', { name: 'New route' });
  await dialog.getByLabel('Id', { exact: true }).fill('e2e-invalid');
  await dialog.getByLabel('Path', { exact: true }).fill('/e2e-invalid/*');
  await dialog.getByLabel('Upstream', { exact: true }).fill('ftp://127.0.0.1/not-http');
  await dialog.getByRole('button', { name: 'Create route' }).click();

  const error = dialog.locator('[data-field="upstream"] .field-error');
  await error.waitFor();
  assert.ok((await error.innerText()).trim().length > 3, 'the problem is spelled out');
  assert.equal(await dialog.getByLabel('Upstream', { exact: true }).getAttribute('aria-invalid'), 'true');
  assert.ok(await dialog.isVisible(), 'the form stays open to fix it');
  await screenshot(page, 'route-invalid-upstream');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'detached' });

  const check = await page.request.get(`${consoleUrl}api/routes/e2e-invalid`);
  assert.equal(check.status(), 404, 'nothing was created');
  seen.assertClean('invalid upstream');
  baseline(seen);
});

test('a user, an issued session used against a protected route, then revoked', async () => {
  await visit(page, '#/users');
  await page.getByRole('button', { name: 'New user' }).click();
  const dialog = page.getByRole('dialog', { name: 'New user' });
  await dialog.getByLabel('Username').fill(ALICE.name);
  await dialog.getByLabel('Password').fill(ALICE.password);
  await dialog.getByLabel('Roles').fill('staff');
  await dialog.getByRole('button', { name: 'Create user' }).click();
  await page.getByRole('heading', { name: ALICE.name, level: 1 }).waitFor();
  await settle(page);

  // Without a session the protected route says 401.
  assert.equal((await viaProxy('/protected/whoami')).status, 401);

  await page.getByRole('button', { name: 'Issue session' }).click();
  const issue = page.getByRole('dialog', { name: `Issue a session for ${ALICE.name}` });
  await issue.getByLabel('Lifetime').fill('1h');
  await issue.getByRole('button', { name: 'Issue session' }).click();
  const issued = page.getByRole('dialog', { name: `Session issued for ${ALICE.name}` });
  await issued.waitFor();
  const header = await issued.getByLabel('Cookie header').inputValue();
  const match = /^Cookie: ([^=\s]+)=(\S+)$/.exec(header);
  assert.ok(match, `a Cookie header line: ${header}`);
  const token = await issued.getByLabel('Token').inputValue();
  assert.equal(match[2], token, 'the header carries the token shown');
  const curl = await issued.getByLabel('Try it with curl').inputValue();
  assert.ok(curl.includes(`Cookie: ${match[1]}=${token}`) && curl.includes(env.proxy), `a usable curl line: ${curl}`);
  await issued.getByRole('button', { name: 'Copy' }).first().click();
  await screenshot(page, 'session-issued');

  const ok = await viaProxy('/protected/whoami', { headers: { Cookie: `${match[1]}=${token}` } });
  assert.equal(ok.status, 200, `the issued cookie is accepted: ${ok.text}`);
  assert.equal(ok.json.headers['x-user-id'], ALICE.name, 'the upstream is told who the user is');

  await issued.getByRole('button', { name: 'Done' }).click();
  await issued.waitFor({ state: 'detached' });
  const revoke = page.getByRole('button', { name: /^Revoke session / });
  await revoke.first().waitFor();
  assert.equal(await revoke.count(), 1, 'one live session listed');
  await screenshot(page, 'user-detail');
  await revoke.first().click();
  await page.getByRole('dialog', { name: 'Revoke this session?' }).getByRole('button', { name: 'Revoke' }).click();
  await page.getByText('Session revoked.').waitFor();

  const gone = await viaProxy('/protected/whoami', { headers: { Cookie: `${match[1]}=${token}` } });
  assert.equal(gone.status, 401, 'the revoked cookie is refused');
  seen.assertClean('sessions');
});

test('the overview charts draw real data after traffic', async (t) => {
  if (!features.stats) {
    // The page must still say so plainly, without a console error.
    await visit(page, '#/overview');
    await page.getByRole('alert').filter({ hasText: '404' }).waitFor();
    seen.assertClean('overview without stats');
    t.todo('GET /admin/api/stats is missing');
    return;
  }
  for (let i = 0; i < 20; i += 1) await viaProxy(`/public/traffic-${i}`);
  for (let i = 0; i < 4; i += 1) await viaProxy('/protected/no-session');
  for (let i = 0; i < 2; i += 1) await viaProxy('/down/unreachable');
  await viaProxy('/nowhere-at-all');

  const stats = await eventually(async () => {
    const r = await page.request.get(`${consoleUrl}api/stats?seconds=900`);
    const s = await r.json();
    const sum = (xs) => (xs || []).reduce((a, b) => a + (b || 0), 0);
    return sum(s.overall.requests) >= 27 && sum(s.overall.upstream_errors) > 0 ? s : null;
  }, { what: 'the stats to count the traffic' });
  const sum = (xs) => xs.reduce((a, b) => a + (b || 0), 0);
  assert.ok(sum(stats.overall.s2xx) >= 20, '2xx counted');
  assert.ok(sum(stats.overall.auth_failures) >= 4 || sum(stats.overall.s4xx) >= 4, '401s counted');
  assert.ok(stats.routes.public && sum(stats.routes.public.requests) >= 20, 'per-route series');

  await visit(page, '#/overview');
  await page.locator('.chart canvas').nth(2).waitFor();
  assert.equal(await page.locator('.chart canvas').count(), 3, 'three charts');
  // The requests chart has drawn its 2xx line: pixels in the 2xx colour.
  const drawn = await eventually(() => page.evaluate(() => {
    const canvas = document.querySelector('[data-chart="requests"] canvas');
    const [r, g, b] = getComputedStyle(document.documentElement).getPropertyValue('--c-2xx').trim()
      .match(/[0-9a-f]{2}/gi).map((x) => parseInt(x, 16));
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - r) < 8 && Math.abs(data[i + 1] - g) < 8 && Math.abs(data[i + 2] - b) < 8 && data[i + 3] > 200) n += 1;
    }
    return n;
  }), { what: 'the 2xx line to be drawn' });
  assert.ok(drawn > 10, `the 2xx line is drawn (${drawn} pixels)`);
  const requests = await page.locator('.stat').filter({ hasText: 'Requests' }).locator('.stat-value').innerText();
  assert.notEqual(requests.trim(), '0');
  // The route whose upstream is down stands out.
  await page.getByRole('alert').filter({ hasText: 'failing' }).getByRole('link', { name: 'down' }).waitFor();
  await page.getByRole('row').filter({ hasText: 'down' }).getByText('upstream failing').waitFor();
  seen.assertClean('overview');
});

test('the live log shows a request made during the test', async (t) => {
  if (!features.logs) {
    await visit(page, '#/logs');
    await page.getByText('404').first().waitFor();
    seen.assertClean('live log without logs');
    t.todo('GET /admin/api/logs and /admin/api/logs/stream are missing');
    return;
  }
  await visit(page, '#/logs');
  await page.locator('.live-status').getByText('live').waitFor();
  const marker = `/public/e2e-live-${Date.now()}`;
  await viaProxy(marker);
  const row = page.getByRole('row').filter({ hasText: marker });
  await row.waitFor();
  await row.getByRole('button').click();
  const details = page.getByRole('dialog').filter({ hasText: marker });
  await details.getByText('request_id').first().waitFor();
  await screenshot(page, 'log-record');
  await details.getByRole('button', { name: 'Close' }).click();

  // Paused, new records wait; resumed, they show.
  await page.getByRole('button', { name: 'Pause' }).click();
  const later = `/public/e2e-paused-${Date.now()}`;
  await viaProxy(later);
  await page.getByRole('button', { name: /Resume \(\d+ new\)/ }).waitFor();
  assert.equal(await page.getByRole('row').filter({ hasText: later }).count(), 0, 'not shown while paused');
  await page.getByRole('button', { name: /Resume/ }).click();
  await page.getByRole('row').filter({ hasText: later }).waitFor();

  // Filtered to 4xx, a 200 does not show and a 401 does.
  await page.getByLabel('Status').selectOption('4xx');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.locator('.live-status').getByText('live').waitFor();
  const ok = `/public/e2e-filtered-out-${Date.now()}`;
  const refused = `/protected/e2e-filtered-in-${Date.now()}`;
  await viaProxy(ok);
  await viaProxy(refused);
  await page.getByRole('row').filter({ hasText: refused }).waitFor();
  assert.equal(await page.getByRole('row').filter({ hasText: ok }).count(), 0, 'the 200 is filtered out');
  seen.assertClean('live log');
});

test('the upstreams page shows each target of a service and its state', async () => {
  // Traffic through the service, so its counts move.
  for (let i = 0; i < 4; i += 1) await viaProxy('/balanced/hello');
  await visit(page, '#/upstreams');
  const service = page.getByRole('region', { name: 'Service api' });
  await service.waitFor();
  // The dead target fails its checks and is shown down; the live one up.
  await service.getByRole('row').filter({ has: page.getByText('down', { exact: true }) }).first().waitFor();
  await service.getByRole('row').filter({ has: page.getByText('up', { exact: true }) }).first().waitFor();
  await service.getByText('1 of 2 up').waitFor();
  assert.match(await service.innerText(), /Routes: balanced/);
  await screenshot(page, 'upstreams');
  seen.assertClean('upstreams');
});

test('editing a route in the console keeps the header rules the form does not show, and its WebSocket settings', async () => {
  const created = await apiFromPage(page, 'POST', 'routes', {
    id: 'ruled', path: '/ruled/*', upstream: env.upstream, auth: 'public',
    request_headers: { set: { 'X-Env': 'prod' } },
    websocket: false, tunnel_idle_timeout: '5m',
  });
  assert.equal(created.status, 201, JSON.stringify(created.json));
  await visit(page, '#/routes');
  await page.getByRole('button', { name: 'Edit route ruled' }).click();
  const dialog = page.getByRole('dialog', { name: 'Edit route ruled' });
  assert.equal(await dialog.getByLabel('Tunnel WebSocket upgrades to the upstream').isChecked(), false);
  assert.equal(await dialog.getByLabel('WebSocket idle timeout').inputValue(), '5m');
  await dialog.getByLabel('Path', { exact: true }).fill('/ruled-again/*');
  await dialog.getByRole('button', { name: 'Save changes' }).click();
  await dialog.waitFor({ state: 'detached' });
  const saved = await apiFromPage(page, 'GET', 'routes/ruled');
  assert.equal(saved.json.path, '/ruled-again/*');
  assert.deepEqual(saved.json.request_headers.set, { 'x-env': 'prod' });
  assert.equal(saved.json.websocket, false);
  assert.equal(saved.json.tunnel_idle_timeout, '5m');
  const res = await eventually(async () => {
    const r = await viaProxy('/ruled-again/x');
    return r.status === 200 ? r : null;
  }, { what: 'the edited route to serve' });
  assert.equal(res.json.headers['x-env'], 'prod', 'the upstream got the rule\'s header');
  assert.equal((await apiFromPage(page, 'DELETE', 'routes/ruled')).status, 204);
  seen.assertClean('route edit');
});

test('every page renders without browser errors (screenshots at 1280x800 and 390x844)', async () => {
  const pages = [
    ['overview', '#/overview'],
    ['routes', '#/routes'],
    ['route-detail', `#/routes/${ROUTE_ID}`],
    ['upstreams', '#/upstreams'],
    ['users', '#/users'],
    ['rate-limits', '#/rate-limits'],
    ['logs', '#/logs'],
    ['audit', '#/audit'],
  ];
  for (const [name, hash] of pages) {
    await visit(page, hash);
    if (name === 'overview' && features.stats) await page.locator('.chart canvas').nth(2).waitFor();
    if (name === 'logs' && features.logs) await page.locator('.live-status').getByText('live').waitFor();
    await screenshot(page, name);
    seen.assertClean(`page ${hash}`);
  }
  // The audit trail recorded this run's changes.
  await visit(page, '#/audit');
  await page.getByRole('row').filter({ hasText: ROUTE_ID }).first().waitFor();

  // The phone layout's menu opens and closes.
  await page.setViewportSize({ width: 390, height: 844 });
  const menu = page.getByRole('button', { name: 'Menu' });
  await menu.click();
  await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Routes' }).waitFor();
  await page.screenshot({ path: path.join(env.screenshots, 'menu-open-390.png') });
  await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Routes' }).click();
  await settle(page);
  assert.equal(await menu.getAttribute('aria-expanded'), 'false');
  await page.setViewportSize({ width: 1280, height: 800 });
  seen.assertClean('menu');
});

test('a viewer sees everything and can change nothing', async () => {
  // The admin makes the viewer.
  await visit(page, '#/users');
  await page.getByRole('button', { name: 'New user' }).click();
  const dialog = page.getByRole('dialog', { name: 'New user' });
  await dialog.getByLabel('Username').fill(VIEWER.name);
  await dialog.getByLabel('Password').fill(VIEWER.password);
  await dialog.getByLabel('Roles').fill('viewer');
  await dialog.getByRole('button', { name: 'Create user' }).click();
  await page.getByRole('heading', { name: VIEWER.name, level: 1 }).waitFor();
  seen.assertClean('creating the viewer');

  const other = await launchBrowser();
  try {
    const vp = other.page;
    const vseen = watch(vp);
    baseline(vseen);
    vseen.expect(401, API('auth/me'), 'GET');
    await openConsole(vp);
    await login(vp, VIEWER.name, VIEWER.password, { newPassword: VIEWER.newPassword });
    await vp.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
    vseen.assertClean('viewer login');
    baseline(vseen);

    const changing = /^(New route|New user|Edit|Delete|Delete user|Issue session|Revoke all|Revoke|Reset|Reset password|Disable|Enable|Roles & permissions|Test)$/;
    for (const [name, hash] of [
      ['viewer-routes', '#/routes'],
      ['viewer-route-detail', `#/routes/${ROUTE_ID}`],
      ['viewer-users', '#/users'],
      ['viewer-user-detail', `#/users/${ALICE.name}`],
      ['viewer-rate-limits', '#/rate-limits'],
      ['viewer-audit', '#/audit'],
    ]) {
      await visit(vp, hash);
      const buttons = await vp.locator('main button').allInnerTexts();
      const offending = buttons.map((b) => b.trim()).filter((b) => changing.test(b) || /^Revoke session/.test(b));
      assert.deepEqual(offending, [], `no changing controls on ${hash}`);
      await screenshot(vp, name);
    }
    vseen.assertClean('viewer pages');

    // The API refuses a change even with a valid CSRF token.
    vseen.expect(403, API('routes'), 'POST');
    vseen.expect(403, API(`users/${ALICE.name}`), 'PATCH');
    const post = await apiFromPage(vp, 'POST', 'routes', { id: 'viewer-route', path: '/viewer/*', upstream: env.upstream });
    assert.equal(post.status, 403, 'a viewer\'s change is refused');
    if (post.json?.error !== 'read_only') {
      gaps.push(`a viewer's change answers 403 with error "${post.json?.error}", not "read_only"`);
    }
    assert.equal((await page.request.get(`${consoleUrl}api/routes/viewer-route`)).status(), 404, 'and nothing was made');
    const patch = await apiFromPage(vp, 'PATCH', `users/${ALICE.name}`, { disabled: true });
    assert.equal(patch.status, 403);
    vseen.assertClean('viewer API calls');
  } finally {
    await other.close();
  }
});

test('too many failed logins: the form says when to try again', async () => {
  const other = await launchBrowser();
  try {
    const p = other.page;
    const s = watch(p);
    s.expect(401, API('auth/me'), 'GET');
    s.expect(401, API('auth/login'), 'POST');
    s.expect(429, API('auth/login'), 'POST');
    await openConsole(p);
    const alert = p.getByRole('alert').filter({ hasText: /Try again in \d+ (s|min|h)/ });
    await eventually(async () => {
      await p.getByLabel('Username').fill('e2e-nobody');
      await p.getByLabel('Password', { exact: true }).fill('wrong-password-123');
      await p.getByRole('button', { name: 'Log in' }).click();
      await p.getByRole('alert').first().waitFor();
      return alert.isVisible();
    }, { timeout: 20_000, interval: 300, what: 'the 429 message' });
    assert.ok(await p.getByRole('button', { name: 'Log in' }).isDisabled(), 'the button waits for the retry time');
    await screenshot(p, 'login-throttled');
    s.assertClean('throttled login');
  } finally {
    await other.close();
  }
});

test('logging out ends the console session', async () => {
  seen.expect(401, API('auth/me'), 'GET');
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('form', { name: 'Log in' }).waitFor();
  const me = await page.request.get(`${consoleUrl}api/auth/me`);
  assert.equal(me.status(), 401);
  await page.reload();
  await page.getByRole('form', { name: 'Log in' }).waitFor();
  seen.assertClean('logout');
});

test('the gateway offers all of the console\'s API contract', (t) => {
  for (const gap of gaps) t.diagnostic(gap);
  if (gaps.length && process.env.E2E_REQUIRE_CONTRACT !== '1') {
    t.todo(`${gaps.length} part(s) of the contract missing (E2E_REQUIRE_CONTRACT=1 makes this a failure)`);
    return;
  }
  assert.deepEqual(gaps, [], 'every endpoint and field the console uses');
});
