// presenced client: one WebSocket session of a user (docs/protocol.md), served by
// every node at /client.js. An ES module with no dependencies and no build step; types in
// /client.d.ts.
//
//   import { connect } from '/client.js';
//   const p = connect({ token, zoneId: '10' });
//   p.on('presence', (event, view) => console.log(view.user_id, view.status));
//   await p.subscribe({ scopes: ['zone:10'] });
//   p.activity();
//
// What it does for you:
// - reconnects with exponential backoff and jitter, and resubscribes with `after` = the last
//   feed id it saw, so a reconnect within the feed's window loses no event; a snapshot with
//   `reset: true` (the id aged out, the store lost its data) replaces the local state;
// - keeps a local map of the views it was shown, ordered by `version`: an event whose version
//   is not above the one held is dropped (repeats, stale replays);
// - stops for good on the close codes that a retry cannot cure (4009 too many sessions, 4011
//   the service ended the session, 1009, and 4001 when the token is a fixed string), and when
//   the node refuses the token (checked over REST after a failed connect, since a browser
//   WebSocket cannot see the 401).

/** Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes"). */
const FINAL_CLOSES = new Map([
  [1009, 'payload_too_large'], // a frame over frame_bytes: a bug here, not a blip
  [4003, 'permission_denied'],
  [4009, 'conflict'], // too many sessions for this user
  [4011, 'session_ended'], // the service ended this session: never come back on our own
]);
/** The token expired: final for a fixed token, retried when `token` is a function. */
const TOKEN_EXPIRED = 4001;
/** Our own close (close() or a dead connection we dropped). */
const CLIENT_CLOSE = 4000;

/** An activity frame goes out at most this often (the node needs about one a second). */
export const ACTIVITY_INTERVAL_MS = 1000;
/** `typing(conversation)` renews the indicator this often while the user types (< typing_ttl 6 s). */
export const TYPING_RENEW_MS = 3000;
/** ... and stops it this long after the last keystroke. */
export const TYPING_IDLE_MS = 5000;

/** An error from the node or the session: `code` is a REST code of the README, `invalid_frame`,
 * `unavailable` (not connected, or the connection was lost) or `session_ended`. */
export class PresenceError extends Error {
  constructor(code, message, closeCode) {
    super(message);
    this.name = 'PresenceError';
    this.code = code;
    this.closeCode = closeCode ?? null;
  }
}

/** Exponential backoff with jitter: the n-th wait in a row is drawn uniformly from [d/2, d]
 * with d = min(max, initial * 2^n), so clients dropped together by a node restart do not all
 * come back in the same millisecond. `reset()` after a connection that worked. */
export class Backoff {
  constructor({ initialMs = 500, maxMs = 30000, random = Math.random } = {}) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) throw new RangeError('backoff needs 0 < initialMs <= maxMs');
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.attempt = 0;
    this._random = random;
  }
  next() {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 32));
    this.attempt += 1;
    return ceiling / 2 + this._random() * (ceiling / 2);
  }
  reset() {
    this.attempt = 0;
  }
}

/** Per user, the newest view seen, in least-recently-changed order, at most `max` users.
 * `admit` lets a view in only if its version is above the one held (SPEC §4), with one
 * exception: a record deleted after last_seen_retention starts again at version 1, and a view
 * with a lower version but a later `updated_at` is such a new record. */
export class PresenceMap {
  constructor(max = 10000) {
    this.max = max;
    this._views = new Map();
  }
  get size() {
    return this._views.size;
  }
  get(userId) {
    return this._views.get(String(userId));
  }
  has(userId) {
    return this._views.has(String(userId));
  }
  values() {
    return this._views.values();
  }
  /** Whether `view` is newer than what is held of its user; keeps it if so. */
  admit(view) {
    const id = String(view.user_id);
    const held = this._views.get(id);
    if (held !== undefined) {
      const newerRecord =
        view.version < held.version &&
        view.updated_at != null &&
        held.updated_at != null &&
        Date.parse(view.updated_at) > Date.parse(held.updated_at);
      if (view.version <= held.version && !newerRecord) return false;
      this._views.delete(id); // re-inserted last: the map is in order of last change
    }
    this._views.set(id, view);
    while (this._views.size > this.max) {
      // The user unchanged the longest goes; what it costs is that a very late repeat of
      // their events would be let in again.
      this._views.delete(this._views.keys().next().value);
    }
    return true;
  }
  clear() {
    this._views.clear();
  }
}

