// The client against real nodes (the debug binary) on one Redis: a kill -9 and restart of the
// node it is connected to loses no event, and a session the service ends is not reopened.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect } from '../../../crates/presenced/assets/client.js';
import { Node, redis, token, unique, until } from './support.mjs';

let store;
before(async () => {
  store = await redis();
});
after(() => store?.stop());

function client(node, sub, options = {}) {
  return connect({ url: node.url, token: token(sub), WebSocket, backoff: { initialMs: 50, maxMs: 500 }, ...options });
}

test('kill -9 and restart of its node: the client reconnects and resumes without losing an event', async (t) => {
  const prefix = unique('jslive');
  const zone = unique('z');
  const a = await new Node({ redisUrl: store.url, prefix }).start();
  const b = await new Node({ redisUrl: store.url, prefix }).start();
  t.after(async () => {
    await a.stop();
    await b.stop();
  });
  const service = token('backend', { role: 'service' });
  const heartbeat = (node, user) => node.rest('POST', '/messenger/presence/heartbeat', service, { user_id: user, zone_id: zone, device: 'web' });

  // The watcher on node A, and a reference on node B that stays connected throughout.
  const watcher = client(a, unique('watcher'));
  const reference = client(b, unique('reference'));
  t.after(() => {
    watcher.close();
    reference.close();
  });
  const seen = [];
  const refSeen = [];
  watcher.on('presence', (e) => seen.push(e.feed_id));
  reference.on('presence', (e) => refSeen.push(e.feed_id));
  await Promise.all([watcher.subscribe({ scopes: [`zone:${zone}`] }), reference.subscribe({ scopes: [`zone:${zone}`] })]);

  const u = [1, 2, 3, 4].map((i) => unique(`u${i}`));
  const lease = await heartbeat(a, u[0]);
  await heartbeat(a, u[1]);
  await until(() => seen.length === 2 && refSeen.length === 2, 'the first two events on both');

  await a.kill9();
  await until(() => watcher.state === 'reconnecting', 'the watcher to notice');
  // While its node is down, the service goes on through node B.
  await heartbeat(b, u[2]);
  await heartbeat(b, u[3]);
  await b.rest('PUT', '/messenger/presence/custom-status', service, { user_id: u[1], kind: 'busy', text: 'Focus' });
  await b.rest('PUT', '/messenger/presence/zone', service, { user_id: u[2], zone_id: unique('elsewhere') });
  await b.rest('DELETE', `/messenger/presence/heartbeat?session_id=${lease.session_id}&user_id=${u[0]}`, service);
  await until(() => refSeen.length === 7, 'the reference to see the five changes made meanwhile');
  assert.equal(seen.length, 2, 'nothing reaches the watcher while its node is down');

  await a.start(); // the same port
  await until(() => seen.length >= 7 && watcher.stats.resumes === 1, 'the watcher to resume');
  await watcher.ping();
  assert.deepEqual(seen, refSeen, 'the same events, in the same order, none twice');
  assert.equal(watcher.stats.resets, 0);
  assert.equal(watcher.stats.connects, 2);
  assert.equal(watcher.users.get(u[1]).custom_status.text, 'Focus');
  assert.equal(watcher.users.get(u[0]).status, 'offline');
});

test('a session the service ends (4011) is not reopened', async (t) => {
  const node = await new Node().start();
  t.after(() => node.stop());
  const user = unique('ended');
  const c = client(node, user);
  t.after(() => c.close());
  await until(() => c.state === 'open', 'open');
  let error;
  c.on('error', (e) => (error = e));
  await node.rest('DELETE', `/messenger/presence/sessions/${user}/${c.sessionId}`, token('backend', { role: 'service' }));
  await until(() => c.state === 'closed', 'closed');
  assert.equal(error.code, 'session_ended');
  assert.equal(error.closeCode, 4011);
  const { sessions } = await node.rest('GET', `/messenger/presence/sessions/${user}`, token(user));
  assert.deepEqual(sessions, []);
});

test('a token the node refuses ends the session instead of retrying', async (t) => {
  const node = await new Node().start();
  t.after(() => node.stop());
  const c = client(node, 'x', { token: token('x', { secret: 'another-secret-0123456789-of-32-bytes' }) });
  t.after(() => c.close());
  let error;
  c.on('error', (e) => (error = e));
  await until(() => c.state === 'closed', 'closed');
  assert.equal(error.code, 'unauthenticated');
});
