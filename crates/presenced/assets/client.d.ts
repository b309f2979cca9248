// Types for /client.js, the presenced JavaScript client (served beside it as /client.d.ts).

export type Status = 'online' | 'away' | 'offline';
export type Device = 'web' | 'desktop' | 'mobile' | 'other';
export type CustomStatusKind = 'dnd' | 'busy' | 'in_meeting' | 'on_break' | 'custom';

export interface CustomStatus {
  kind: CustomStatusKind;
  text: string | null;
  emoji: string | null;
  /** RFC 3339, or null. */
  expires_at: string | null;
}

/** A user's view (SPEC §3 "The public view"): every field always present. */
export interface PresenceView {
  user_id: string;
  status: Status;
  away_reason: 'auto' | 'manual' | null;
  /** RFC 3339, or null when the user's privacy hides it. */
  last_activity: string | null;
  /** RFC 3339, a bucket ('recently', 'within_week', 'within_month', 'long_ago') or null. */
  last_seen: string | null;
  zone_id: string | null;
  org_id: string | null;
  devices: Device[];
  custom_status: CustomStatus | null;
  metadata: Record<string, unknown> | null;
  invisible: boolean;
  privacy: { presence: 'everyone' | 'org' | 'nobody'; last_seen: 'exact' | 'approximate' | 'hidden' } | null;
  /** Increases strictly per user: the client drops events whose version is not above the one held. */
  version: number;
  updated_at: string | null;
}

export interface PresenceEvent {
  type: 'presence';
  feed_id: string;
  user: PresenceView;
  prev_status: Status;
  prev_zone_id: string | null;
  prev_org_id: string | null;
  ts: string;
}

export interface Snapshot {
  type: 'snapshot';
  id: string | number | null;
  feed_id: string;
  reset: boolean;
  scopes: Record<string, { count: number; users: PresenceView[]; next_cursor: string | null }>;
  users: Record<string, PresenceView | null>;
}

export interface TypingFrame {
  type: 'typing';
  conversation_id: string;
  user_id: string;
  typing: boolean;
}

export interface CountUpdate {
  scope: string;
  count: number;
}

export type State = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateChange {
  state: State;
  /** Reconnect attempts since the last connection that worked. */
  attempt?: number;
  /** Milliseconds until the next attempt ('reconnecting'). */
  delay?: number;
  /** The close code that caused it, when there was one. */
  code?: number | null;
  /** Why the connection was lost or the session closed (null after close()). */
  error?: PresenceError | null;
  sessionId?: string;
  nodeId?: string;
  /** 'open' after a reconnect: subscriptions are resumed from the last feed id. */
  resumed?: boolean;
}

export declare class PresenceError extends Error {
  /** A REST code (`unauthenticated`, `permission_denied`, `invalid_argument`, …),
   * `invalid_frame`, `unavailable` or `session_ended`. */
  readonly code: string;
  /** The WebSocket close code that ended the session, if one did. */
  readonly closeCode: number | null;
}

export interface BackoffOptions {
  /** First wait, ms (default 500). */
  initialMs?: number;
  /** Longest wait, ms (default 30000). */
  maxMs?: number;
  /** A source of numbers in [0, 1) (default Math.random). */
  random?: () => number;
}

export declare class Backoff {
  constructor(options?: BackoffOptions);
  readonly attempt: number;
  /** The next wait in ms, in [d/2, d] with d = min(maxMs, initialMs * 2^attempt). */
  next(): number;
  reset(): void;
}

/** The newest view of each user seen, at most `max` users (the least recently changed go). */
export declare class PresenceMap {
  constructor(max?: number);
  readonly max: number;
  readonly size: number;
  get(userId: string | number): PresenceView | undefined;
  has(userId: string | number): boolean;
  values(): IterableIterator<PresenceView>;
  /** Keeps `view` if its version is above the one held; returns whether it did. */
  admit(view: PresenceView): boolean;
  clear(): void;
}

