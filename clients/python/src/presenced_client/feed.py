"""`PresenceFeed`: the feed over Server-Sent Events (``GET /messenger/presence/events``),
reconnecting with backoff and jitter and resuming with ``Last-Event-ID``.

Why SSE is the stream for a backend: it is one plain HTTP request that any proxy passes,
resumable by a standard header, and it opens no presence session, so following the feed
with a service token does not make the service itself look online (a WebSocket would: every
socket is a session of its token's user). A service token sees every event (SPEC §7). A
process that acts *as a user* (a bot, a desktop app) wants :class:`PresenceSession` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from .errors import PresenceError
from .models import PresenceEvent, Snapshot, StreamItem
from .ordering import Backoff, VersionGate

if TYPE_CHECKING:
    from .client import PresenceClient

log = logging.getLogger("presenced_client")


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One Server-Sent Events message."""

    event: str
    data: str
    id: str | None


async def sse_messages(lines: AsyncIterator[str]) -> AsyncIterator[SseMessage]:
    """Server-Sent Events (the HTML standard's parsing rules) from a stream of lines."""
    event, last_id, has_id = "", None, False
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield SseMessage(event or "message", "\n".join(data), last_id if has_id else None)
            event, data, has_id = "", [], False
            continue
        if line.startswith(":"):
            continue  # a comment: the node's keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id, has_id = value, True


class PresenceFeed:
    """An endless async iterator of :class:`PresenceEvent` and reset :class:`Snapshot`
    items from the feed, in feed order::

        async with client.events(["zone:10"]) as feed:
            async for item in feed:
                if isinstance(item, Snapshot):   # reset: events were lost, start over
                    ...
                else:
                    handle(item.user)

    - ``scopes`` (``global``, ``zone:{id}``, ``org:{id}``) narrow the feed; none: every event
      the token may see.
    - It resumes after ``after`` (a ``feed_id``) if given; keep ``last_event_id`` somewhere
      durable to resume after a restart of your process.
    - A dropped connection, a node restart, a 429, a 503 or a stream the node ended (its
      token expired: pass a token source to get a fresh one) reconnect after a backoff with
      jitter, resuming after the last event seen, so nothing is lost or repeated while the
      feed still holds it. If it no longer does, the first item is a :class:`Snapshot` with
      ``reset`` true (carrying the scopes' present; none without scopes).
    - Events whose ``version`` is not above the one seen for their user are dropped.
    - ``retries`` bounds failed attempts in a row (``None``: forever); past it, and for
      errors that will not go away (401, 403, 400), the iterator raises
      :class:`PresenceError`.
    """

    def __init__(
        self,
        client: PresenceClient,
        scopes: list[str],
        *,
        after: str | None = None,
        backoff: Backoff | None = None,
        retries: int | None = None,
        read_timeout: float = 45.0,
    ) -> None:
        self._client = client
        self.scopes = scopes
        #: The feed id of the last event or snapshot delivered (where a reconnect resumes).
        self.last_event_id: str | None = after
        self.gate = VersionGate()
        #: Successful connections so far (the first one included).
        self.connects = 0
        self._backoff = backoff or Backoff()
        self._retries = retries
        # The node sends a keep-alive comment every 15 s: silence for longer than this means
        # the connection is dead even if TCP has not noticed.
        self._read_timeout = read_timeout
        self._failures = 0
        self._run: AsyncGenerator[StreamItem, None] | None = None

    def __aiter__(self) -> PresenceFeed:
        return self

    async def __anext__(self) -> StreamItem:
        if self._run is None:
            self._run = self._items()
        return await self._run.__anext__()

    async def aclose(self) -> None:
        """Stops following the feed and closes the connection."""
        if self._run is not None:
            await self._run.aclose()

    async def __aenter__(self) -> PresenceFeed:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _items(self) -> AsyncGenerator[StreamItem, None]:
        while True:
            try:
                # aclosing: leaving (the caller's aclose) closes the HTTP response at once.
                async with contextlib.aclosing(self._connection()) as items:
                    async for item in items:
                        yield item
                log.info("presence feed ended by the node; reconnecting")
            except PresenceError as e:
                self._failed(e)
            except httpx.HTTPError as e:
                self._failed(PresenceError.unreachable(e))
            delay = self._backoff.next_delay()
            await asyncio.sleep(delay)

    def _failed(self, e: PresenceError) -> None:
        self._failures += 1
        if not e.retryable or (self._retries is not None and self._failures > self._retries):
            raise e
        log.warning("presence feed: %s; reconnecting", e)

    async def _connection(self) -> AsyncGenerator[StreamItem, None]:
        headers = {
            "Authorization": f"Bearer {await self._client.token()}",
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        params: list[tuple[str, str | int | float | bool | None]] = [("scope", s) for s in self.scopes]
        timeout = httpx.Timeout(10.0, read=self._read_timeout)
        url = self._client.base_url + "/messenger/presence/events"
        async with self._client.http.stream("GET", url, params=params, headers=headers, timeout=timeout) as resp:
            if resp.status_code != 200:
                await resp.aread()
                raise PresenceError.from_answer(resp.status_code, resp.content)
            self.connects += 1
            self._failures = 0
            self._backoff.reset()
            async for message in sse_messages(resp.aiter_lines()):
                item = self._take(message)
                if item is not None:
                    yield item

    def _take(self, message: SseMessage) -> StreamItem | None:
        if message.event == "presence":
            event = PresenceEvent.from_json(json.loads(message.data))
            self.last_event_id = event.feed_id
            return event if self.gate.admit_event(event) else None
        if message.event == "snapshot":
            snapshot = Snapshot.from_json(json.loads(message.data))
            self.last_event_id = snapshot.feed_id
            if snapshot.reset:
                self.gate.reset(snapshot)
            else:
                self.gate.seed(snapshot)
            return snapshot
        # An event type this client does not know yet: skip it, but resume after it.
        if message.id is not None:
            self.last_event_id = message.id
        return None