function asList(v) {
  if (v == null) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

function httpBase(url) {
  const u = new URL(url);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  if (u.protocol === 'wss:') u.protocol = 'https:';
  u.pathname = u.pathname.replace(/\/messenger\/ws\/?$/, '').replace(/\/+$/, '');
  u.search = '';
  u.hash = '';
  return u.toString().replace(/\/+$/, '');
}

/** One user's session with a node. Create it with {@link connect}. */
export class PresenceClient {
  constructor(options = {}) {
    const loc = globalThis.location;
    const url = options.url ?? (loc ? loc.origin : undefined);
    if (!url) throw new TypeError('connect() needs url (the node, e.g. http://127.0.0.1:8000)');
    if (options.token == null) throw new TypeError('connect() needs a token (a string, or a function returning one)');
    this.baseUrl = httpBase(url);
    this.options = options;
    this.zoneId = options.zoneId ?? null;
    this.orgId = options.orgId ?? null;
    this.device = options.device ?? 'web';
    this.invisible = options.invisible ?? false;
    this.users = new PresenceMap(options.maxUsers ?? 10000);
    /** scope → count, for the scopes followed (events or counts only). */
    this.counts = new Map();
    /** conversation → Set of user ids typing there now (conversations followed only). */
    this.typingNow = new Map();
    /** The user's own view, from the `connected` frame. */
    this.me = null;
    this.sessionId = null;
    this.nodeId = null;
    this.state = 'idle';
    /** The feed id events resume from (null until the first snapshot). */
    this.lastFeedId = null;
    this.stats = { connects: 0, resumes: 0, resets: 0, dropped: 0, events: 0 };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') throw new TypeError('no WebSocket: pass options.WebSocket');
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._now = options.now ?? (() => Date.now());
    this._backoff = new Backoff(options.backoff);
    this._requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this._pingIntervalMs = options.pingIntervalMs ?? 25000;
    this._listeners = new Map();
    this._scopes = new Set();
    this._followedUsers = new Set();
    this._conversations = new Set();
    this._countScopes = new Set();
    this._pending = new Map();
    this._resumeIds = new Set();
    this._waitingForOpen = [];
    this._nextId = 1;
    this._ws = null;
    this._closed = false;
    this._timer = null;
    this._pinger = null;
    this._lastActivity = -Infinity;
    /** Frames received: the pinger tells a dead connection from a busy one by it. */
    this._lastHeard = 0;
    this._typing = new Map();
    this._token = null;
    this._autoActivity = null;
    if (options.autoActivity) this.autoActivity(options.autoActivity === true ? undefined : options.autoActivity);
    this._open();
  }

  // -- listeners ---------------------------------------------------------------------------

  /** Calls `fn` on 'presence' (event, view), 'typing' ({conversation_id, user_id, typing}),
   * 'count' ({scope, count}), 'reset' (snapshot), 'snapshot' (snapshot), 'state' (info) or
   * 'error' (PresenceError). Returns a function that removes it. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }
  _emit(type, ...args) {
    for (const fn of this._listeners.get(type) ?? []) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's bug must not break the session.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
  _setState(state, extra = {}) {
    this.state = state;
    this._emit('state', { state, ...extra });
  }

  // -- the connection ----------------------------------------------------------------------

  async _tokenNow() {
    const t = this.options.token;
    return typeof t === 'function' ? await t() : t;
  }

  async _open() {
    if (this._closed) return;
    this._setState(this.stats.connects === 0 && this._backoff.attempt === 0 ? 'connecting' : 'reconnecting', {
      attempt: this._backoff.attempt,
    });
    let token;
    try {
      token = await this._tokenNow();
    } catch (e) {
      return this._retryOrStop(new PresenceError('unauthenticated', `no token: ${e?.message ?? e}`), null);
    }
    if (this._closed) return;
    this._token = token;
    const u = new URL(this.baseUrl + '/messenger/ws');
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('token', token);
    if (this.zoneId != null) u.searchParams.set('zone_id', String(this.zoneId));
    if (this.orgId != null) u.searchParams.set('org_id', String(this.orgId));
    u.searchParams.set('device', this.device);
    if (this.invisible) u.searchParams.set('invisible', 'true');
    let ws;
    try {
      ws = new this._WebSocket(u.toString());
    } catch (e) {
      return this._retryOrStop(new PresenceError('unavailable', `cannot open a WebSocket: ${e?.message ?? e}`), null);
    }
    this._ws = ws;
    let hello = false;
    ws.onmessage = (m) => {
      if (this._ws !== ws) return;
      this._lastHeard += 1;
      let frame;
      try {
        frame = JSON.parse(typeof m.data === 'string' ? m.data : String(m.data));
      } catch {
        return;
      }
      if (frame.type === 'system' && frame.event === 'connected') hello = true;
      this._dispatch(frame);
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._connectionLost(e.code, e.reason, hello);
    };
    ws.onerror = () => {
      // A close event always follows; it decides.
    };
  }

  _connectionLost(code, reason, hadHello) {
    clearInterval(this._pinger);
    this._pinger = null;
    this._failPending(new PresenceError('unavailable', `connection lost (${code}${reason ? ` ${reason}` : ''})`, code));
    for (const t of this._typing.values()) clearTimeout(t.stop);
    this._typing.clear();
    if (this._closed) return;
    if (FINAL_CLOSES.has(code)) {
      return this._stop(new PresenceError(FINAL_CLOSES.get(code), `closed ${code}: ${reason || 'do not reconnect'}`, code));
    }
    if (code === TOKEN_EXPIRED && typeof this.options.token !== 'function') {
      return this._stop(new PresenceError('unauthenticated', 'the token expired (4001); connect again with a new one', code));
    }
    const error = new PresenceError('unavailable', `closed ${code}${reason ? `: ${reason}` : ''}`, code);
    if (!hadHello) {
      // Refused before the upgrade (401, 403, 400) or never reached: a browser cannot tell,
      // so ask the node over REST whether the token is the problem.
      return this._checkRefusal().then(
        (refused) => (refused ? this._stop(refused) : this._retryOrStop(error, code)),
        () => this._retryOrStop(error, code),
      );
    }
    this._retryOrStop(error, code);
  }

  async _checkRefusal() {
    if (!this._fetch || this._token == null) return null;
    let r;
    try {
      r = await this._fetch(this.baseUrl + '/messenger/presence/count', {
        headers: { Authorization: `Bearer ${this._token}` },
      });
    } catch {
      return null; // the node is not there: retry
    }
    if (r.status === 401 && typeof this.options.token !== 'function') {
      return new PresenceError('unauthenticated', 'the node refused the token (401)', null);
    }
    if (r.status === 403 || r.status === 400) {
      // 403: another org under tenant isolation; 400: bad zone, org or device.
      const body = await r.json().catch(() => null);
      return new PresenceError(body?.error?.code ?? 'invalid_argument', body?.error?.message ?? `refused (${r.status})`, null);
    }
    return null;
  }

  _retryOrStop(error, code) {
    if (this._closed) return;
    const max = this.options.maxRetries ?? Infinity;
    if (this._backoff.attempt >= max) return this._stop(error);
    const delay = this._backoff.next();
    this._setState('reconnecting', { attempt: this._backoff.attempt, delay, code, error });
    this._timer = setTimeout(() => {
      this._timer = null;
      this._open();
    }, delay);
  }

  _stop(error) {
    this._closed = true;
    this._failPending(error);
    for (const w of this._waitingForOpen.splice(0)) w.reject(error);
    this._setState('closed', { error, code: error?.closeCode ?? null });
    if (error) this._emit('error', error);
  }

  /** Ends the session for good (the user goes offline after the node's grace if it was their
   * last). */
  close() {
    if (this._closed) return;
    clearTimeout(this._timer);
    this.autoActivity(false);
    const ws = this._ws;
    this._ws = null;
    this._stop(null);
    clearInterval(this._pinger);
    for (const t of this._typing.values()) clearTimeout(t.stop);
    this._typing.clear();
    if (ws) {
      try {
        ws.close(1000, 'bye');
      } catch {
        // already closing
      }
    }
  }

  /** Drops the connection as a network failure would: the session reconnects and resumes.
   * (For tests and for "reconnect now" buttons.) */
  reconnect() {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    try {
      ws.close(CLIENT_CLOSE, 'reconnecting');
    } catch {
      // already closing
    }
    this._connectionLost(1006, 'dropped by the client', true);
  }

  _onConnected(frame) {
    this.me = frame.presence;
    this.sessionId = frame.session_id;
    this.nodeId = frame.node_id;
    const resuming = this.stats.connects > 0;
    this.stats.connects += 1;
    this._backoff.reset();
    this._setState('open', { sessionId: this.sessionId, nodeId: this.nodeId, resumed: resuming });
    clearInterval(this._pinger);
    if (this._pingIntervalMs > 0) {
      // A browser answers the node's pings by itself but cannot see a connection that died
      // without a close (a laptop lid, a NAT timeout): an unanswered ping tells.
      this._pinger = setInterval(() => {
        const sentAt = this._lastHeard;
        this.ping().catch((e) => {
          // No pong: dead only if nothing at all came meanwhile (a ping the node's rate limit
          // dropped gets no pong, but the connection still speaks).
          if (e.code === 'unavailable' && this._lastHeard === sentAt) this.reconnect();
        });
      }, this._pingIntervalMs);
    }
    this._resubscribe(resuming);
  }

  _resubscribe(resuming) {
    const waiting = this._waitingForOpen.splice(0);
    const sent = [];
    if (this._scopes.size || this._followedUsers.size || this._conversations.size) {
      const frame = {
        type: 'subscribe',
        scopes: [...this._scopes],
        users: [...this._followedUsers],
        conversations: [...this._conversations],
      };
      const after = resuming && this.lastFeedId != null;
      if (after) frame.after = this.lastFeedId;
      sent.push(this._request(frame, { resume: after }));
    }
    if (this._countScopes.size) {
      sent.push(this._request({ type: 'subscribe', scopes: [...this._countScopes], counts_only: true }));
    }
    Promise.all(sent).then(
      (snaps) => {
        if (resuming) this.stats.resumes += 1;
        for (const w of waiting) w.resolve(snaps[0] ?? null);
      },
      (e) => {
        for (const w of waiting) w.reject(e);
        // A resume the node could not answer (its store unavailable): drop and try again.
        // (A lost connection is already being retried; any other refusal is reported.)
        if (e.code === 'unavailable' && this._ws) this.reconnect();
        else if (e.code !== 'unavailable') this._emit('error', e);
      },
    );
  }

  // -- frames from the node ------------------------------------------------------------------

  _dispatch(frame) {
    switch (frame.type) {
      case 'system':
        if (frame.event === 'connected') this._onConnected(frame);
        return;
      case 'presence':
        return this._onEvent(frame);
      case 'count':
        this.counts.set(frame.scope, frame.count);
        this._emit('count', { scope: frame.scope, count: frame.count });
        return;
      case 'typing':
        return this._onTyping(frame);
      case 'snapshot':
        this._onSnapshot(frame);
        break;
      default:
        break;
    }
    if (frame.id != null && this._pending.has(String(frame.id))) {
      const p = this._pending.get(String(frame.id));
      this._pending.delete(String(frame.id));
      clearTimeout(p.timer);
      if (frame.type === 'error') p.reject(new PresenceError(frame.code, frame.message));
      else p.resolve(frame);
    } else if (frame.type === 'error') {
      this._emit('error', new PresenceError(frame.code, frame.message));
    }
  }

  _onEvent(event) {
    this.lastFeedId = event.feed_id;
    if (!this.users.admit(event.user)) {
      this.stats.dropped += 1;
      return;
    }
    this.stats.events += 1;
    if (this.me && String(event.user.user_id) === String(this.me.user_id)) this.me = event.user;
    this._emit('presence', event, event.user);
  }

  _onTyping(frame) {
    const conv = String(frame.conversation_id);
    if (!this._conversations.has(conv)) return;
    let set = this.typingNow.get(conv);
    if (!set) this.typingNow.set(conv, (set = new Set()));
    if (frame.typing) set.add(String(frame.user_id));
    else set.delete(String(frame.user_id));
    this._emit('typing', frame);
  }

  _onSnapshot(snap) {
    const resumed = this._resumeIds.delete(String(snap.id));
    if (snap.reset) {
      // Versions may have started again: forget everything, hold what the node shows now.
      this.users.clear();
      this.stats.resets += 1;
    }
    if (snap.reset || this.lastFeedId == null) this.lastFeedId = snap.feed_id;
    for (const [scope, s] of Object.entries(snap.scopes ?? {})) {
      this.counts.set(scope, s.count);
      this._emit('count', { scope, count: s.count });
    }
    // A resumed (not reset) snapshot shows the present, but the replayed events after it are
    // what this client has not seen yet: its views must not make them look like repeats.
    if (!resumed || snap.reset) {
      for (const s of Object.values(snap.scopes ?? {})) for (const v of s.users ?? []) this.users.admit(v);
      for (const v of Object.values(snap.users ?? {})) if (v) this.users.admit(v);
    }
    if (snap.reset) this._emit('reset', snap);
    this._emit('snapshot', snap);
  }

  // -- requests ------------------------------------------------------------------------------

  /** Sends a frame with an id; resolves with the reply (ack, snapshot, pong), rejects with a
   * PresenceError (the error frame, or `unavailable` when not connected or no reply came). */
  _request(frame, { resume = false } = {}) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this.state !== 'open') {
      return Promise.reject(new PresenceError('unavailable', 'not connected (connecting, reconnecting or closed)'));
    }
    const id = `c${this._nextId++}`;
    if (resume) this._resumeIds.add(id);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        this._resumeIds.delete(id);
        reject(new PresenceError('unavailable', `no answer to ${frame.type} within ${this._requestTimeoutMs} ms`));
      }, this._requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  _failPending(error) {
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(error ?? new PresenceError('unavailable', 'the session is closed'));
    }
    this._pending.clear();
    this._resumeIds.clear();
  }

  _whenOpen() {
    if (this._closed) return Promise.reject(new PresenceError('unavailable', 'the session is closed'));
    return new Promise((resolve, reject) => this._waitingForOpen.push({ resolve, reject }));
  }

  /** Follows scopes ('global', 'zone:10', 'org:100'), users and conversations (typing).
   * `countsOnly`: `count` frames for the scopes instead of their events (for big scopes;
   * scopes only). Resolves with the node's snapshot; what is followed is followed again
   * after every reconnect. Before the session is open it resolves once it is. */
  subscribe({ scopes = [], users = [], conversations = [], countsOnly = false } = {}) {
    const s = asList(scopes);
    const u = asList(users);
    const c = asList(conversations);
    if (countsOnly && (u.length || c.length)) {
      return Promise.reject(new PresenceError('invalid_argument', 'countsOnly takes scopes only'));
    }
    if (countsOnly) s.forEach((x) => this._countScopes.add(x));
    else {
      s.forEach((x) => this._scopes.add(x));
      u.forEach((x) => this._followedUsers.add(x));
      c.forEach((x) => this._conversations.add(x));
    }
    if (this.state !== 'open') return this._whenOpen();
    const frame = countsOnly
      ? { type: 'subscribe', scopes: s, counts_only: true }
      : { type: 'subscribe', scopes: s, users: u, conversations: c };
    return this._request(frame).catch((e) => {
      // Refused (over the cap, a bad scope): not followed after all.
      if (e.code !== 'unavailable') this._forget(s, u, c, countsOnly);
      throw e;
    });
  }

  _forget(s, u, c, countsOnly) {
    for (const x of s) {
      (countsOnly ? this._countScopes : this._scopes).delete(x);
      if (!this._scopes.has(x) && !this._countScopes.has(x)) this.counts.delete(x);
    }
    for (const x of u) this._followedUsers.delete(x);
    for (const x of c) {
      this._conversations.delete(x);
      this.typingNow.delete(x);
    }
  }

  /** Stops following scopes, users or conversations. */
  unsubscribe({ scopes = [], users = [], conversations = [] } = {}) {
    const s = asList(scopes);
    const u = asList(users);
    const c = asList(conversations);
    this._forget(s, u, c, true);
    this._forget(s, [], [], false);
    if (this.state !== 'open') return Promise.resolve();
    return this._request({ type: 'unsubscribe', scopes: s, users: u, conversations: c }).then(() => undefined);
  }

  /** What is followed now. */
  get subscriptions() {
    return {
      scopes: [...this._scopes],
      users: [...this._followedUsers],
      conversations: [...this._conversations],
      countScopes: [...this._countScopes],
    };
  }

  /** Reports activity, at most once per ACTIVITY_INTERVAL_MS (calls in between are dropped:
   * the node needs no more). Returns whether a frame went out. */
  activity() {
    const now = this._now();
    if (now - this._lastActivity < ACTIVITY_INTERVAL_MS) return false;
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this.state !== 'open') return false;
    this._lastActivity = now;
    ws.send('{"type":"activity"}');
    return true;
  }

  /** Reports activity on user input (pointer, keys, wheel, touch, the page shown again) on
   * `target` (default: the document), throttled like activity(). `false` stops it. */
  autoActivity(target) {
    if (this._autoActivity) {
      const { el, handler, events } = this._autoActivity;
      for (const e of events) el.removeEventListener(e, handler, true);
      this._autoActivity = null;
    }
    if (target === false) return;
    const el = target ?? globalThis.document;
    if (!el?.addEventListener) return;
    const events = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'visibilitychange'];
    const handler = () => {
      if (globalThis.document?.visibilityState === 'hidden') return;
      this.activity();
    };
    for (const e of events) el.addEventListener(e, handler, { capture: true, passive: true });
    this._autoActivity = { el, handler, events };
  }

  /** Manual away (`'away'`) or back online (`'online'`); `invisible` hides or shows the user. */
  setStatus(status, { invisible } = {}) {
    const frame = { type: 'status.set', status };
    if (invisible != null) {
      frame.invisible = !!invisible;
      this.invisible = !!invisible;
    }
    return this._request(frame).then(() => undefined);
  }

  /** Sets a custom status (`{kind, text?, emoji?, expiresAt?}`, kind one of dnd, busy,
   * in_meeting, on_break, custom) or clears it (`null`). */
  setCustomStatus(status) {
    if (status == null) return this._request({ type: 'custom_status.clear' }).then(() => undefined);
    const frame = { type: 'custom_status.set', kind: status.kind };
    if (status.text != null) frame.text = status.text;
    if (status.emoji != null) frame.emoji = status.emoji;
    const exp = status.expiresAt ?? status.expires_at;
    if (exp != null) frame.expires_at = exp instanceof Date ? exp.toISOString() : String(exp);
    return this._request(frame).then(() => undefined);
  }

  /** Moves the user to a zone (`null`: none); reconnects come back in it. */
  setZone(zoneId) {
    return this._request({ type: 'zone.set', zone_id: zoneId == null ? null : String(zoneId) }).then(() => {
      this.zoneId = zoneId;
    });
  }

  /** Moves the user to an org (`null`: none); reconnects come back in it. */
  setOrg(orgId) {
    return this._request({ type: 'org.set', org_id: orgId == null ? null : String(orgId) }).then(() => {
      this.orgId = orgId;
    });
  }

  /** Replaces the user's metadata (a JSON object, or null). */
  setMetadata(metadata) {
    return this._request({ type: 'metadata.set', metadata }).then(() => undefined);
  }

  /** Privacy settings: `{presence?: 'everyone'|'org'|'nobody', lastSeen?: 'exact'|'approximate'|'hidden'}`. */
  setPrivacy({ presence, lastSeen } = {}) {
    const frame = { type: 'privacy.set' };
    if (presence != null) frame.presence = presence;
    if (lastSeen != null) frame.last_seen = lastSeen;
    return this._request(frame).then(() => undefined);
  }

  /** Call on every keystroke in a conversation: starts the indicator, renews it every
   * TYPING_RENEW_MS while calls go on, and stops it TYPING_IDLE_MS after the last call.
   * `typing(c, false)` stops it now (message sent). */
  typing(conversationId, typing = true) {
    const conv = String(conversationId);
    const held = this._typing.get(conv);
    if (!typing) {
      if (!held) return false;
      clearTimeout(held.stop);
      this._typing.delete(conv);
      this._send({ type: 'typing.stop', conversation_id: conv });
      return true;
    }
    const now = this._now();
    let sent = false;
    if (!held || now - held.sentAt >= TYPING_RENEW_MS) {
      if (!this._send({ type: 'typing.start', conversation_id: conv })) return false;
      sent = true;
    }
    if (held) clearTimeout(held.stop);
    this._typing.set(conv, {
      sentAt: sent ? now : held.sentAt,
      stop: setTimeout(() => this.typing(conv, false), TYPING_IDLE_MS),
    });
    return sent;
  }

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this.state !== 'open') return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /** Round trip to the node. */
  ping() {
    return this._request({ type: 'ping' }).then(() => undefined);
  }

  // -- REST, with the session's token ------------------------------------------------------

  /** GET (or `init.method`) a REST path of the node with this session's token; resolves with
   * the JSON answer (null for 204), rejects with a PresenceError carrying the REST code. */
  async request(path, init = {}) {
    if (!this._fetch) throw new PresenceError('unavailable', 'no fetch in this environment');
    const token = this._token ?? (await this._tokenNow());
    const headers = { Authorization: `Bearer ${token}`, ...(init.headers ?? {}) };
    if (init.body != null && typeof init.body !== 'string') {
      headers['Content-Type'] = 'application/json';
      init = { ...init, body: JSON.stringify(init.body) };
    }
    let r;
    try {
      r = await this._fetch(this.baseUrl + path, { ...init, headers });
    } catch (e) {
      throw new PresenceError('unavailable', `the node did not answer: ${e?.message ?? e}`);
    }
    if (r.status === 204) return null;
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      throw new PresenceError(body?.error?.code ?? 'internal', body?.error?.message ?? `HTTP ${r.status}`);
    }
    return body;
  }

  /** One page of `GET /messenger/presence/online`: `{online_users, count, next_cursor}`. */
  list({ zoneId, orgId, limit = 100, cursor, status } = {}) {
    const q = new URLSearchParams();
    if (zoneId != null) q.set('zone_id', String(zoneId));
    if (orgId != null) q.set('org_id', String(orgId));
    q.set('limit', String(limit));
    if (cursor) q.set('cursor', cursor);
    if (status) q.set('status', status);
    return this.request(`/messenger/presence/online?${q}`);
  }

  /** `GET /messenger/presence/status/{user_id}`: the view, or null when there is none. */
  status(userId) {
    return this.request(`/messenger/presence/status/${encodeURIComponent(String(userId))}`).catch((e) => {
      if (e.code === 'not_found') return null;
      throw e;
    });
  }
}

/** Opens a session: `connect({url, token, zoneId, orgId, device, invisible, autoActivity})`.
 * `url` defaults to the page's origin; `token` is a string or a function (sync or async)
 * called before every connect, so a fresh token can replace an expired one. */
export function connect(options) {
  return new PresenceClient(options);
}