export interface ConnectOptions {
  /** The node: http(s)://host:port or ws(s)://…; default: the page's origin. */
  url?: string;
  /** A token, or a function returning one (called before every connect: a fresh token
   * replaces an expired one, and 4001 is then retried). */
  token: string | (() => string | Promise<string>);
  zoneId?: string | number | null;
  orgId?: string | number | null;
  device?: Device;
  /** Open the session invisible (others see the user offline). */
  invisible?: boolean;
  /** Report activity on user input: true (the document) or an EventTarget. */
  autoActivity?: boolean | EventTarget;
  /** Most users held in `users` (default 10000). */
  maxUsers?: number;
  backoff?: BackoffOptions;
  /** Stop after this many failed reconnects in a row (default: never). */
  maxRetries?: number;
  /** How long a frame waits for its reply (default 10000 ms). */
  requestTimeoutMs?: number;
  /** A `ping` frame this often to find dead connections (default 25000 ms; 0: never). */
  pingIntervalMs?: number;
  /** For environments without a global WebSocket (Node 20: the `ws` package). */
  WebSocket?: unknown;
  fetch?: typeof fetch;
  /** The clock used to throttle activity and typing (default Date.now). */
  now?: () => number;
}

export interface SubscribeOptions {
  /** 'global', 'zone:{id}', 'org:{id}'. */
  scopes?: string | string[];
  users?: string | number | Array<string | number>;
  /** Conversations whose typing to follow. */
  conversations?: string | string[];
  /** `count` updates instead of every event (scopes only): for big scopes. */
  countsOnly?: boolean;
}

export interface OnlinePage {
  online_users: PresenceView[];
  count: number;
  next_cursor: string | null;
}

export declare const ACTIVITY_INTERVAL_MS: number;
export declare const TYPING_RENEW_MS: number;
export declare const TYPING_IDLE_MS: number;

export declare class PresenceClient {
  readonly baseUrl: string;
  readonly state: State;
  /** Views seen through snapshots and events, ordered by version. */
  readonly users: PresenceMap;
  /** Scope → its count, for the scopes followed. */
  readonly counts: Map<string, number>;
  /** Conversation → users typing there now (conversations followed). */
  readonly typingNow: Map<string, Set<string>>;
  /** The user's own view (from the `connected` frame and the user's own events). */
  readonly me: PresenceView | null;
  readonly sessionId: string | null;
  readonly nodeId: string | null;
  /** Where events resume from after a reconnect. */
  readonly lastFeedId: string | null;
  readonly zoneId: string | number | null;
  readonly orgId: string | number | null;
  readonly stats: { connects: number; resumes: number; resets: number; dropped: number; events: number };
  readonly subscriptions: { scopes: string[]; users: string[]; conversations: string[]; countScopes: string[] };

  on(type: 'presence', fn: (event: PresenceEvent, view: PresenceView) => void): () => void;
  on(type: 'typing', fn: (frame: TypingFrame) => void): () => void;
  on(type: 'count', fn: (update: CountUpdate) => void): () => void;
  on(type: 'reset', fn: (snapshot: Snapshot) => void): () => void;
  on(type: 'snapshot', fn: (snapshot: Snapshot) => void): () => void;
  on(type: 'state', fn: (change: StateChange) => void): () => void;
  on(type: 'error', fn: (error: PresenceError) => void): () => void;
  off(type: string, fn: (...args: any[]) => void): void;

  subscribe(options: SubscribeOptions): Promise<Snapshot | null>;
  unsubscribe(options: Omit<SubscribeOptions, 'countsOnly'>): Promise<void>;
  /** Returns whether a frame went out (at most one per ACTIVITY_INTERVAL_MS). */
  activity(): boolean;
  autoActivity(target?: EventTarget | false): void;
  setStatus(status: 'online' | 'away', options?: { invisible?: boolean }): Promise<void>;
  setCustomStatus(
    status: { kind: CustomStatusKind; text?: string; emoji?: string; expiresAt?: string | Date } | null,
  ): Promise<void>;
  setZone(zoneId: string | number | null): Promise<void>;
  setOrg(orgId: string | number | null): Promise<void>;
  setMetadata(metadata: Record<string, unknown> | null): Promise<void>;
  setPrivacy(settings: { presence?: 'everyone' | 'org' | 'nobody'; lastSeen?: 'exact' | 'approximate' | 'hidden' }): Promise<void>;
  /** Call on every keystroke; `false` stops the indicator now. Returns whether a frame went out. */
  typing(conversationId: string | number, typing?: boolean): boolean;
  ping(): Promise<void>;
  /** Drop the connection (as a network failure would): it reconnects and resumes. */
  reconnect(): void;
  /** End the session for good. */
  close(): void;

  request<T = unknown>(path: string, init?: { method?: string; body?: unknown; headers?: Record<string, string> }): Promise<T>;
  list(options?: { zoneId?: string; orgId?: string; limit?: number; cursor?: string; status?: 'online' | 'away' }): Promise<OnlinePage>;
  status(userId: string | number): Promise<PresenceView | null>;
}

export declare function connect(options: ConnectOptions): PresenceClient;
