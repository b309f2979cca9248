// A fake node for the client's unit tests: a WebSocket server at /messenger/ws that records
// what the client sends and sends what a test tells it, and the one REST route the client
// asks when a connect fails (/messenger/presence/count).

import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import { until } from './support.mjs';

export function view(userId, version, status = 'online', extra = {}) {
  return {
    user_id: String(userId), status, away_reason: null, last_activity: '2026-01-01T00:00:00.000Z',
    last_seen: null, zone_id: '1', org_id: null, devices: ['web'], custom_status: null, metadata: null,
    invisible: false, privacy: null, version, updated_at: '2026-01-01T00:00:00.000Z', ...extra,
  };
}

export function event(feedId, v, prevStatus = 'offline') {
  return { type: 'presence', feed_id: feedId, user: v, prev_status: prevStatus, prev_zone_id: null, prev_org_id: null, ts: '2026-01-01T00:00:00.000Z' };
}

export class FakeNode {
  constructor() {
    this.connections = [];
    this.upgrades = 0;
    /** When set, upgrades are refused with this HTTP status and REST answers it too. */
    this.refuse = null;
    this.http = createServer((req, res) => {
      const status = this.refuse ?? 200;
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(status === 200 ? '{"global":0,"zone":null,"org":null}' : '{"error":{"code":"unauthenticated","message":"bad signature"}}');
    });
    this.wss = new WebSocketServer({ noServer: true });
    this.http.on('upgrade', (req, socket, head) => {
      this.upgrades += 1;
      if (this.refuse) {
        socket.end(`HTTP/1.1 ${this.refuse} Refused\r\nContent-Length: 0\r\n\r\n`);
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this._accept(ws, req));
    });
  }

  async start() {
    await new Promise((r) => this.http.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${this.http.address().port}`;
    return this;
  }

  _accept(ws, req) {
    const conn = { ws, url: new URL(req.url, this.url), frames: [], n: this.connections.length + 1 };
    ws.on('message', (data) => {
      const f = JSON.parse(String(data));
      conn.frames.push(f);
      if (f.type === 'ping') ws.send(JSON.stringify({ type: 'pong', id: f.id ?? null }));
    });
    this.connections.push(conn);
    this.send(conn, { type: 'system', event: 'connected', session_id: `s${conn.n}`, node_id: 'fake', presence: view('me', 1) });
  }

  send(conn, frame) {
    conn.ws.send(JSON.stringify(frame));
  }

  /** The n-th connection (1-based), once it is there. */
  connection(n) {
    return until(() => this.connections[n - 1], `connection ${n}`);
  }

  /** The first frame on `conn` matching `pred` not taken before. */
  async frame(conn, pred, what = 'a frame') {
    conn.taken ??= new Set();
    return until(() => {
      const i = conn.frames.findIndex((f, i) => !conn.taken.has(i) && pred(f));
      if (i < 0) return null;
      conn.taken.add(i);
      return conn.frames[i];
    }, what);
  }

  /** Answers the next subscribe on `conn` with a snapshot; returns the subscribe frame. */
  async answerSubscribe(conn, { feedId, reset = false, scopes = {}, users = {} }) {
    const sub = await this.frame(conn, (f) => f.type === 'subscribe', 'a subscribe');
    this.send(conn, { type: 'snapshot', id: sub.id, feed_id: feedId, reset, scopes, users });
    return sub;
  }

  async stop() {
    for (const c of this.connections) c.ws.terminate();
    this.wss.close();
    await new Promise((r) => this.http.close(r));
  }
}
