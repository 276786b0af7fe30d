// What every browser scenario shares: where the gateway is, a headless
// Debian Chromium with a fresh profile, a watch on each page for console
// errors and unexpected failed requests, logging in, and screenshots.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests with tests/e2e/run.sh`);
  return value;
}

export const env = {
  admin: required('E2E_ADMIN_URL'),
  proxy: required('E2E_PROXY_URL'),
  upstream: required('E2E_UPSTREAM_URL'),
  storage: required('E2E_STORAGE'),
  webAdmin: required('E2E_WEB_ADMIN'),
  screenshots: process.env.E2E_SCREENSHOTS || path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'screenshots'),
  chromium: process.env.CHROMIUM || '/usr/bin/chromium',
};
export const consoleUrl = `${env.admin}/admin/`;

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A browser with its own fresh profile directory; close() removes it. */
export async function launchBrowser() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-e2e-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: env.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: DESKTOP,
    colorScheme: 'light',
    locale: 'en-GB',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(10_000);
  const page = context.pages()[0] || await context.newPage();
  return {
    context,
    page,
    close: async () => {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Records, for one page, everything that should not happen: console errors,
 * uncaught exceptions, requests that failed at the network level and HTTP
 * error answers — except those the scenario says it expects (expect()).
 * Chromium reports each HTTP error answer also as a console error ("Failed
 * to load resource: … status of 401"); those are judged by their response.
 */
export function watch(page) {
  const problems = [];
  const expected = [];
  const isExpected = (p) => p.status !== undefined && expected.some((e) => e.status === p.status
    && e.path.test(new URL(p.url).pathname) && (!e.method || e.method === p.method));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    if (/^Failed to load resource: the server responded with a status of \d+/.test(msg.text())) return;
    problems.push({ text: `console error: ${msg.text()} (${msg.location().url || 'no url'})` });
  });
  page.on('pageerror', (err) => problems.push({ text: `uncaught exception: ${err.message}` }));
  page.on('requestfailed', (req) => {
    const failure = req.failure()?.errorText || 'failed';
    // Leaving a page cancels its reads (and closes the live log's event
    // stream): the browser reports those as aborted requests.
    if (failure === 'net::ERR_ABORTED' && req.method() === 'GET' && /\/admin\/api\//.test(req.url())) return;
    problems.push({ text: `request failed: ${req.method()} ${req.url()} ${failure}` });
  });
  page.on('response', (res) => {
    if (res.status() < 400) return;
    const method = res.request().method();
    problems.push({ status: res.status(), url: res.url(), method, text: `HTTP ${res.status()}: ${method} ${res.url()}` });
  });
  return {
    /** Allow an HTTP error answer: expect(401, /\/api\/auth\/me$/, 'GET'). */
    expect(status, pathRe, method) {
      expected.push({ status, path: pathRe, method });
    },
    /** Take back the allowances (they hold until then). */
    reset() {
      expected.length = 0;
    },
    /**
     * Throws listing every problem seen since the last call; HTTP error
     * answers are judged against the allowances in force now.
     */
    assertClean(where) {
      const seen = problems.splice(0).filter((p) => !isExpected(p)).map((p) => p.text);
      if (seen.length) throw new Error(`${where}: ${seen.length} problem(s) in the browser:\n  ${seen.join('\n  ')}`);
    },
  };
}

/** Open the console and wait for the login form (or an already-open page). */
export async function openConsole(page, hash = '') {
  await page.goto(`${consoleUrl}${hash}`);
  await page.locator('form[aria-label="Log in"], .page-title').first().waitFor();
}

/**
 * Log in through the form; when the gateway asks for a new password first,
 * set `newPassword`. Resolves when a console page is showing.
 */
export async function login(page, username, password, { newPassword } = {}) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  const changeHeading = page.getByRole('heading', { name: 'Choose a new password' });
  await page.locator('.page-title').or(changeHeading).first().waitFor();
  if (await changeHeading.isVisible()) {
    if (!newPassword) throw new Error(`${username} must change their password first`);
    await changePassword(page, password, newPassword);
  }
}

export async function changePassword(page, current, next) {
  await page.getByLabel('Current password').fill(current);
  await page.getByLabel('New password', { exact: true }).fill(next);
  await page.getByLabel('New password again').fill(next);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.locator('.page-title').waitFor();
}

/** Go to a console page (#/name) and wait until it has finished loading. */
export async function visit(page, hash) {
  await page.evaluate((h) => { window.location.hash = h; }, hash);
  await settle(page);
}

/** Wait until no loading indicator is left and the page has had time to paint. */
export async function settle(page) {
  await page.locator('.page-title').waitFor();
  await page.waitForFunction(() => !document.querySelector('.state-loading') && document.getElementById('app')?.getAttribute('aria-busy') !== 'true');
  await page.waitForTimeout(300);
}

/**
 * Save full-page screenshots of what is showing at 1280x800 and 390x844
 * (name-1280.png, name-390.png), then restore the desktop size.
 */
export async function screenshot(page, name) {
  fs.mkdirSync(env.screenshots, { recursive: true });
  for (const size of [DESKTOP, PHONE]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(250); // charts follow their container's width
    // Wide tables scroll inside their frame (or become cards): the page
    // itself never scrolls sideways.
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    if (width > size.width) throw new Error(`${name}: the page is ${width} px wide at ${size.width} px`);
    await page.screenshot({ path: path.join(env.screenshots, `${name}-${size.width}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

/** A request through the gateway's proxy listener. */
export async function viaProxy(pathAndQuery, init = {}) {
  const res = await fetch(`${env.proxy}${pathAndQuery}`, { redirect: 'manual', ...init });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

/** Calls the admin API from inside the page, as the console does (cookie, Origin, CSRF token). */
export async function apiFromPage(page, method, apiPath, body) {
  return page.evaluate(async ({ method: m, apiPath: p, body: b }) => {
    const me = await fetch('api/auth/me').then((r) => r.json());
    const res = await fetch(`api/${p}`, {
      method: m,
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token },
      body: b === undefined ? undefined : JSON.stringify(b),
    });
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* empty or not JSON */ }
    return { status: res.status, json };
  }, { method, apiPath, body });
}

export async function eventually(fn, { timeout = 10_000, interval = 200, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}
