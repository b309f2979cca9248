// Not part of CI: a manual check that the dashboard stays responsive while a node fills up
// with N users (default 100,000) over REST heartbeats. Prints the page's worst event-loop
// stall while the users arrive, what the client holds, and how long paging takes.
//   node clients/js/test/scale.manual.mjs [N]
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { BIN, freePort, token } from './support.mjs';

const N = Number(process.argv[2] ?? 100_000);
const SECRET = 'scale-secret-0123456789-0123456789-0123';
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const node = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--set', 'limits.rest_per_second=1000000', '--set', 'limits.rest_burst=1000000'],
  { env: { ...process.env, PRESENCE_AUTH__JWT_SECRET: SECRET, RUST_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((r) => node.stdout.on('data', (d) => String(d).includes('listening') && r()));
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'scale-')), {
  executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1400, height: 1000 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = browser.pages()[0];
await page.goto(url);
await page.fill('#token-input', token('ops', { role: 'admin', secret: SECRET }));
await page.click('#token-submit');
await page.waitForSelector('#conn-state[data-state="open"]');
// The page measures its own event-loop stalls.
await page.evaluate(() => {
  window.worst = 0;
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    window.worst = Math.max(window.worst, now - last - 50);
    last = now;
  }, 50);
});
const service = token('loader', { role: 'service', secret: SECRET });
let next = 0;
const t0 = Date.now();
async function worker() {
  while (next < N) {
    const i = next++;
    const r = await fetch(`${url}/messenger/presence/heartbeat`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${service}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: `u${i}`, zone_id: `z${i % 200}`, org_id: `o${i % 20}`, device: 'web' }),
    });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  }
}
await Promise.all(Array.from({ length: 32 }, worker));
console.log(`${N} users online in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
await page.waitForFunction((n) => Number(document.querySelector('#count-global').dataset.count) === n, N, { timeout: 60000 });
const held = await page.evaluate(() => ({ worst: Math.round(window.worst), users: window.presenced.users.size, stats: window.presenced.stats, rows: document.querySelectorAll('#who-rows tr').length, ticker: document.querySelectorAll('#ticker li').length, zones: document.querySelectorAll('#zones tr').length, heapMB: Math.round((performance.memory?.usedJSHeapSize ?? 0) / 1e6) }));
console.log('while filling:', JSON.stringify(held));
const t1 = Date.now();
const before = await page.getAttribute('#who-rows tr', 'data-user');
await page.click('#who-next');
await page.waitForFunction((b) => document.querySelector('#who-rows tr')?.dataset.user !== b, before);
console.log(`next page shown in ${Date.now() - t1} ms; total shown: ${await page.textContent('#who-total')}`);
await page.screenshot({ path: '/tmp/web-scale/dashboard-100k.png' });
await browser.close();
node.kill('SIGKILL');
