// The client's own logic against a fake node: version ordering, resume and reset, close
// codes, backoff, throttled activity, the frames it writes. (client.live.test.mjs runs it
// against the real node.)

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect, Backoff, PresenceMap, ACTIVITY_INTERVAL_MS } from '../../../crates/presenced/assets/client.js';
import { FakeNode, view, event } from './fake.mjs';
import { until } from './support.mjs';

let node;
let clients;

beforeEach(async () => {
  node = await new FakeNode().start();
  clients = [];
});

afterEach(async () => {
  for (const c of clients) c.close();
  await node.stop();
});

function open(options = {}) {
  const c = connect({ url: node.url, token: 't', WebSocket, backoff: { initialMs: 10, maxMs: 50 }, pingIntervalMs: 0, ...options });
  clients.push(c);
  return c;
}

const isOpen = (c) => () => c.state === 'open';

test('events at or below the version held are dropped; newer ones pass and are kept', async () => {
  const c = open();
  const seen = [];
  c.on('presence', (e, v) => seen.push(`${v.user_id}${v.version}`));
  await until(isOpen(c), 'open');
  const sub = c.subscribe({ scopes: ['zone:1'] });
  const conn = await node.connection(1);
  await node.answerSubscribe(conn, { feedId: '10-0', scopes: { 'zone:1': { count: 1, users: [view('a', 5)], next_cursor: null } } });
  await sub;
  for (const [f, v] of [['11-0', view('a', 4)], ['12-0', view('a', 5)], ['13-0', view('a', 6)], ['14-0', view('b', 1)], ['15-0', view('b', 1)], ['16-0', view('a', 6)]]) {
    node.send(conn, event(f, v));
  }
  await c.ping(); // the pong comes after every event above
  assert.deepEqual(seen, ['a6', 'b1']);
  assert.equal(c.users.get('a').version, 6);
  assert.equal(c.stats.dropped, 4);
  assert.equal(c.lastFeedId, '16-0', 'dropped events still move the resume point');
  assert.equal(c.counts.get('zone:1'), 1);
});

test('a record started again (lower version, later updated_at) passes', async () => {
  const m = new PresenceMap();
  assert.ok(m.admit(view('a', 7, 'offline', { updated_at: '2026-01-01T00:00:00.000Z' })));
  assert.ok(!m.admit(view('a', 1, 'online', { updated_at: '2025-12-01T00:00:00.000Z' })));
  assert.ok(m.admit(view('a', 1, 'online', { updated_at: '2026-03-01T00:00:00.000Z' })));
  assert.equal(m.get('a').version, 1);
});

test('after a dropped connection it resubscribes with after = the last feed id and passes the replay', async () => {
  const c = open();
  const seen = [];
  c.on('presence', (e, v) => seen.push(`${v.user_id}${v.version}@${e.feed_id}`));
  await until(isOpen(c), 'open');
  const sub = c.subscribe({ scopes: ['zone:1'], users: ['x'] });
  const first = await node.connection(1);
  const s1 = await node.answerSubscribe(first, { feedId: '10-0', scopes: { 'zone:1': { count: 1, users: [view('a', 1)], next_cursor: null } }, users: { x: null } });
  assert.equal(s1.after, undefined, 'a first subscribe has no after');
  await sub;
  node.send(first, event('11-0', view('a', 2)));
  node.send(first, event('12-0', view('b', 1)));
  await c.ping();
  first.ws.terminate(); // the network drops: no close frame
  const second = await node.connection(2);
  // The resumed snapshot shows the present (a3, b2); the replay brings what came meanwhile.
  const s2 = await node.answerSubscribe(second, {
    feedId: '12-0',
    scopes: { 'zone:1': { count: 2, users: [view('a', 3), view('b', 2)], next_cursor: null } },
    users: { x: null },
  });
  assert.equal(s2.after, '12-0');
  assert.deepEqual([...s2.scopes].sort(), ['zone:1']);
  assert.deepEqual(s2.users, ['x']);
  node.send(second, event('13-0', view('a', 3)));
  node.send(second, event('14-0', view('b', 2)));
  await until(isOpen(c), 'open again');
  await until(() => c.stats.resumes === 1, 'the resume to finish');
  await c.ping();
  assert.deepEqual(seen, ['a2@11-0', 'b1@12-0', 'a3@13-0', 'b2@14-0']);
  assert.equal(c.stats.resets, 0);
  assert.equal(c.stats.connects, 2);
});

