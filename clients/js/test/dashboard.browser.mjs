// The dashboard in a real headless browser (Debian's chromium, driven by playwright-core),
// against a live node with `presenced demo` giving it life:
//   - signs in with a token typed into the page;
//   - counts change, busiest zones and the nodes panel fill in;
//   - a user of this script's own appears (ticker and the live first page) and leaves;
//   - the node is killed (-9) and restarted on the same port: the page reconnects, resumes,
//     and live events flow again;
//   - a development node (no secret) offers its own token, and the page goes live with it;
//   - no error in the page (a CSP violation included); a screenshot in target/browser-test/.
// Run from .ci/run (or: node clients/js/test/dashboard.browser.mjs after cargo build).
// Every wait has a timeout, and the whole run has one (HARD_TIMEOUT_MS).

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { BIN, ROOT, freePort, token, until } from './support.mjs';

const HARD_TIMEOUT_MS = 240_000;
const WAIT_MS = 30_000;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUT = join(ROOT, 'target', 'browser-test');
const SECRET = randomBytes(32).toString('hex');

mkdirSync(OUT, { recursive: true });
const hard = setTimeout(() => {
  console.error(`browser test: still running after ${HARD_TIMEOUT_MS} ms; giving up`);
  cleanup().finally(() => process.exit(1));
}, HARD_TIMEOUT_MS);
hard.unref();

const children = new Set();
let context;
let profile;

function log(...a) {
  console.log('browser test:', ...a);
}

/** Starts the binary; resolves when a stdout line matches `ready`. Output goes to OUT/name.log. */
function start(name, args, ready, { devSecret = false } = {}) {
  const logFile = createWriteStream(join(OUT, `${name}.log`), { flags: 'a' });
  const env = { ...process.env, PRESENCE_AUTH__JWT_SECRET: SECRET, RUST_LOG: 'presenced=info,warn' };
  if (devSecret) delete env.PRESENCE_AUTH__JWT_SECRET;
  delete env.RUST_BACKTRACE;
  const child = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.stderr.pipe(logFile);
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${name} not ready within ${WAIT_MS} ms`)), WAIT_MS);
    child.stdout.on('data', (d) => {
      logFile.write(d);
      out += d;
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before it was ready; see ${join(OUT, `${name}.log`)}`));
    });
  });
}

async function startNode(port) {
  // Memory store (the default): a restart loses everything, so the page must resume from
  // a reset. The secret is fixed so tokens (the page's, the demo's) outlive the restart.
  return start('node', ['serve', '--listen', `127.0.0.1:${port}`, '--set', 'presence.offline_grace=1s'], /presenced listening on/);
}

function kill(child, signal = 'SIGKILL') {
  if (!child || child.exitCode != null || child.signalCode != null) return Promise.resolve(child?.exitCode);
  const gone = new Promise((r) => child.once('exit', (code) => r(code)));
  child.kill(signal);
  return gone;
}

async function cleanup() {
  try {
    await context?.close();
  } catch {
    // already gone
  }
  for (const c of children) await kill(c);
  if (profile) rmSync(profile, { recursive: true, force: true });
}

