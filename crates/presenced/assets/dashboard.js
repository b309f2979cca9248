// The dashboard at /: live counts, who is online, events, a chart of the last hour and the
// nodes, all through /client.js. Built to stay light with scopes of 100,000 users: counts come
// from counts-only subscriptions, the list is one REST page at a time (50 rows), the client
// keeps at most MAX_USERS views, the ticker MAX_TICKER lines and the chart an hour of samples.

import { connect } from './client.js';

const PAGE_SIZE = 50;
const MAX_USERS = 5000;
const MAX_TICKER = 100;
const TOP = 8;
const SAMPLE_MS = 10_000;
const HOUR_MS = 3_600_000;
const TOKEN_KEY = 'presenced.token';
const DEV_KEY = 'presenced.dev';

const $ = (id) => document.getElementById(id);
let client = null;

// -- getting a token ------------------------------------------------------------------------

async function fetchDevToken() {
  const r = await fetch('/dev-token', { cache: 'no-store' });
  if (!r.ok) throw new Error(`no development token (${r.status})`);
  return (await r.json()).token;
}

async function start() {
  $('signout').addEventListener('click', signOut);
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token-input').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    sessionStorage.removeItem(DEV_KEY);
    run(t);
  });
  $('dev-token').addEventListener('click', () => {
    sessionStorage.setItem(DEV_KEY, '1');
    sessionStorage.removeItem(TOKEN_KEY);
    // A function: fetched again at every connect, so a restarted dev node (a new secret)
    // hands out a token that works.
    run(fetchDevToken);
  });
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) return run(stored);
  if (sessionStorage.getItem(DEV_KEY)) return run(fetchDevToken);
  showLogin();
}

