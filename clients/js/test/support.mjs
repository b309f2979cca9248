// Test support: a real presenced node (the debug binary), tokens signed like the node's, REST
// calls, and a Redis for nodes that must share a feed across a restart.

import { spawn, spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(here, '..', '..', '..');
export const BIN = process.env.PRESENCED_BIN ?? join(ROOT, 'target', 'debug', 'presenced');
export const CLIENT_JS = join(ROOT, 'crates', 'presenced', 'assets', 'client.js');
export const SECRET = 'js-test-secret-0123456789-of-32-bytes+';

/** Test timings (as the Rust tests' FAST): transitions happen within a second. */
export const FAST = `
[presence]
away_after = "30s"
offline_grace = "600ms"
sweep_interval = "100ms"
node_lease = "3s"
activity_flush_interval = "50ms"
`;

const b64url = (b) => Buffer.from(b).toString('base64url');

/** An HS256 token signed with `secret`. */
export function token(sub, { role = 'user', org, secret = SECRET, ttlS = 3600 } = {}) {
  const claims = { sub, role, exp: Math.floor(Date.now() / 1000) + ttlS };
  if (org) claims.org_id = org;
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export function unique(tag) {
  return `${tag}_${process.pid}_${randomBytes(3).toString('hex')}`;
}

/** Resolves with `pred()`'s first truthy value, polling every 20 ms; rejects after `ms`. */
export async function until(pred, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** A Redis for the test: PRESENCE_TEST_REDIS_URL, or a private redis-server on a free port. */
export async function redis() {
  if (process.env.PRESENCE_TEST_REDIS_URL) return { url: process.env.PRESENCE_TEST_REDIS_URL, stop() {} };
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'presenced-js-redis-'));
  const r = spawnSync('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--daemonize', 'yes', '--pidfile', join(dir, 'redis.pid')]);
  if (r.status !== 0) throw new Error('no Redis: set PRESENCE_TEST_REDIS_URL or install redis-server');
  await until(() => spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().includes('PONG'), 'redis-server');
  return {
    url: `redis://127.0.0.1:${port}`,
    stop() {
      spawnSync('redis-cli', ['-p', String(port), 'shutdown', 'nosave']);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A node: `presenced serve` with the test secret on `port` (0: any), memory or Redis store. */
export class Node {
  constructor({ port = 0, redisUrl, prefix, extra = '' } = {}) {
    this.port = port;
    this.redisUrl = redisUrl;
    this.prefix = prefix;
    this.extra = extra;
    this.dir = mkdtempSync(join(tmpdir(), 'presenced-js-'));
  }

  async start() {
    const store = this.redisUrl
      ? `[store]\nkind = "redis"\nredis_url = "${this.redisUrl}"\nkey_prefix = "${this.prefix}:"\n`
      : '[store]\nkind = "memory"\n';
    const config = join(this.dir, 'presenced.toml');
    writeFileSync(config, `[server]\nlisten = "127.0.0.1:${this.port}"\n[auth]\njwt_secret = "${SECRET}"\n${store}${FAST}${this.extra}`);
    const env = { ...process.env, RUST_LOG: 'presenced=warn' };
    delete env.PRESENCE_AUTH__JWT_SECRET;
    this.child = spawn(BIN, ['serve', '--config', config], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((_, reject) =>
      this.child.once('exit', (code) => reject(new Error(`presenced exited (${code}) before it listened (${BIN}: cargo build -p presenced)`))),
    );
    const listening = new Promise((resolve) => {
      let out = '';
      this.child.stdout.on('data', (d) => {
        out += d;
        const m = out.match(/presenced listening on http:\/\/([\d.]+):(\d+)/);
        if (m) resolve(Number(m[2]));
      });
    });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('presenced did not listen within 15 s')), 15000);
    });
    try {
      this.port = await Promise.race([listening, exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
    this.child.removeAllListeners('exit');
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  /** kill -9: no 1012, no session closed; the port is free at once. */
  async kill9() {
    const gone = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await gone;
  }

  async stop() {
    if (this.child && this.child.exitCode == null && this.child.signalCode == null) await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async rest(method, path, tok, body) {
    const r = await fetch(this.url + path, {
      method,
      headers: { Authorization: `Bearer ${tok}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }
}