/** A user of the test's own, online until closed. */
async function probe(url, user) {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/messenger/ws?token=${token(user, { secret: SECRET, org: 'probe-org' })}&zone_id=probe-zone&device=mobile`);
  await new Promise((resolve, reject) => {
    ws.once('message', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_, r) => reject(new Error(`probe refused: ${r.statusCode}`)));
  });
  return ws;
}

async function main() {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let node = await startNode(port);
  log(`node on ${url}`);
  const demo = await start('demo', ['demo', '--url', url, '--users', '30', '--report-every', '5s', '--json'], /"event":"started"/);
  log('demo running (30 users)');

  profile = mkdtempSync(join(tmpdir(), 'presenced-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(WAIT_MS);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket connection to .* failed|Failed to load resource/.test(m.text())) {
      problems.push(`console error: ${m.text()}`);
    }
  });

  try {
    // Sign in: not a development node, so no token is offered; the form takes one.
    await page.goto(url + '/');
    await page.waitForSelector('#login:not([hidden])');
    if (await page.isVisible('#dev-offer')) throw new Error('a node with a configured secret offered a development token');
    await page.fill('#token-input', token('ops', { role: 'admin', secret: SECRET }));
    await page.click('#token-submit');
    await page.waitForSelector('#conn-state[data-state="open"]');
    log('signed in, live');

    // Counts change as the demo's users arrive.
    await page.waitForFunction(() => Number(document.querySelector('#count-global').dataset.count) > 0);
    const first = Number(await page.getAttribute('#count-global', 'data-count'));
    await page.waitForFunction((n) => {
      const c = document.querySelector('#count-global').dataset.count;
      return c !== '' && Number(c) !== n;
    }, first);
    log(`global count changed from ${first} to ${await page.getAttribute('#count-global', 'data-count')}`);
    await page.waitForSelector('#zones tr[data-scope]');
    await page.waitForSelector('#orgs tr[data-scope]');
    await page.waitForSelector('#nodes:not([hidden]) #node-rows tr');
    await page.waitForSelector('#who-rows tr[data-user^="demo-"]');

    // A user of our own appears and leaves.
    const user = `probe-${randomBytes(3).toString('hex')}`;
    const ws = await probe(url, user);
    await page.waitForSelector(`#ticker li[data-user="${user}"][data-status="online"]`);
    await page.waitForSelector(`#who-rows tr[data-user="${user}"][data-status="online"]`);
    await page.waitForSelector('#zones tr[data-scope="zone:probe-zone"]');
    log(`${user} appeared`);
    ws.close();
    await page.waitForSelector(`#ticker li[data-user="${user}"][data-status="offline"]`);
    await page.waitForSelector(`#who-rows tr[data-user="${user}"]`, { state: 'detached' });
    log(`${user} left`);

    // kill -9 and a restart on the same port: the page reconnects and resumes.
    await kill(node);
    await page.waitForSelector('#conn-state[data-state="reconnecting"]');
    log('node killed; the page is reconnecting');
    node = await startNode(port);
    await page.waitForSelector('#conn-state[data-state="open"]');
    await page.waitForSelector('#conn-detail[data-connects="2"]');
    await page.waitForFunction(() => Number(document.querySelector('#conn-detail').dataset.resumes) >= 1);
    const resets = await page.getAttribute('#conn-detail', 'data-resets');
    log(`reconnected and resumed (resets: ${resets}: the memory store started its feed afresh)`);
    // Live again: the demo's users come back, and a new user of ours shows.
    await page.waitForFunction(() => Number(document.querySelector('#count-global').dataset.count) > 0);
    const again = `probe-${randomBytes(3).toString('hex')}`;
    const ws2 = await probe(url, again);
    await page.waitForSelector(`#ticker li[data-user="${again}"][data-status="online"]`);
    log(`${again} appeared after the restart`);
    await until(async () => (await page.$$('#who-rows tr[data-user^="demo-"]')).length > 0, 'demo users listed after the restart', WAIT_MS);
    ws2.close();

    await page.screenshot({ path: join(OUT, 'dashboard.png'), fullPage: true });
    log(`screenshot: ${join(OUT, 'dashboard.png')}`);
    if (problems.length) throw new Error(`the page reported:\n  ${problems.join('\n  ')}`);

    // A development node (no secret configured) offers its own token, and the page uses it.
    const devPort = await freePort();
    await start('dev-node', ['serve', '--listen', `127.0.0.1:${devPort}`], /presenced listening on/, { devSecret: true });
    const dev = await context.newPage();
    dev.setDefaultTimeout(WAIT_MS);
    dev.on('pageerror', (e) => problems.push(`page error (dev): ${e.message}`));
    await dev.goto(`http://127.0.0.1:${devPort}/`);
    await dev.waitForSelector('#dev-offer:not([hidden])');
    await dev.click('#dev-token');
    await dev.waitForSelector('#conn-state[data-state="open"]');
    await dev.waitForSelector('#count-global[data-count="0"]'); // its own session is invisible
    log('a development node offered its token, and the page went live with it');
    if (problems.length) throw new Error(`the page reported:\n  ${problems.join('\n  ')}`);

    // The demo stops cleanly on SIGTERM, with exit code 0.
    const code = await kill(demo, 'SIGTERM');
    if (code !== 0) throw new Error(`presenced demo exited with ${code} on SIGTERM`);
  } catch (e) {
    await page.screenshot({ path: join(OUT, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
    throw e;
  }
}

main().then(
  async () => {
    await cleanup();
    clearTimeout(hard);
    log('passed');
  },
  async (e) => {
    console.error('browser test FAILED:', e?.stack ?? e);
    console.error(`logs and screenshots: ${OUT}`);
    await cleanup();
    process.exit(1);
  },
);