async function showLogin(error) {
  $('main').hidden = true;
  $('signout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = error ?? '';
  try {
    await fetchDevToken();
    $('dev-offer').hidden = false;
  } catch {
    $('dev-offer').hidden = true;
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(DEV_KEY);
  client?.close();
  client = null;
  location.reload();
}

// -- the session ----------------------------------------------------------------------------

function run(token) {
  $('login').hidden = true;
  $('main').hidden = false;
  $('signout').hidden = false;
  // Invisible: the dashboard watches without being counted as someone online.
  client = connect({ token, device: 'web', invisible: true, maxUsers: MAX_USERS });
  window.presenced = client; // for the console (and the browser test)
  client.on('state', onState);
  client.on('count', onCount);
  client.on('presence', onEvent);
  client.on('snapshot', (s) => seeViews(Object.values(s.scopes ?? {}).flatMap((x) => x.users ?? [])));
  client.on('reset', () => {
    tick({ reset: true });
    who.reload();
  });
  client.subscribe({ scopes: ['global'], countsOnly: true }).catch(report);
  client.subscribe({ scopes: ['global'] }).catch(report);
  who.init();
  setInterval(sample, SAMPLE_MS);
  setInterval(render, 1000);
  nodes.poll();
  setTimeout(probeCandidates, PROBE_MS);
}

function report(e) {
  if (e?.code === 'unavailable') return; // retried by the client
  console.warn('presenced:', e);
}

function onState(s) {
  const el = $('conn-state');
  el.dataset.state = s.state;
  const words = {
    connecting: 'connecting…',
    open: 'live',
    reconnecting: s.delay != null ? `reconnecting in ${(s.delay / 1000).toFixed(1)} s` : 'reconnecting…',
    closed: 'disconnected',
  };
  el.textContent = words[s.state] ?? s.state;
  renderDetail();
  if (s.state === 'open' && s.resumed) {
    tick({ note: 'reconnected; resuming from the last event seen' });
    who.reload();
  }
  if (s.state === 'closed' && s.error) {
    if (s.error.code === 'unauthenticated' || s.error.code === 'permission_denied') {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(`The node refused the token: ${s.error.message}`);
    } else {
      tick({ note: `session ended: ${s.error.message}` });
    }
  }
}

function renderDetail() {
  const st = client.stats;
  const d = $('conn-detail');
  d.textContent = `node ${client.nodeId ?? '–'} · connects ${st.connects} · resumes ${st.resumes} · resets ${st.resets}`;
  d.dataset.connects = String(st.connects);
  d.dataset.resumes = String(st.resumes);
  d.dataset.resets = String(st.resets);
}

// -- counts, busiest zones and orgs ----------------------------------------------------------
//
// The page follows at most FOLLOW[kind] zones and orgs with counts-only subscriptions (each
// scope a subscribe reads costs one frame of the connection's budget, 20 a second in bursts of
// 40, so a resubscribe after a reconnect must stay well under the burst). Other zones and orgs
// seen in views wait as candidates (at most MAX_CANDIDATES); every PROBE_MS one of each kind is
// counted over REST, and replaces the smallest followed one if it is bigger: "busiest" settles
// on the busiest of those seen.

const FOLLOW = { zone: 12, org: 8 };
const MAX_CANDIDATES = 500;
const FOLLOW_BATCH_MS = 2000;
const PROBE_MS = 3000;
const followed = { zone: new Set(), org: new Set() };
const candidates = { zone: new Set(), org: new Set() };
const toFollow = new Set();
let followTimer = null;

function seeViews(views) {
  for (const v of views) {
    if (v.zone_id != null) consider('zone', v.zone_id);
    if (v.org_id != null) consider('org', v.org_id);
  }
}

function consider(kind, id) {
  const scope = `${kind}:${id}`;
  if (followed[kind].has(scope) || candidates[kind].has(scope)) return;
  if (followed[kind].size < FOLLOW[kind]) follow(kind, scope);
  else if (candidates[kind].size < MAX_CANDIDATES) candidates[kind].add(scope);
}

function follow(kind, scope) {
  followed[kind].add(scope);
  toFollow.add(scope);
  // One subscribe for the scopes found within FOLLOW_BATCH_MS.
  followTimer ??= setTimeout(() => {
    followTimer = null;
    const scopes = [...toFollow];
    toFollow.clear();
    client.subscribe({ scopes, countsOnly: true }).catch(report);
  }, FOLLOW_BATCH_MS);
}

async function probeCandidates() {
  for (const kind of ['zone', 'org']) {
    const next = candidates[kind].values().next();
    if (next.done) continue;
    const scope = next.value;
    candidates[kind].delete(scope); // round robin: back at the end below, or followed
    const id = scope.slice(kind.length + 1);
    try {
      const c = await client.request(`/messenger/presence/count?${kind}_id=${encodeURIComponent(id)}`);
      const n = c[kind] ?? 0;
      const smallest = [...followed[kind]].sort((a, b) => (client.counts.get(a) ?? 0) - (client.counts.get(b) ?? 0))[0];
      if (smallest && n > (client.counts.get(smallest) ?? 0) && !toFollow.has(smallest)) {
        followed[kind].delete(smallest);
        client.unsubscribe({ scopes: [smallest] }).catch(report);
        candidates[kind].add(smallest);
        follow(kind, scope);
      } else {
        candidates[kind].add(scope);
      }
    } catch (e) {
      candidates[kind].add(scope);
      report(e);
    }
  }
  setTimeout(probeCandidates, PROBE_MS);
}

let dirty = true;
function onCount({ scope }) {
  if (scope === 'global') sample(true);
  dirty = true;
}

function renderCounts() {
  const g = client.counts.get('global');
  $('count-global').textContent = g == null ? '–' : g.toLocaleString();
  $('count-global').dataset.count = g == null ? '' : String(g);
  for (const kind of ['zone', 'org']) {
    const rows = [...followed[kind]]
      .map((s) => [s, client.counts.get(s) ?? 0])
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, TOP);
    const body = $(kind === 'zone' ? 'zones' : 'orgs');
    body.replaceChildren(
      ...rows.map(([s, n]) => {
        const tr = el('tr', {}, el('td', {}, s.slice(kind.length + 1)), el('td', { class: 'n' }, n.toLocaleString()));
        tr.dataset.scope = s;
        tr.dataset.count = String(n);
        return tr;
      }),
    );
    if (!rows.length) body.append(el('tr', {}, el('td', { class: 'muted' }, 'none seen yet')));
  }
}

// -- the chart --------------------------------------------------------------------------------

const samples = []; // {t, n}, an hour at most

function sample(onChange = false) {
  const n = client?.counts.get('global');
  if (n == null) return;
  const t = Date.now();
  const last = samples[samples.length - 1];
  // Changes within a sampling period replace each other: at most ~one point per period.
  if (onChange && last && t - last.t < SAMPLE_MS / 2) last.n = n;
  else samples.push({ t, n });
  while (samples.length && samples[0].t < t - HOUR_MS) samples.shift();
  dirty = true;
}

function drawChart() {
  const c = $('chart');
  const ctx = c.getContext('2d');
  const w = c.width;
  const h = c.height;
  ctx.clearRect(0, 0, w, h);
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#6b7280';
  if (samples.length === 0) {
    ctx.fillText('waiting for counts…', 10, h / 2);
    return;
  }
  const now = Date.now();
  const max = Math.max(1, ...samples.map((s) => s.n));
  const pad = 24;
  // The last hour, or since the page opened when that is shorter.
  const from = Math.max(now - HOUR_MS, samples[0].t);
  const span = Math.max(now - from, 60_000);
  const x = (t) => pad + ((t - (now - span)) / span) * (w - pad - 6);
  const y = (n) => h - 16 - (n / max) * (h - 32);
  ctx.strokeStyle = '#e5e7eb';
  ctx.beginPath();
  ctx.moveTo(pad, y(0));
  ctx.lineTo(w - 6, y(0));
  ctx.stroke();
  ctx.fillText(String(max), 2, y(max) + 4);
  ctx.fillText('0', 2, y(0) + 4);
  ctx.fillText(`-${Math.round(span / 60_000)} min`, pad, h - 2);
  ctx.fillText('now', w - 30, h - 2);
  ctx.strokeStyle = '#2563eb';
  ctx.lineWidth = 2;
  ctx.beginPath();
  samples.forEach((s, i) => {
    // A step line: a count holds until the next sample.
    if (i === 0) ctx.moveTo(x(s.t), y(s.n));
    else {
      ctx.lineTo(x(s.t), y(samples[i - 1].n));
      ctx.lineTo(x(s.t), y(s.n));
    }
  });
  ctx.lineTo(x(now), y(samples[samples.length - 1].n));
  ctx.stroke();
}

// -- who is online: one REST page at a time ---------------------------------------------------

const who = {
  rows: new Map(), // user id → view, the page shown (≤ PAGE_SIZE)
  cursor: null, // this page's cursor (null: the first page)
  next: null,
  refreshTimer: null,
  loading: false,
  init() {
    $('who-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.cursor = null;
      this.reload();
    });
    $('who-first').addEventListener('click', () => {
      this.cursor = null;
      this.reload();
    });
    $('who-next').addEventListener('click', () => {
      if (!this.next) return;
      this.cursor = this.next;
      this.reload();
    });
    this.reload();
  },
  query() {
    const kind = $('who-scope-kind').value;
    const id = $('who-scope-id').value.trim();
    const q = { limit: PAGE_SIZE, status: $('who-status').value || undefined, cursor: this.cursor ?? undefined };
    if (kind === 'zone' && id) q.zoneId = id;
    if (kind === 'org' && id) q.orgId = id;
    return q;
  },
  async reload() {
    if (this.loading) return;
    this.loading = true;
    const search = $('who-search').value.trim();
    try {
      if (search) {
        const v = await client.status(search);
        this.show(v ? [v] : [], null, v ? 1 : 0, v ? '' : `no presence for ${search}`);
      } else {
        const page = await client.list(this.query());
        this.show(page.online_users, page.next_cursor, page.count, '');
      }
    } catch (e) {
      $('who-note').textContent = e.message;
    } finally {
      this.loading = false;
    }
  },
  show(views, next, count, note) {
    this.rows = new Map(views.map((v) => [String(v.user_id), v]));
    this.next = next;
    seeViews(views);
    $('who-next').disabled = !next;
    $('who-total').textContent = `(${count.toLocaleString()})`;
    $('who-note').textContent = note || (this.cursor ? 'a later page: rows update live, new users show on the first page' : '');
    this.render();
  },
  render() {
    const now = Date.now();
    $('who-rows').replaceChildren(
      ...[...this.rows.values()].map((v) => {
        const cs = v.custom_status;
        const tr = el(
          'tr',
          {},
          el('td', {}, String(v.user_id)),
          el('td', {}, el('span', { class: `status ${v.status}` }, v.status + (v.away_reason ? ` (${v.away_reason})` : ''))),
          el('td', {}, (v.devices ?? []).join(', ')),
          el('td', {}, cs ? [cs.emoji, cs.kind.replace('_', ' '), cs.text].filter(Boolean).join(' ') : ''),
          el('td', {}, v.zone_id ?? ''),
          el('td', {}, v.org_id ?? ''),
          el('td', {}, ago(v.last_activity, now)),
        );
        tr.dataset.user = String(v.user_id);
        tr.dataset.status = v.status;
        if (v.status === 'offline') tr.className = 'gone';
        return tr;
      }),
    );
  },
  onEvent(view) {
    const id = String(view.user_id);
    if (this.rows.has(id)) {
      this.rows.set(id, view);
      dirty = true;
    }
    // The first page is live: who just came or went shows there (one reload every 2 s at most).
    if (!this.cursor && !$('who-search').value.trim() && !this.refreshTimer) {
      this.refreshTimer = setTimeout(() => {
        this.refreshTimer = null;
        this.reload();
      }, 2000);
    }
  },
};