test('a reset snapshot replaces the local state', async () => {
  const c = open();
  let resets = 0;
  c.on('reset', () => resets++);
  await until(isOpen(c), 'open');
  const sub = c.subscribe({ scopes: ['zone:1'] });
  const first = await node.connection(1);
  await node.answerSubscribe(first, { feedId: '10-0', scopes: { 'zone:1': { count: 2, users: [view('a', 5), view('b', 3)], next_cursor: null } } });
  await sub;
  node.send(first, event('11-0', view('c', 1)));
  await c.ping();
  assert.equal(c.users.size, 3);
  first.ws.close(4010, 'feed reset; reconnect and resume');
  const second = await node.connection(2);
  const s = await node.answerSubscribe(second, { feedId: '1-0', reset: true, scopes: { 'zone:1': { count: 1, users: [view('a', 1)], next_cursor: null } } });
  assert.equal(s.after, '11-0');
  await until(() => resets === 1, 'the reset');
  assert.deepEqual([...c.users.values()].map((v) => `${v.user_id}${v.version}`), ['a1']);
  assert.equal(c.lastFeedId, '1-0');
  const seen = [];
  c.on('presence', (e, v) => seen.push(`${v.user_id}${v.version}`));
  node.send(second, event('2-0', view('a', 2)));
  await c.ping();
  assert.deepEqual(seen, ['a2'], 'versions that started again pass');
});

for (const [code, name] of [[4011, 'session_ended'], [4009, 'conflict'], [1009, 'payload_too_large']]) {
  test(`close ${code} ends the session for good (${name})`, async () => {
    const c = open();
    const states = [];
    c.on('state', (s) => states.push(s.state));
    await until(isOpen(c), 'open');
    (await node.connection(1)).ws.close(code, 'bye');
    await until(() => c.state === 'closed', 'closed');
    assert.equal(states.at(-1), 'closed');
    assert.ok(!states.includes('reconnecting'), `${states}`);
    await assert.rejects(c.ping(), { code: 'unavailable' });
  });
}

test('close 1012 (node restarting) reconnects', async () => {
  const c = open();
  await until(isOpen(c), 'open');
  (await node.connection(1)).ws.close(1012, 'node restarting');
  await node.connection(2);
  await until(() => c.stats.connects === 2, 'the second connect');
});

test('4001 ends a session with a fixed token; a token function gets a fresh one', async () => {
  const fixed = open();
  await until(isOpen(fixed), 'open');
  (await node.connection(1)).ws.close(4001, 'token expired');
  await until(() => fixed.state === 'closed', 'closed');
  let n = 0;
  const renewing = open({ token: async () => `fresh${++n}` });
  await until(isOpen(renewing), 'open');
  const c2 = await node.connection(2);
  assert.equal(c2.url.searchParams.get('token'), 'fresh1');
  c2.ws.close(4001, 'token expired');
  const c3 = await node.connection(3);
  assert.equal(c3.url.searchParams.get('token'), 'fresh2');
});

test('a refused token (401 before the upgrade) is not retried; an unreachable node is', async () => {
  node.refuse = 401;
  const c = open();
  let error;
  c.on('error', (e) => (error = e));
  await until(() => c.state === 'closed', 'closed');
  assert.equal(error.code, 'unauthenticated');
  assert.equal(node.upgrades, 1);
  // A 503 (node full) is worth retrying.
  node.refuse = 503;
  const d = open();
  await until(() => node.upgrades >= 3, 'retries');
  assert.notEqual(d.state, 'closed');
});

test('the connect URL carries zone, org, device and invisible; setZone is kept for reconnects', async () => {
  const c = open({ zoneId: 10, orgId: 'acme', device: 'desktop', invisible: true });
  await until(isOpen(c), 'open');
  const first = await node.connection(1);
  const q = first.url.searchParams;
  assert.deepEqual([q.get('zone_id'), q.get('org_id'), q.get('device'), q.get('invisible')], ['10', 'acme', 'desktop', 'true']);
  const moved = c.setZone(11);
  const f = await node.frame(first, (f) => f.type === 'zone.set');
  node.send(first, { type: 'ack', id: f.id });
  await moved;
  first.ws.terminate();
  const second = await node.connection(2);
  assert.equal(second.url.searchParams.get('zone_id'), '11');
});

