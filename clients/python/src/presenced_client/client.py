"""`PresenceClient`: the REST API of SPEC §6 over httpx, and the doors to the two streams."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import date, datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Union

import httpx

from .errors import PresenceError
from .models import (
    Counts,
    CustomStatusKind,
    Device,
    HistoryDay,
    InactivePage,
    LastSeenVisibility,
    Lease,
    NearbyUser,
    OnlinePage,
    PresenceView,
    PresenceVisibility,
    SessionInfo,
    StatusChange,
    format_time,
)
from .ordering import Backoff

if TYPE_CHECKING:
    from .feed import PresenceFeed
    from .session import PresenceSession

log = logging.getLogger("presenced_client")

#: A token, or something that returns one (sync or async), asked before every request and
#: every reconnect, so a long-lived stream survives token rotation.
TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]
UserRef = Union[str, int]

PRESENCE = "/messenger/presence"


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _id(v: UserRef | None) -> str | None:
    return None if v is None else str(v)


class PresenceClient:
    """A client for one presenced node (or a load balancer in front of several).

    ``token`` is a JWT (SPEC §7): a user token acts for its ``sub``; a service token acts for
    any user, named with ``user_id=`` on the calls that take it. Every call raises
    :class:`PresenceError` for anything but success.

    One client holds one connection pool; ``with_token`` makes another client on the same
    pool (a backend proxying a user's request with the user's own token, say). Close the
    client that made the pool (``aclose`` or ``async with``).
    """

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        # Presence answers are small; `trust_env=False` keeps HTTP(S)_PROXY settings meant
        # for the outside world away from a service that normally sits next door.
        self._http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)
        self._owns_http = http is None

    # -- plumbing -----------------------------------------------------------------------

    def with_token(self, token: TokenSource) -> PresenceClient:
        """A client for the same node and connection pool, acting with another token."""
        return PresenceClient(self.base_url, token, http=self._http)

    @property
    def has_token_source(self) -> bool:
        """Whether the token comes from a callable (which may give a fresh one)."""
        return not isinstance(self._token, str)

    async def token(self) -> str:
        """The current token (asks the token source, if one was given)."""
        if isinstance(self._token, str):
            return self._token
        t = self._token()
        if inspect.isawaitable(t):
            t = await t
        return t

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> PresenceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client underneath (the streams use it too)."""
        return self._http

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {await self.token()}"}
        try:
            resp = await self._http.request(
                method,
                self.base_url + path,
                params=_drop_none(params or {}),
                json=body,
                headers=headers,
            )
        except httpx.HTTPError as e:
            raise PresenceError.unreachable(e) from e
        if resp.status_code >= 400:
            raise PresenceError.from_answer(resp.status_code, resp.content)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # -- reads ----------------------------------------------------------------------------

    async def status(self, user_id: UserRef) -> PresenceView:
        """One user's view; ``not_found`` (404) if the user was never seen or expired."""
        return PresenceView.from_json(await self._call("GET", f"{PRESENCE}/status/{user_id}"))

    async def batch(self, user_ids: Iterable[UserRef]) -> dict[str, PresenceView | None]:
        """Many users in one round trip (at most ``batch_ids``, 1000 by default): id → view,
        ``None`` for users without presence."""
        d = await self._call("POST", f"{PRESENCE}/status/batch", body={"user_ids": [str(u) for u in user_ids]})
        return {k: None if v is None else PresenceView.from_json(v) for k, v in d["users"].items()}

    async def online_page(
        self,
        *,
        zone_id: UserRef | None = None,
        org_id: UserRef | None = None,
        status: Literal["online", "away"] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> OnlinePage:
        """One page of users online or away in a scope (global, or ``zone_id`` or
        ``org_id``), most recent activity first. ``limit`` 1-1000 (the node's default is 100).
        A filtered page (``status=``) may hold fewer than ``limit`` users and still have a
        ``next_cursor``."""
        params = {
            "zone_id": _id(zone_id),
            "org_id": _id(org_id),
            "status": status,
            "limit": limit,
            "cursor": cursor,
        }
        return OnlinePage.from_json(await self._call("GET", f"{PRESENCE}/online", params=params))

    async def online_pages(
        self,
        *,
        zone_id: UserRef | None = None,
        org_id: UserRef | None = None,
        status: Literal["online", "away"] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[OnlinePage]:
        """Every page of a scope in turn, following ``next_cursor``."""
        cursor: str | None = None
        while True:
            page = await self.online_page(zone_id=zone_id, org_id=org_id, status=status, limit=limit, cursor=cursor)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def online(
        self,
        *,
        zone_id: UserRef | None = None,
        org_id: UserRef | None = None,
        status: Literal["online", "away"] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[PresenceView]:
        """Every user online or away in a scope, one page (``limit`` users) per request::

            async for view in client.online(zone_id="10"):
                ...
        """
        async for page in self.online_pages(zone_id=zone_id, org_id=org_id, status=status, limit=limit):
            for view in page.online_users:
                yield view

    async def count(self, *, zone_id: UserRef | None = None, org_id: UserRef | None = None) -> Counts:
        """Users online or away: globally, and in ``zone_id`` / ``org_id`` when asked."""
        d = await self._call("GET", f"{PRESENCE}/count", params={"zone_id": _id(zone_id), "org_id": _id(org_id)})
        return Counts.from_json(d)

    # -- activity and sessions ---------------------------------------------------------------

    async def activity(self, user_ids: Iterable[UserRef] | None = None) -> None:
        """Reports activity: for the token's user (``None``), or for many users at once
        (a service token). It keeps them online and brings them back from auto-away; users
        with no session are ignored (presence comes from sessions)."""
        body = None if user_ids is None else {"user_ids": [str(u) for u in user_ids]}
        await self._call("POST", f"{PRESENCE}/activity", body=body)

    async def heartbeat(
        self,
        *,
        device: Device | None = None,
        zone_id: UserRef | None = None,
        org_id: UserRef | None = None,
        user_id: UserRef | None = None,
    ) -> Lease:
        """Opens a session without a WebSocket, leased for ``online_ttl`` (300 s by default):
        renew it with :meth:`renew_heartbeat`, end it with :meth:`end_heartbeat`, or let
        :meth:`lease` do both."""
        body = _drop_none({"device": device, "zone_id": _id(zone_id), "org_id": _id(org_id), "user_id": _id(user_id)})
        return Lease.from_json(await self._call("POST", f"{PRESENCE}/heartbeat", body=body))

    async def renew_heartbeat(self, session_id: str, *, user_id: UserRef | None = None) -> Lease:
        """Renews a REST session; ``not_found`` if it already ended (open a new one)."""
        body = _drop_none({"session_id": session_id, "user_id": _id(user_id)})
        return Lease.from_json(await self._call("POST", f"{PRESENCE}/heartbeat", body=body))

    async def sessions(self, user_id: UserRef) -> list[SessionInfo]:
        """A user's open sessions, oldest first (their own token, or a service or admin
        token; another user's token gets ``permission_denied``)."""
        answer = await self._call("GET", f"{PRESENCE}/sessions/{_id(user_id)}")
        return [SessionInfo.from_json(s) for s in answer["sessions"]]

    async def end_session(self, user_id: UserRef, session_id: str) -> None:
        """Ends one of a user's sessions (service and admin tokens): its WebSocket is closed
        with 4011, or its REST lease ends; ``not_found`` if it is not open."""
        await self._call("DELETE", f"{PRESENCE}/sessions/{_id(user_id)}/{session_id}")

    async def end_heartbeat(self, session_id: str, *, user_id: UserRef | None = None) -> None:
        """Ends a REST session now (the offline grace follows)."""
        await self._call(
            "DELETE", f"{PRESENCE}/heartbeat", params={"session_id": session_id, "user_id": _id(user_id)}
        )

    @contextlib.asynccontextmanager
    async def lease(
        self,
        *,
        device: Device | None = None,
        zone_id: UserRef | None = None,
        org_id: UserRef | None = None,
        user_id: UserRef | None = None,
        renew_every: float | None = None,
    ) -> AsyncIterator[LeaseKeeper]:
        """A REST session held for the block: opened on entry, renewed in the background
        (by default at half its remaining lease), ended on exit. A renewal that finds the
        session gone (the store lost it) opens a new one."""
        keeper = LeaseKeeper(self, device=device, zone_id=zone_id, org_id=org_id, user_id=user_id)
        await keeper.open()
        task = asyncio.create_task(keeper.keep(renew_every))
        try:
            yield keeper
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Shielded: if the block ends because its task is being cancelled (a server
            # shutting down, a framework dropping a handler), the session still ends now
            # rather than lingering for `online_ttl`.
            ending = asyncio.ensure_future(keeper.end())
            ending.add_done_callback(_log_failure)
            with contextlib.suppress(PresenceError):
                await asyncio.shield(ending)

    # -- changes ----------------------------------------------------------------------------

    async def set_away(self, *, user_id: UserRef | None = None, invisible: bool | None = None) -> StatusChange:
        """Manual away (sticks until set online); ``invisible`` turns invisible on or off in
        the same step."""
        return StatusChange.from_json(await self._call("POST", f"{PRESENCE}/away", body=self._status_body(user_id, invisible)))

    async def set_online(self, *, user_id: UserRef | None = None, invisible: bool | None = None) -> StatusChange:
        """Back online (clears manual away); ``invisible`` as for :meth:`set_away`."""
        return StatusChange.from_json(await self._call("POST", f"{PRESENCE}/online", body=self._status_body(user_id, invisible)))

    @staticmethod
    def _status_body(user_id: UserRef | None, invisible: bool | None) -> dict[str, Any] | None:
        body = _drop_none({"user_id": _id(user_id), "invisible": invisible})
        return body or None

    async def set_custom_status(
        self,
        kind: CustomStatusKind,
        *,
        text: str | None = None,
        emoji: str | None = None,
        expires_at: datetime | None = None,
        user_id: UserRef | None = None,
    ) -> PresenceView:
        """Sets the custom status (``status`` is left alone); answers the view."""
        body = _drop_none(
            {
                "kind": kind,
                "text": text,
                "emoji": emoji,
                "expires_at": None if expires_at is None else format_time(expires_at),
                "user_id": _id(user_id),
            }
        )
        return PresenceView.from_json(await self._call("PUT", f"{PRESENCE}/custom-status", body=body))

    async def clear_custom_status(self, *, user_id: UserRef | None = None) -> PresenceView:
        return PresenceView.from_json(
            await self._call("DELETE", f"{PRESENCE}/custom-status", params={"user_id": _id(user_id)})
        )

    async def set_privacy(
        self,
        *,
        presence: PresenceVisibility | None = None,
        last_seen: LastSeenVisibility | None = None,
        user_id: UserRef | None = None,
    ) -> PresenceView:
        """Sets who sees the real status and how others see last seen; a setting left out
        stays. Answers the user's own view (with ``privacy``); ``not_found`` for a user with
        no presence yet."""
        body = _drop_none({"presence": presence, "last_seen": last_seen, "user_id": _id(user_id)})
        return PresenceView.from_json(await self._call("PUT", f"{PRESENCE}/privacy", body=body))

    async def set_zone(self, zone_id: UserRef | None, *, user_id: UserRef | None = None) -> PresenceView:
        """Moves the user to a zone (``None``: out of every zone); answers the view."""
        body = {"zone_id": _id(zone_id), **_drop_none({"user_id": _id(user_id)})}
        return PresenceView.from_json(await self._call("PUT", f"{PRESENCE}/zone", body=body))

    async def set_org(self, org_id: UserRef | None, *, user_id: UserRef | None = None) -> PresenceView:
        """Moves the user to an org (``None``: out of every org); answers the view."""
        body = {"org_id": _id(org_id), **_drop_none({"user_id": _id(user_id)})}
        return PresenceView.from_json(await self._call("PUT", f"{PRESENCE}/org", body=body))

    # -- reports and nearby -----------------------------------------------------------------

    async def history(
        self, user_id: UserRef, *, start: date | None = None, end: date | None = None
    ) -> list[HistoryDay]:
        """Seconds the user was present per UTC day from ``start`` to ``end`` (inclusive;
        default: the last 7 days), zeros included: the user's own token, or a service or
        admin token."""
        params = {
            "from": None if start is None else start.isoformat(),
            "to": None if end is None else end.isoformat(),
        }
        answer = await self._call("GET", f"{PRESENCE}/history/{_id(user_id)}", params=params)
        return [HistoryDay.from_json(d) for d in answer["days"]]

    async def inactive(self, days: int, *, limit: int | None = None, cursor: str | None = None) -> InactivePage:
        """One page of the offline users last seen more than ``days`` × 24 h ago, oldest
        first (service and admin tokens)."""
        params = {"days": str(days), "limit": None if limit is None else str(limit), "cursor": cursor}
        return InactivePage.from_json(await self._call("GET", f"{PRESENCE}/inactive", params=params))

    async def set_location(self, lat: float, lon: float, *, user_id: UserRef | None = None) -> PresenceView:
        """Shares the user's location for :meth:`nearby` until they go offline or clear it
        (``conflict`` while offline); answers the view, which does not show it."""
        body = {"lat": lat, "lon": lon, **_drop_none({"user_id": _id(user_id)})}
        return PresenceView.from_json(await self._call("PUT", f"{PRESENCE}/location", body=body))

    async def clear_location(self, *, user_id: UserRef | None = None) -> PresenceView:
        """Stops sharing the user's location; answers the view."""
        return PresenceView.from_json(
            await self._call("DELETE", f"{PRESENCE}/location", params={"user_id": _id(user_id)})
        )

    async def nearby(self, lat: float, lon: float, radius_m: float, *, limit: int | None = None) -> list[NearbyUser]:
        """Online and away users sharing a location within ``radius_m`` of the point,
        nearest first."""
        params = {"lat": repr(lat), "lon": repr(lon), "radius_m": repr(radius_m), "limit": None if limit is None else str(limit)}
        answer = await self._call("GET", f"{PRESENCE}/nearby", params=params)
        return [NearbyUser.from_json(u) for u in answer["users"]]

    # -- streams ----------------------------------------------------------------------------

    def events(
        self,
        scopes: Iterable[str] = (),
        *,
        after: str | None = None,
        backoff: Backoff | None = None,
        retries: int | None = None,
        read_timeout: float = 45.0,
    ) -> PresenceFeed:
        """The feed as Server-Sent Events, reconnecting and resuming by itself. See
        :class:`PresenceFeed`."""
        from .feed import PresenceFeed

        return PresenceFeed(
            self, list(scopes), after=after, backoff=backoff, retries=retries, read_timeout=read_timeout
        )

    def session(
        self,
        *,
        zone_id: UserRef | None = None,
        org_id: UserRef | None = None,
        device: Device = "web",
        invisible: bool = False,
        backoff: Backoff | None = None,
        retries: int | None = None,
    ) -> PresenceSession:
        """A WebSocket session of the token's user (``invisible=True``: open it invisible).
        See :class:`PresenceSession`."""
        from .session import PresenceSession

        return PresenceSession(
            self,
            zone_id=_id(zone_id),
            org_id=_id(org_id),
            device=device,
            invisible=invisible,
            backoff=backoff,
            retries=retries,
        )


def _log_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (e := done.exception()) is not None:
        log.warning("ending a REST session failed: %s", e)


class LeaseKeeper:
    """A REST session kept alive by :meth:`PresenceClient.lease`."""

    def __init__(
        self,
        client: PresenceClient,
        *,
        device: Device | None,
        zone_id: UserRef | None,
        org_id: UserRef | None,
        user_id: UserRef | None,
    ) -> None:
        self._client = client
        self._open_args: dict[str, Any] = {"device": device, "zone_id": zone_id, "org_id": org_id, "user_id": user_id}
        self._user_id = user_id
        self.current: Lease | None = None

    @property
    def session_id(self) -> str:
        assert self.current is not None, "the lease is not open"
        return self.current.session_id

    async def open(self) -> Lease:
        self.current = await self._client.heartbeat(**self._open_args)
        return self.current

    async def renew(self) -> Lease:
        try:
            self.current = await self._client.renew_heartbeat(self.session_id, user_id=self._user_id)
        except PresenceError as e:
            if e.code != "not_found":
                raise
            log.info("REST session %s is gone; opening a new one", self.session_id)
            await self.open()
        assert self.current is not None
        return self.current

    def _next_wait(self, renew_every: float | None) -> float:
        if renew_every is not None:
            return renew_every
        assert self.current is not None
        left = (self.current.expires_at - datetime.now(timezone.utc)).total_seconds()
        return max(1.0, left / 2)

    async def keep(self, renew_every: float | None) -> None:
        failures = Backoff(1.0, 30.0)
        wait = self._next_wait(renew_every)
        while True:
            await asyncio.sleep(wait)
            try:
                await self.renew()
                failures.reset()
                wait = self._next_wait(renew_every)
            except PresenceError as e:
                wait = failures.next_delay()
                log.warning("renewing REST session failed (%s); again in %.1fs", e, wait)

    async def end(self) -> None:
        if self.current is not None:
            await self._client.end_heartbeat(self.current.session_id, user_id=self._user_id)
            self.current = None