function ago(t, now) {
  if (!t) return '';
  const s = Math.max(0, Math.round((now - Date.parse(t)) / 1000));
  if (Number.isNaN(s)) return t;
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

// -- events -------------------------------------------------------------------------------------

const pendingTicks = [];
let paused = false;

function onEvent(event, view) {
  seeViews([view]);
  who.onEvent(view);
  if (!paused) tick({ event });
}

function tick(item) {
  pendingTicks.push(item);
  if (pendingTicks.length > MAX_TICKER) pendingTicks.splice(0, pendingTicks.length - MAX_TICKER);
  dirty = true;
}

function renderTicker() {
  if (!pendingTicks.length) return;
  const list = $('ticker');
  const items = pendingTicks.splice(0).map((item) => {
    const li = document.createElement('li');
    const at = item.event ? new Date(item.event.ts) : new Date();
    li.append(el('time', {}, at.toLocaleTimeString()));
    if (item.reset) li.append('— the node started its feed afresh: state reloaded —');
    else if (item.note) li.append(`— ${item.note} —`);
    else {
      const e = item.event;
      const v = e.user;
      li.dataset.user = String(v.user_id);
      li.dataset.status = v.status;
      let what = e.prev_status === v.status ? '' : `${e.prev_status} → `;
      what += v.status;
      if (e.prev_zone_id !== v.zone_id) what += `, zone ${e.prev_zone_id ?? '–'} → ${v.zone_id ?? '–'}`;
      if (v.custom_status) what += `, ${v.custom_status.kind.replace('_', ' ')}${v.custom_status.text ? ` “${v.custom_status.text}”` : ''}`;
      li.append(el('b', {}, String(v.user_id)), ` ${what}`);
    }
    return li;
  });
  list.prepend(...items.reverse());
  while (list.children.length > MAX_TICKER) list.lastElementChild.remove();
}

$('ticker-pause')?.addEventListener('click', (e) => {
  paused = !paused;
  e.target.textContent = paused ? 'resume' : 'pause';
  // Paused: stop the events themselves (counts go on), not just their display.
  if (paused) client?.unsubscribe({ scopes: ['global'] }).then(() => client.subscribe({ scopes: ['global'], countsOnly: true })).catch(report);
  else client?.subscribe({ scopes: ['global'] }).catch(report);
});

// -- nodes (admin tokens) -------------------------------------------------------------------------

const nodes = {
  async poll() {
    try {
      const r = await client.request('/admin/nodes');
      $('nodes').hidden = false;
      $('node-rows').replaceChildren(
        ...r.nodes.map((n) =>
          el('tr', {}, el('td', {}, n.node_id), el('td', { class: 'n' }, String(n.sessions)), el('td', {}, n.started_at), el('td', {}, n.last_renewal)),
        ),
      );
    } catch (e) {
      if (e.code === 'permission_denied') {
        $('nodes').hidden = true;
        return; // not an admin token: no more asking
      }
    }
    setTimeout(() => this.poll(), 10_000);
  },
};

// -- rendering ------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) if (c != null) e.append(c);
  return e;
}

// Everything drawn at most 4 times a second, however fast events come.
function render() {
  if (!client) return;
  renderDetail();
  renderCounts();
  renderTicker();
  drawChart();
  who.render();
  dirty = false;
}
setInterval(() => {
  if (dirty) render();
}, 250);

start();
