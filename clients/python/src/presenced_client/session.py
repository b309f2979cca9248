"""`PresenceSession`: one WebSocket session of a user (SPEC §5), reconnecting with backoff and
jitter and resubscribing with ``after`` = the last ``feed_id`` seen.

For code that acts *as a user* (a bot, a desktop or CLI app): the socket is the user's
presence session, carries their activity and changes, and delivers the events of what they
subscribed to. A backend that only follows the feed wants :class:`PresenceFeed` (SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .errors import PresenceError
from .models import (
    CountUpdate,
    CustomStatusKind,
    Device,
    Json,
    LastSeenVisibility,
    PresenceEvent,
    PresenceView,
    PresenceVisibility,
    SessionItem,
    Snapshot,
    format_time,
)
from .ordering import Backoff, VersionGate

if TYPE_CHECKING:
    from .client import PresenceClient

log = logging.getLogger("presenced_client")

# Close codes (SPEC §5, README) → the error they mean, and whether reconnecting may help.
_CLOSES: Final[dict[int, tuple[str, bool]]] = {
    1009: ("payload_too_large", False),  # a frame over `frame_bytes`: a bug here, not a blip
    4001: ("unauthenticated", True),  # token expired: retried only with a token source
    4003: ("permission_denied", False),
    4008: ("rate_limited", True),  # rate limited or too slow a reader
    4009: ("conflict", False),  # too many sessions for this user
    4011: ("session_ended", False),  # the service ended this session: do not come back on your own
}

#: An activity frame is sent at most this often; the node only needs one a second or so to
#: keep a user from going away after minutes.
ACTIVITY_INTERVAL: Final[float] = 1.0



class PresenceSession:
    """A user's WebSocket session::

        async with client.session(zone_id="10") as s:
            await s.subscribe(scopes=["zone:10"])
            await s.activity()
            async for item in s:      # PresenceEvent, a reset Snapshot, CountUpdate
                ...

    After a dropped connection it reconnects (backoff with jitter) in the zone and org it
    last set, and resubscribes to everything with ``after`` = the last feed id seen, so the
    iteration goes on without a gap while the feed holds the events; otherwise the next item
    is a :class:`Snapshot` with ``reset`` true. Events whose ``version`` is not above the one
    held for their user (repeats around a snapshot) are dropped. Calls made while it
    reconnects raise :class:`PresenceError` ``unavailable``. Errors that reconnecting cannot
    cure (the upgrade refused with 401/403/400, close 4009) are raised by the iteration.
    """

    def __init__(
        self,
        client: PresenceClient,
        *,
        zone_id: str | None,
        org_id: str | None,
        device: Device,
        invisible: bool = False,
        backoff: Backoff | None = None,
        retries: int | None = None,
    ) -> None:
        self._client = client
        self.zone_id = zone_id
        self.org_id = org_id
        self.device = device
        #: Connect (and reconnect) invisible: follows ``set_status(invisible=...)`` and what
        #: each ``connected`` frame says, so a connection that dropped for longer than the
        #: offline grace comes back invisible without a moment online.
        self.invisible = invisible
        #: From the last `connected` frame.
        self.session_id: str | None = None
        self.node_id: str | None = None
        #: The user's own view as of the last (re)connection.
        self.presence: PresenceView | None = None
        #: Where a resubscription resumes.
        self.last_feed_id: str | None = None
        self.gate = VersionGate()
        #: Successful connections so far (the first one included).
        self.connects = 0
        self._backoff = backoff or Backoff()
        self._retries = retries
        self._scopes: set[str] = set()
        self._users: set[str] = set()
        self._count_scopes: set[str] = set()
        self._ws: ClientConnection | None = None
        self._pending: dict[str, asyncio.Future[Json]] = {}
        self._ids = itertools.count(1)
        self._items: asyncio.Queue[SessionItem | PresenceError | None] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._done = False
        self._last_activity = 0.0

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> PresenceSession:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Opens the first connection; raises what refused it."""
        self._ws = await self._open()
        self._runner = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Ends the session (the user goes offline after the grace if it was their last)."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        self._fail_pending("the session is closed")
        self._items.put_nowait(None)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def drop_connection(self) -> None:
        """Drops the current connection without a closing handshake, as a network failure
        would; the session reconnects and resumes as after any failure."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def _open(self) -> ClientConnection:
        base = self._client.base_url
        ws_base = "ws" + base[len("http") :] if base.startswith("http") else base
        params = (("zone_id", self.zone_id), ("org_id", self.org_id), ("device", self.device))
        query = urlencode({k: v for k, v in params if v is not None})
        if self.invisible:
            query += "&invisible=true"
        headers = {"Authorization": f"Bearer {await self._client.token()}"}
        try:
            ws = await connect(
                f"{ws_base}/messenger/ws?{query}",
                additional_headers=headers,
                proxy=None,
                open_timeout=10,
                max_size=16 * 2**20,
            )
        except websockets.InvalidStatus as e:
            raise PresenceError.from_answer(e.response.status_code, bytes(e.response.body or b"")) from e
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as e:
            raise PresenceError.unreachable(e) from e
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except websockets.ConnectionClosed as e:
            raise self._close_error(e) from e
        except (asyncio.TimeoutError, ValueError) as e:
            await ws.close()
            raise PresenceError.unreachable(f"no `connected` frame: {e}") from e
        if first.get("type") != "system" or first.get("event") != "connected":
            await ws.close()
            raise PresenceError("internal", None, f"unexpected first frame: {first!r}")
        self.session_id = first.get("session_id")
        self.node_id = first.get("node_id")
        self.presence = PresenceView.from_json(first["presence"])
        self.invisible = self.presence.invisible
        self.connects += 1
        return ws

    def _close_error(self, e: websockets.ConnectionClosed) -> PresenceError:
        code = e.rcvd.code if e.rcvd is not None else 1006
        reason = e.rcvd.reason if e.rcvd is not None else "connection lost"
        name, _ = _CLOSES.get(code, ("unavailable", True))
        return PresenceError.from_frame(name, f"closed {code}: {reason}")

    def _may_retry(self, e: PresenceError, close_code: int | None) -> bool:
        if close_code is not None and close_code in _CLOSES:
            _, retry = _CLOSES[close_code]
            if close_code == 4001:
                # A fixed token stays expired; a token source may give a fresh one.
                return self._client.has_token_source
            return retry
        return e.retryable

    # -- the connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._follow()
        except Exception as e:  # a frame this client cannot read, a bug: end, never hang
            log.exception("presence session failed")
            self._finish(PresenceError("internal", None, f"the session failed: {e!r}"))

    async def _follow(self) -> None:
        failures = 0
        while not self._closed:
            ws = self._ws
            assert ws is not None
            close_code: int | None = None
            try:
                async for raw in ws:
                    self._dispatch(json.loads(raw))
                error = PresenceError.from_frame("unavailable", "closed by the node")
                close_code = ws.close_code
            except websockets.ConnectionClosed as e:
                error = self._close_error(e)
                close_code = e.rcvd.code if e.rcvd is not None else None
            self._ws = None
            self._fail_pending(f"connection lost ({error.message})")
            if close_code is not None and close_code in _CLOSES:
                error = PresenceError.from_frame(_CLOSES[close_code][0], error.message)
            if not self._may_retry(error, close_code):
                self._finish(error)
                return
            log.warning("presence session: %s; reconnecting", error.message)
            while not self._closed:
                await asyncio.sleep(self._backoff.next_delay())
                try:
                    self._ws = await self._open()
                    await self._resubscribe()
                    self._backoff.reset()
                    failures = 0
                    break
                except PresenceError as e:
                    if self._ws is not None:
                        await self._ws.close()
                        self._ws = None
                    failures += 1
                    if not e.retryable or (self._retries is not None and failures > self._retries):
                        self._finish(e)
                        return
                    log.warning("presence session: reconnecting failed (%s)", e)

    def _finish(self, error: PresenceError) -> None:
        self._done = True
        self._items.put_nowait(error)
        self._items.put_nowait(None)

    async def _resubscribe(self) -> None:
        # The resume runs on the new socket before anything else: the snapshot reply
        # comes first, then the replayed events, then live ones, all through `_run`'s
        # reader. Here the reader is not running yet, so read the reply inline.
        ws = self._ws
        assert ws is not None
        if self._scopes or self._users:
            frame: Json = {"type": "subscribe", "scopes": sorted(self._scopes), "users": sorted(self._users)}
            if self.last_feed_id is not None:
                frame["after"] = self.last_feed_id
            await self._send_and_read_reply(ws, frame)
        if self._count_scopes:
            frame = {"type": "subscribe", "scopes": sorted(self._count_scopes), "counts_only": True}
            await self._send_and_read_reply(ws, frame)

    async def _send_and_read_reply(self, ws: ClientConnection, frame: Json) -> None:
        rid = f"r{next(self._ids)}"
        try:
            await ws.send(json.dumps({**frame, "id": rid}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg.get("id") == rid:
                    if msg.get("type") == "error":
                        raise PresenceError.from_frame(msg["code"], msg["message"])
                    self._dispatch(msg, resumed=True)
                    return
                self._dispatch(msg)
        except websockets.ConnectionClosed as e:
            raise self._close_error(e) from e
        except asyncio.TimeoutError as e:
            raise PresenceError.unreachable("no answer to the resubscription") from e

    def _dispatch(self, msg: Json, *, resumed: bool = False) -> None:
        kind = msg.get("type")
        if kind == "presence":
            event = PresenceEvent.from_json(msg)
            self.last_feed_id = event.feed_id
            if self.gate.admit_event(event):
                self._items.put_nowait(event)
            return
        if kind == "count":
            self._items.put_nowait(CountUpdate(scope=str(msg["scope"]), count=int(msg["count"])))
            return
        if kind == "snapshot":
            snapshot = Snapshot.from_json(msg)
            # A reset moves the resume point to the present. Otherwise only events move it:
            # a later subscription's snapshot may overtake events still on their way for the
            # earlier ones, and resuming from before it costs only repeats, which the gate
            # drops (it holds the snapshot's versions).
            if snapshot.reset or self.last_feed_id is None:
                self.last_feed_id = snapshot.feed_id
            if snapshot.reset:
                self.gate.reset(snapshot)
                self._items.put_nowait(snapshot)
            elif not resumed:
                self.gate.seed(snapshot)
            # A resumed (not reset) snapshot shows the present, but the replayed events
            # that follow it are what the caller has not seen yet: it must not hold them
            # back as repeats.
            if resumed:
                return
        rid = msg.get("id")
        if rid is not None and str(rid) in self._pending:
            fut = self._pending.pop(str(rid))
            if fut.done():
                return
            if kind == "error":
                fut.set_exception(PresenceError.from_frame(msg["code"], msg["message"]))
            else:
                fut.set_result(msg)
        elif kind == "error":
            log.warning("presence session: %s: %s", msg.get("code"), msg.get("message"))

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PresenceError("unavailable", None, why))
        self._pending.clear()

    # -- iteration ------------------------------------------------------------------------------

    def __aiter__(self) -> PresenceSession:
        return self

    async def __anext__(self) -> SessionItem:
        if self._closed and self._items.empty():
            raise StopAsyncIteration
        item = await self._items.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, PresenceError):
            raise item
        return item

    # -- requests ------------------------------------------------------------------------------

    async def _request(self, frame: Json, timeout: float = 10.0) -> Json:
        ws = self._ws
        if ws is None or self._done:
            raise PresenceError("unavailable", None, "the session is not connected (it is reconnecting or closed)")
        rid = f"r{next(self._ids)}"
        fut: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await ws.send(json.dumps({**frame, "id": rid}))
            return await asyncio.wait_for(fut, timeout)
        except websockets.ConnectionClosed as e:
            raise PresenceError("unavailable", None, f"connection lost: {e}") from e
        except asyncio.TimeoutError as e:
            raise PresenceError.unreachable("no answer within the timeout") from e
        finally:
            self._pending.pop(rid, None)

    async def subscribe(
        self, scopes: Iterable[str] = (), users: Iterable[str | int] = (), *, counts_only: bool = False
    ) -> Snapshot:
        """Follows scopes (``global``, ``zone:{id}``, ``org:{id}``) and users; answers the
        present as a snapshot, and the iteration then yields their events (or, with
        ``counts_only``, :class:`CountUpdate` items for the scopes)."""
        scope_list, user_list = list(scopes), [str(u) for u in users]
        frame: Json = {"type": "subscribe", "scopes": scope_list, "users": user_list}
        if counts_only:
            frame["counts_only"] = True
        snapshot = Snapshot.from_json(await self._request(frame))
        if counts_only:
            self._count_scopes.update(scope_list)
        else:
            self._scopes.update(scope_list)
            self._users.update(user_list)
        return snapshot

    async def unsubscribe(self, scopes: Iterable[str] = (), users: Iterable[str | int] = ()) -> None:
        scope_list, user_list = list(scopes), [str(u) for u in users]
        await self._request({"type": "unsubscribe", "scopes": scope_list, "users": user_list})
        self._scopes.difference_update(scope_list)
        self._count_scopes.difference_update(scope_list)
        self._users.difference_update(user_list)

    async def activity(self) -> bool:
        """Counts as activity. Sent at most once per :data:`ACTIVITY_INTERVAL`; answers
        whether this call sent a frame."""
        now = time.monotonic()
        if now - self._last_activity < ACTIVITY_INTERVAL:
            return False
        await self._request({"type": "activity"})
        self._last_activity = now
        return True

    async def set_status(self, status: Literal["away", "online"], *, invisible: bool | None = None) -> None:
        frame: Json = {"type": "status.set", "status": status}
        if invisible is not None:
            frame["invisible"] = invisible
        await self._request(frame)
        if invisible is not None:
            self.invisible = invisible

    async def set_privacy(
        self, *, presence: PresenceVisibility | None = None, last_seen: LastSeenVisibility | None = None
    ) -> None:
        """``privacy.set``: a setting left out stays."""
        frame: Json = {"type": "privacy.set"}
        if presence is not None:
            frame["presence"] = presence
        if last_seen is not None:
            frame["last_seen"] = last_seen
        await self._request(frame)

    async def set_zone(self, zone_id: str | int | None) -> None:
        zone = None if zone_id is None else str(zone_id)
        await self._request({"type": "zone.set", "zone_id": zone})
        self.zone_id = zone

    async def set_org(self, org_id: str | int | None) -> None:
        org = None if org_id is None else str(org_id)
        await self._request({"type": "org.set", "org_id": org})
        self.org_id = org

    async def set_metadata(self, metadata: dict[str, Any] | None) -> None:
        await self._request({"type": "metadata.set", "metadata": metadata})

    async def set_custom_status(
        self,
        kind: CustomStatusKind,
        *,
        text: str | None = None,
        emoji: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        frame: Json = {"type": "custom_status.set", "kind": kind}
        if text is not None:
            frame["text"] = text
        if emoji is not None:
            frame["emoji"] = emoji
        if expires_at is not None:
            frame["expires_at"] = format_time(expires_at)
        await self._request(frame)

    async def clear_custom_status(self) -> None:
        await self._request({"type": "custom_status.clear"})

    async def ping(self) -> None:
        await self._request({"type": "ping"})
