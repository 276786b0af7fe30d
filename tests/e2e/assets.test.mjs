// Every file under web-admin/ is served at /admin/<its path>, byte for byte,
// with the right Content-Type and the admin listener's security headers; and
// none of them needs what the CSP forbids.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { env } from './lib/harness.mjs';

const TYPES = {
  '.html': /^text\/html\b/,
  '.js': /^(text|application)\/javascript\b/,
  '.mjs': /^(text|application)\/javascript\b/,
  '.css': /^text\/css\b/,
  '.svg': /^image\/svg\+xml\b/,
  '.png': /^image\/png$/,
  '.ico': /^image\/(x-icon|vnd\.microsoft\.icon)$/,
  '.json': /^application\/json\b/,
  '.md': /^text\/(markdown|plain)\b/,
  '': /^(text\/plain|application\/octet-stream)\b/, // LICENSE
};

function files(dir, base = dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? files(full, base) : [path.relative(base, full).split(path.sep).join('/')];
  });
}

function assertSecurityHeaders(res, what) {
  const csp = res.headers.get('content-security-policy') || '';
  assert.ok(csp, `${what}: a Content-Security-Policy`);
  const directives = Object.fromEntries(csp.split(';').map((d) => d.trim()).filter(Boolean).map((d) => {
    const [name, ...values] = d.split(/\s+/);
    return [name.toLowerCase(), values];
  }));
  for (const name of ['script-src', 'style-src']) {
    const values = directives[name] || directives['default-src'];
    assert.ok(values, `${what}: CSP limits ${name}`);
    assert.ok(!values.includes("'unsafe-inline'") && !values.includes("'unsafe-eval'"), `${what}: no inline ${name} (${csp})`);
  }
  assert.ok(!/https?:\/\/|\*/.test(csp.replace(/'[^']*'/g, '')), `${what}: no external origin in the CSP (${csp})`);
  assert.deepEqual(directives['frame-ancestors'], ["'none'"], `${what}: frame-ancestors 'none'`);
  assert.equal(res.headers.get('x-frame-options')?.toUpperCase(), 'DENY', `${what}: X-Frame-Options`);
  assert.equal(res.headers.get('x-content-type-options')?.toLowerCase(), 'nosniff', `${what}: X-Content-Type-Options`);
  assert.equal(res.headers.get('referrer-policy')?.toLowerCase(), 'same-origin', `${what}: Referrer-Policy`);
}

const assets = files(env.webAdmin);

test('the console has files to serve', () => {
  assert.ok(assets.includes('index.html'));
  assert.ok(assets.some((f) => f.startsWith('vendor/uplot/')));
});

for (const rel of assets) {
  test(`/admin/${rel} is served with its type and the security headers`, async () => {
    const res = await fetch(`${env.admin}/admin/${rel}`, { redirect: 'manual' });
    assert.equal(res.status, 200, `GET /admin/${rel}`);
    const ext = path.extname(rel).toLowerCase();
    const expected = TYPES[ext];
    const type = res.headers.get('content-type') || '';
    assert.ok(expected, `a Content-Type is expected for ${ext || 'files without an extension'}: add it to this test`);
    assert.match(type, expected, `${rel}: Content-Type ${type}`);
    assertSecurityHeaders(res, rel);
    const served = Buffer.from(await res.arrayBuffer());
    assert.ok(served.equals(fs.readFileSync(path.join(env.webAdmin, rel))), `${rel}: the served bytes are the file's`);
  });
}

test('/admin/ is the console page; / and /admin lead there', async () => {
  const res = await fetch(`${env.admin}/admin/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') || '', /^text\/html\b/);
  assertSecurityHeaders(res, '/admin/');
  assert.equal(await res.text(), fs.readFileSync(path.join(env.webAdmin, 'index.html'), 'utf8'));
  for (const from of ['/', '/admin']) {
    const r = await fetch(`${env.admin}${from}`, { redirect: 'manual' });
    assert.ok([301, 302, 303, 307, 308].includes(r.status), `${from} redirects (${r.status})`);
    assert.match(r.headers.get('location') || '', /\/admin\/$/, `${from} redirects to /admin/`);
  }
});

test('API answers carry the security headers and Cache-Control: no-store', async (t) => {
  const problems = [];
  for (const [what, url, status] of [
    ['GET /admin/api/openapi.json', `${env.admin}/admin/api/openapi.json`, 200],
    ['GET /admin/api/auth/me without a session', `${env.admin}/admin/api/auth/me`, 401],
  ]) {
    const res = await fetch(url);
    assert.equal(res.status, status, what);
    assert.match(res.headers.get('cache-control') || '', /no-store/, `${what}: Cache-Control`);
    try {
      assertSecurityHeaders(res, what);
    } catch (err) {
      problems.push(err.message.split('\n')[0]);
    }
  }
  for (const p of problems) t.diagnostic(p);
  // The contract asks for them on every admin answer; a gateway without
  // them on errors is reported, and fails with E2E_REQUIRE_CONTRACT=1.
  if (problems.length && process.env.E2E_REQUIRE_CONTRACT !== '1') {
    t.todo('security headers missing on some API answers');
    return;
  }
  assert.deepEqual(problems, []);
});

test('nothing in web-admin/ needs what the CSP forbids', () => {
  for (const rel of assets.filter((f) => f.endsWith('.html'))) {
    const html = fs.readFileSync(path.join(env.webAdmin, rel), 'utf8');
    assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), `${rel}: no inline <script>`);
    assert.ok(!/<style\b/i.test(html), `${rel}: no <style>`);
    assert.ok(!/\sstyle\s*=/i.test(html), `${rel}: no style="" attribute`);
    assert.ok(!/\son[a-z]+\s*=/i.test(html), `${rel}: no on*="" handler`);
    assert.ok(!/(src|href)\s*=\s*["']?(https?:)?\/\//i.test(html), `${rel}: nothing from another origin`);
  }
  for (const rel of assets.filter((f) => f.endsWith('.js') && !f.startsWith('vendor/'))) {
    const js = fs.readFileSync(path.join(env.webAdmin, rel), 'utf8');
    assert.ok(!/\binnerHTML\b|\bouterHTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(/.test(js), `${rel}: builds the DOM without parsing strings`);
    assert.ok(!/setAttribute\(\s*['"]style['"]/.test(js), `${rel}: no style attribute (CSP)`);
    assert.ok(!/(\bfrom\s*|import\(\s*|fetch\(\s*|EventSource\(\s*|\b(src|href):\s*)['"`](https?:)?\/\//.test(js), `${rel}: loads nothing from another origin`);
  }
});
