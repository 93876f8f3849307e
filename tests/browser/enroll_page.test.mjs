// The enrollment pages in a real headless browser (issue 5: "a clean HTML page that works in
// Safari and Chrome"): Debian's Chromium (/usr/bin/chromium) driven by playwright-core.
//
// One real mdmd (ephemeral loopback ports, small argon2id costs) on a temporary instance; the
// push certificate (made with the openssl CLI), the local user and the PIN invitation come from
// the mdmd command line, as an administrator would make them. Checked in the browser:
//   - without a push certificate the link answers the 503 page;
//   - GET /zdm/macos/otae: a form with user name and password, no script at all (CSP), no
//     console error, no failed request; at a phone-sized viewport the fields are visible and
//     nothing overflows sideways;
//   - a wrong password: the generic failure message (403);
//   - the right password: the "ready" page with the System Settings steps; the download link
//     saves enroll.mobileconfig (DER CMS SignedData carrying the profile's XML plist); the same
//     link a second time answers the "no longer valid" page (410);
//   - the invitation URL printed by `mdmd invite --mode pin`: the user name read-only and a PIN
//     field; the PIN leads to the ready page; the used invitation then answers 410.
//
// Needs: MDMD_BIN (meson sets it), openssl, /usr/bin/chromium (or $CHROMIUM) and
// tests/browser/node_modules (`npm ci` here; ./scripts/dev.sh test does both). A missing one is
// a failure, not a skip: CI installs them.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MDMD = process.env.MDMD_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.MDMD_BROWSER_SHOTS; // optional: a folder for screenshots
const TOPIC = 'com.apple.mgmt.External.11111111-2222-3333-4444-555555555555';
const USER = 'alice';
const PASSWORD = 'correct horse battery';
const STEP_MS = 15000; // any one browser action or navigation
const CLI_MS = 60000; // any one mdmd or openssl command (mdmd may run under ASan)

function fatal(msg) {
  console.error(`browser-enroll: FAIL: ${msg}`);
  process.exit(1);
}

if (!MDMD || !fs.existsSync(MDMD)) fatal(`MDMD_BIN is not set to the mdmd binary (${MDMD})`);
if (!fs.existsSync(CHROMIUM))
  fatal(`${CHROMIUM} is missing: install Debian's chromium (./scripts/dev.sh test does)`);
let chromium;
try {
  ({ chromium } = await import(path.join(HERE, 'node_modules/playwright-core/index.mjs')));
} catch (e) {
  fatal(`playwright-core is not installed in ${HERE}/node_modules: run \`npm ci\` there ` +
        `(./scripts/dev.sh test does): ${e.message}`);
}

// ---- the server ------------------------------------------------------------------------------

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mdmd-browser-'));
const dir = path.join(tmp, 'inst');
const serveLog = path.join(tmp, 'serve.log');
let server = null; // the mdmd serve child
let browser = null;
let apiKey = '';
let adminUrl = '';
let base = ''; // https://localhost:PORT/zdm

function run(file, args, opts = {}) {
  try {
    return execFileSync(file, args, { encoding: 'utf8', timeout: CLI_MS, stdio: 'pipe', ...opts });
  } catch (e) {
    throw new Error(`${path.basename(file)} ${args.join(' ')} failed: ${e.message}\n` +
                    `${e.stdout || ''}${e.stderr || ''}`);
  }
}

function mdmd(args, input) {
  return run(MDMD, [...args, '--url', adminUrl], {
    input, env: { ...process.env, MDMD_API_KEY: apiKey },
  });
}

function serverLog() {
  try { return fs.readFileSync(serveLog, 'utf8'); } catch { return ''; }
}