test('requests resolve on their ack, reject on their error, and write the protocol fields', async () => {
  const c = open();
  await until(isOpen(c), 'open');
  const conn = await node.connection(1);
  const away = c.setStatus('away', { invisible: false });
  const f1 = await node.frame(conn, (f) => f.type === 'status.set');
  assert.deepEqual(f1, { type: 'status.set', status: 'away', invisible: false, id: f1.id });
  node.send(conn, { type: 'ack', id: f1.id });
  await away;
  const cs = c.setCustomStatus({ kind: 'in_meeting', text: 'Standup', emoji: '📅', expiresAt: new Date(Date.UTC(2030, 0, 1)) });
  const f2 = await node.frame(conn, (f) => f.type === 'custom_status.set');
  assert.deepEqual(f2, { type: 'custom_status.set', kind: 'in_meeting', text: 'Standup', emoji: '📅', expires_at: '2030-01-01T00:00:00.000Z', id: f2.id });
  node.send(conn, { type: 'error', id: f2.id, code: 'invalid_argument', message: 'no' });
  await assert.rejects(cs, { code: 'invalid_argument', message: 'no' });
  const clear = c.setCustomStatus(null);
  const f3 = await node.frame(conn, (f) => f.type === 'custom_status.clear');
  node.send(conn, { type: 'ack', id: f3.id });
  await clear;
  assert.equal(c.typing('c1'), true);
  assert.equal(c.typing('c1'), false, 'a renewal within TYPING_RENEW_MS sends nothing');
  assert.equal(c.typing('c1', false), true);
  await c.ping();
  const typing = conn.frames.filter((f) => f.type.startsWith('typing'));
  assert.deepEqual(typing, [{ type: 'typing.start', conversation_id: 'c1' }, { type: 'typing.stop', conversation_id: 'c1' }]);
});

test('activity goes out at most once per ACTIVITY_INTERVAL_MS', async () => {
  let now = 1000;
  const c = open({ now: () => now });
  await until(isOpen(c), 'open');
  const conn = await node.connection(1);
  const sent = [];
  for (const dt of [0, 1, 500, ACTIVITY_INTERVAL_MS - 1]) {
    now = 1000 + dt;
    sent.push(c.activity());
  }
  now = 1000 + ACTIVITY_INTERVAL_MS;
  sent.push(c.activity());
  sent.push(c.activity());
  await c.ping();
  assert.deepEqual(sent, [true, false, false, false, true, false]);
  assert.equal(conn.frames.filter((f) => f.type === 'activity').length, 2);
});

test('counts-only subscriptions carry scopes only and follow count frames', async () => {
  const c = open();
  await until(isOpen(c), 'open');
  const conn = await node.connection(1);
  const counts = [];
  c.on('count', (u) => counts.push(`${u.scope}=${u.count}`));
  const sub = c.subscribe({ scopes: ['global'], countsOnly: true });
  const f = await node.answerSubscribe(conn, { feedId: '5-0', scopes: { global: { count: 3, users: [], next_cursor: null } } });
  assert.deepEqual(f, { type: 'subscribe', scopes: ['global'], counts_only: true, id: f.id });
  await sub;
  node.send(conn, { type: 'count', scope: 'global', count: 4 });
  await c.ping();
  assert.deepEqual(counts, ['global=3', 'global=4']);
  assert.equal(c.counts.get('global'), 4);
  conn.ws.terminate();
  const again = await node.frame(await node.connection(2), (f) => f.type === 'subscribe');
  assert.equal(again.counts_only, true);
  assert.equal(again.after, undefined, 'counts-only subscriptions do not resume');
});

test('backoff doubles from initialMs to maxMs, jittered within [d/2, d], and resets', () => {
  const hi = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 1 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => hi.next()), [100, 200, 400, 800, 1000, 1000]);
  const lo = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => lo.next()), [50, 100, 200, 400, 500]);
  lo.reset();
  assert.equal(lo.next(), 50);
  assert.throws(() => new Backoff({ initialMs: 0 }));
});

test('the presence map holds at most max users, the least recently changed going first', () => {
  const m = new PresenceMap(2);
  m.admit(view('a', 1));
  m.admit(view('b', 1));
  m.admit(view('a', 2)); // a changed last: b is now the oldest
  m.admit(view('c', 1));
  assert.deepEqual([...m.values()].map((v) => v.user_id), ['a', 'c']);
});

test('an unanswered ping drops a silent connection, not one that still speaks', async () => {
  const c = open({ pingIntervalMs: 50, requestTimeoutMs: 100 });
  await until(isOpen(c), 'open');
  const first = await node.connection(1);
  // Pings go unanswered, each met by a rate_limited error with no id (what the node sends when
  // its rate limit drops a frame): the connection still speaks, and is kept.
  first.ws.removeAllListeners('message');
  let pings = 0;
  first.ws.on('message', (d) => {
    if (JSON.parse(String(d)).type !== 'ping') return;
    pings += 1;
    node.send(first, { type: 'error', id: null, code: 'rate_limited', message: 'too many frames; slow down' });
  });
  await until(() => pings >= 4, 'four unanswered pings');
  assert.equal(node.connections.length, 1, 'a connection that still speaks is kept');
  // Silent now: an unanswered ping drops it, and the client reconnects.
  first.ws.removeAllListeners('message');
  await node.connection(2);
  await until(() => c.stats.connects === 2, 'the reconnect');
});