async function startServer() {
  const out = fs.openSync(serveLog, 'a');
  server = spawn(MDMD, ['serve', dir, '--device-listen', '127.0.0.1:0',
                        '--admin-listen', '127.0.0.1:0', '--shards', '1',
                        '--set', 'log.level=warn',
                        '--set', 'enroll.argon2_memory_kib=256',
                        '--set', 'enroll.argon2_iterations=1',
                        '--set', 'enroll.max_failures=50'],
                 { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  let exited = null;
  server.on('exit', (code, sig) => { exited = sig || code; });
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    const m = serverLog().match(/listening device=(\d+) admin=(\d+)/);
    if (m) {
      base = `https://localhost:${m[1]}/zdm`;
      adminUrl = `https://127.0.0.1:${m[2]}`;
      return;
    }
    if (exited !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`mdmd serve did not start (${exited ?? 'timeout'}):\n${serverLog()}`);
}

// Stops mdmd (SIGTERM, SIGKILL after 20 s); returns how it ended: 0 is a clean stop.
async function stopServer() {
  if (!server) return 0;
  if (server.exitCode === null && server.signalCode === null) {
    const done = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    const t = setTimeout(() => server.kill('SIGKILL'), 20000);
    await done;
    clearTimeout(t);
  }
  return server.signalCode || server.exitCode;
}

// Never leave mdmd behind, even when node dies on an uncaught error.
process.on('exit', () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
});

// The push certificate, as enroll_test.c makes it: a self-made "APNs" CA and a certificate with
// the topic as UID.
function makePushCert() {
  const d = path.join(tmp, 'push');
  fs.mkdirSync(path.join(d, 'db'), { recursive: true });
  fs.writeFileSync(path.join(d, 'db/index.txt'), '');
  fs.writeFileSync(path.join(d, 'db/serial'), '01\n');
  fs.writeFileSync(path.join(d, 'ca.cnf'),
    '[ca]\ndefault_ca = c\n[c]\ndir = .\ndatabase = db/index.txt\nserial = db/serial\n' +
    'new_certs_dir = db\ndefault_md = sha256\npolicy = p\nunique_subject = no\n' +
    'copy_extensions = none\nemail_in_dn = no\npreserve = yes\n' +
    '[p]\nUID = optional\nCN = optional\nC = optional\n');
  const o = { cwd: d };
  run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key',
                  '-out', 'ca.crt', '-subj', '/CN=Test APNs CA', '-days', '3650'], o);
  run('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'push.key',
                  '-out', 'push.csr', '-subj', `/UID=${TOPIC}/CN=APSP:push/C=US`], o);
  run('openssl', ['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.crt', '-keyfile', 'ca.key',
                  '-in', 'push.csr', '-out', 'push.crt', '-notext',
                  '-startdate', '20200101000000Z', '-enddate', '20991231000000Z'], o);
  return { cert: path.join(d, 'push.crt'), key: path.join(d, 'push.key') };
}

// SHA-256 of the instance CA's SubjectPublicKeyInfo, base64: Chromium trusts chains that contain
// it (--ignore-certificate-errors-spki-list) instead of ignoring every certificate error.
function caSpki() {
  const pub = run('openssl', ['x509', '-in', path.join(dir, 'ca/ca.crt'), '-noout', '-pubkey']);
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'DER'],
                           { input: pub, timeout: CLI_MS });
  return execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der, timeout: CLI_MS })
    .toString('base64');
}

// ---- the browser -----------------------------------------------------------------------------

// A new context and page that records console errors, page errors and failed requests.
async function newPage(options = {}) {
  const context = await browser.newContext({ acceptDownloads: true, ...options });
  context.setDefaultTimeout(STEP_MS);
  context.setDefaultNavigationTimeout(STEP_MS);
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning')
      problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // A download ends its navigation request as "aborted": not a failure.
    if (!/ERR_ABORTED/.test(r.failure()?.errorText || '') || !/\/macos\/profile\//.test(r.url()))
      problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  return { context, page, problems };
}

// problems less Chromium's own note on a page answered with status (the answer under test).
function expected(problems, status) {
  const note = new RegExp(`^console error: Failed to load resource: the server responded with a ` +
                          `status of ${status} `);
  return problems.filter((p) => !note.test(p));
}

async function shot(page, name) {
  if (SHOTS) {
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  }
}

// What every enrollment page must be: served with a CSP that allows no script, and holding none.
async function checkClean(page, resp, problems) {
  const csp = (await resp.allHeaders())['content-security-policy'] || '';
  assert.match(csp, /default-src 'none'/, 'CSP header');
  assert.doesNotMatch(csp, /script-src/, 'the CSP allows no script');
  const scripts = await page.evaluate(() => ({
    tags: document.querySelectorAll('script').length,
    handlers: [...document.querySelectorAll('*')]
      .flatMap((e) => [...e.attributes].filter((a) => /^on/i.test(a.name)).map((a) => a.name)),
    jsLinks: [...document.querySelectorAll('[href],[action]')]
      .filter((e) => /^\s*javascript:/i.test(e.getAttribute('href') || e.getAttribute('action')))
      .length,
  }));
  assert.deepEqual(scripts, { tags: 0, handlers: [], jsLinks: 0 }, 'no script in the page');
  assert.equal(await page.locator('html').getAttribute('lang'), 'en');
  assert.ok(await page.locator('meta[name=viewport]').count(), 'a viewport meta tag');
  assert.deepEqual(problems, [], 'no console error and no failed request');
}

// Submits the form on page and returns the answer to the POST.
async function submit(page) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' &&
                                r.request().resourceType() === 'document'),
    page.locator('button[type=submit]').click(),
  ]);
  await page.waitForLoadState('load');
  return resp;
}

async function checkReady(page, resp, problems) {
  assert.equal(resp.status(), 200, 'the ready page');
  await checkClean(page, resp, problems);
  assert.equal((await page.locator('h1').textContent()).trim(),
               'Your enrollment profile is ready');
  const steps = await page.locator('ol').innerText();
  assert.match(steps, /System Settings/);
  assert.match(steps, /Profile Downloaded/);
  assert.match(steps, /Install/);
  const link = page.locator('a#download');
  assert.match(await link.getAttribute('href'), /^\/zdm\/macos\/profile\/[0-9a-f]+\?t=[0-9a-f]+$/);
  assert.ok(await page.getByRole('link', { name: 'Download profile' }).isVisible());
  return link;
}

// Clicks link, which must download the signed profile; returns its bytes.
async function downloadProfile(page, link) {
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  assert.equal(download.suggestedFilename(), 'enroll.mobileconfig');
  assert.equal(await download.failure(), null, 'the download completed');
  const bytes = fs.readFileSync(await download.path());
  return bytes;
}

// ---- the tests -------------------------------------------------------------------------------

// it() whose failure also shows mdmd's log at the end.
let failed = false;
function step(name, fn) {
  it(name, async () => {
    try {
      await fn();
    } catch (e) {
      failed = true;
      throw e;
    }
  });
}

describe('enrollment pages in headless Chromium', { timeout: 240000 }, () => {
  let invite; // { url, pin }

  before(async () => {
    try {
      const init = run(MDMD, ['init', dir, '--hostnames', 'localhost,127.0.0.1']);
      apiKey = (init.match(/Admin API key: (mdm_\S+)/) || [])[1];
      assert.ok(apiKey, `no API key in the output of mdmd init:\n${init}`);
      await startServer();
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${caSpki()}`],
        timeout: 60000,
      });
    } catch (e) {
      failed = true;
      throw e;
    }
  });

  after(async () => {
    let end = null;
    try {
      if (browser) await browser.close();
    } finally {
      end = await stopServer();
      if (failed || end !== 0) console.error(`mdmd log:\n${serverLog()}`);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    assert.equal(end, 0, 'mdmd stops cleanly on SIGTERM (under ASan: no leak)');
  });

  step('answers the 503 page until a push certificate is uploaded', async () => {
    const { context, page } = await newPage();
    try {
      const resp = await page.goto(`${base}/macos/otae`);
      assert.equal(resp.status(), 503);
      assert.match(await page.locator('h1').textContent(), /not available yet/);
      assert.equal(await page.locator('form').count(), 0);
    } finally {
      await context.close();
    }
    const certs = makePushCert();
    mdmd(['push-cert', dir, 'upload', '--cert', certs.cert, '--key', certs.key]);
    mdmd(['users', dir, 'add', USER, '--password-stdin'], `${PASSWORD}\n`);
    const out = mdmd(['invite', dir, USER, '--mode', 'pin']);
    invite = { url: (out.match(/^URL: (\S+)/m) || [])[1], pin: (out.match(/^PIN: (\d+)/m) || [])[1] };
    assert.ok(invite.url && invite.pin, `no URL and PIN in the output of mdmd invite:\n${out}`);
    assert.ok(invite.url.startsWith(`${base}/macos/invite/`), invite.url);
  });

  step('renders a clean sign-on form, on a desktop and on a phone', async () => {
    for (const [name, options] of [
      ['desktop', { viewport: { width: 1280, height: 800 } }],
      ['phone', { viewport: { width: 375, height: 667 }, deviceScaleFactor: 2, isMobile: true,
                  hasTouch: true }],
    ]) {
      const { context, page, problems } = await newPage(options);
      try {
        const resp = await page.goto(`${base}/macos/otae`);
        assert.equal(resp.status(), 200, name);
        assert.match(resp.headers()['content-type'], /^text\/html; charset=utf-8/);
        await checkClean(page, resp, problems);
        assert.equal(await page.title(), 'Enroll your Mac');
        const user = page.locator('form input[name=user]');
        const pw = page.locator('form input[name=password]');
        const button = page.locator('form button[type=submit]');
        assert.equal(await pw.getAttribute('type'), 'password');
        assert.equal(await page.locator('input[name=pin]').count(), 0, 'no PIN with auth=domain');
        assert.equal(await page.getByLabel('User name').count(), 1, 'labelled user field');
        assert.equal(await page.getByLabel('Password').count(), 1, 'labelled password field');
        const width = options.viewport.width;
        for (const [what, el] of [['user', user], ['password', pw], ['button', button]]) {
          assert.ok(await el.isVisible(), `${name}: ${what} visible`);
          const box = await el.boundingBox();
          assert.ok(box.x >= 0 && box.x + box.width <= width && box.width >= Math.min(width * 0.6, 250),
                    `${name}: ${what} fits the width (${JSON.stringify(box)})`);
          assert.ok(box.height >= 30, `${name}: ${what} is large enough to tap`);
        }
        const overflow = await page.evaluate(() =>
          document.documentElement.scrollWidth - document.documentElement.clientWidth);
        assert.ok(overflow <= 0, `${name}: no horizontal scrolling (${overflow}px)`);
        await shot(page, `otae-${name}`);
      } finally {
        await context.close();
      }
    }
  });

  step('shows the generic failure message for a wrong password', async () => {
    const { context, page, problems } = await newPage();
    try {
      await page.goto(`${base}/macos/otae`);
      await page.fill('input[name=user]', USER);
      await page.fill('input[name=password]', 'not the password');
      const resp = await submit(page);
      assert.equal(resp.status(), 403);
      const msg = page.locator('.msg[role=alert]');
      assert.ok(await msg.isVisible());
      assert.match(await msg.textContent(), /^Sign-on failed\. Check your user name and password/);
      assert.equal(await page.locator('input[name=password]').inputValue(), '',
                   'the password is not echoed back');
      // The form is there again, still clean.
      assert.ok(await page.locator('input[name=user]').isVisible());
      await checkClean(page, resp, expected(problems, 403));
      await shot(page, 'otae-failed');
    } finally {
      await context.close();
    }
  });

  step('signs on, downloads the profile once, and refuses the link again', async () => {
    const { context, page, problems } = await newPage();
    try {
      await page.goto(`${base}/macos/otae`);
      await page.fill('input[name=user]', USER);
      await page.fill('input[name=password]', PASSWORD);
      const resp = await submit(page);
      const link = await checkReady(page, resp, problems);
      await shot(page, 'ready');
      const bytes = await downloadProfile(page, link);
      assert.equal(bytes[0], 0x30, 'DER: a SEQUENCE');
      // ContentInfo's contentType: id-signedData 1.2.840.113549.1.7.2
      const signedData = Buffer.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]);
      assert.equal(bytes.indexOf(signedData), bytes[1] & 0x80 ? 2 + (bytes[1] & 0x7f) : 2,
                   'a CMS SignedData');
      const text = bytes.toString('latin1');
      assert.ok(text.includes('<plist'), 'the XML plist inside');
      assert.ok(text.includes('com.apple.mdm'), 'the MDM payload');
      assert.ok(text.includes('PayloadContent'), 'PayloadContent');
      assert.ok(text.includes(`${base}/mdm/connect`), 'ServerURL on this server');
      assert.ok(text.includes(TOPIC), 'the push topic');
      assert.equal(new URL(page.url()).pathname, '/zdm/macos/otae', 'the page stays');

      // The same link again: the "no longer valid" page.
      const [again] = await Promise.all([
        page.waitForResponse((r) => /\/macos\/profile\//.test(r.url())),
        link.click(),
      ]);
      await page.waitForLoadState('load');
      assert.equal(again.status(), 410);
      assert.match(await page.locator('h1').textContent(), /no longer valid/);
      await checkClean(page, again, expected(problems, 410));
      await shot(page, 'download-used');
    } finally {
      await context.close();
    }
  });

  step('opens the invitation URL, signs on with the PIN, and then refuses the URL', async () => {
    const { context, page, problems } = await newPage({
      viewport: { width: 375, height: 667 }, isMobile: true, hasTouch: true,
    });
    try {
      let resp = await page.goto(invite.url);
      assert.equal(resp.status(), 200);
      await checkClean(page, resp, problems);
      const user = page.locator('form input[name=user]');
      assert.equal(await user.inputValue(), USER);
      assert.equal(await user.getAttribute('readonly'), '', 'the user name is read-only');
      assert.ok(await user.isVisible());
      assert.equal(await page.locator('input[name=password]').count(), 0, 'mode pin: no password');
      const pin = page.locator('form input[name=pin]');
      assert.ok(await pin.isVisible());
      assert.equal(await pin.getAttribute('inputmode'), 'numeric');
      await shot(page, 'invite');
      await pin.fill(invite.pin);
      resp = await submit(page);
      const link = await checkReady(page, resp, problems);
      const bytes = await downloadProfile(page, link);
      assert.equal(bytes[0], 0x30);
      assert.ok(bytes.toString('latin1').includes('com.apple.mdm'));

      resp = await page.goto(invite.url);
      assert.equal(resp.status(), 410, 'a used invitation');
      assert.match(await page.locator('h1').textContent(), /not valid/);
    } finally {
      await context.close();
    }
  });
});
