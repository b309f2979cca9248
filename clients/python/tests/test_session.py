"""The WebSocket session: frames, subscriptions, errors, and resume after a dropped
connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from presenced_client import CountUpdate, PresenceClient, PresenceError, PresenceEvent, PresenceSession, SessionItem, Snapshot
from tests.conftest import CuttableProxy, Node, eventually, fast_backoff, make_token, unique

pytestmark = pytest.mark.anyio


async def next_item(s: PresenceSession, timeout: float = 10.0) -> SessionItem:
    return await asyncio.wait_for(anext(s), timeout)


async def next_event(s: PresenceSession, user: str | None = None) -> PresenceEvent:
    while True:
        item = await next_item(s)
        assert isinstance(item, PresenceEvent), item
        if user is None or item.user.user_id == user:
            return item


async def test_connect_subscribe_and_change(user_client: Callable[..., PresenceClient], service: PresenceClient) -> None:
    uid, other, zone = unique(), unique(), unique("z")
    async with user_client(uid).session(zone_id=zone, device="desktop") as s:
        assert s.presence is not None and s.presence.user_id == uid
        assert s.presence.status == "online" and s.presence.devices == ("desktop",)
        assert s.session_id and s.node_id

        snapshot = await s.subscribe(scopes=[f"zone:{zone}"], users=[other, uid])
        assert not snapshot.reset
        assert [v.user_id for v in snapshot.scopes[f"zone:{zone}"].users] == [uid]
        assert snapshot.users[other] is None and snapshot.users[uid] is not None

        await service.heartbeat(user_id=other, zone_id=unique("z"))
        e = await next_event(s, other)
        assert e.user.status == "online"

        await s.set_status("away")
        mine = await next_event(s, uid)
        assert (mine.user.status, mine.user.away_reason) == ("away", "manual")
        await s.set_status("online")
        assert (await next_event(s, uid)).user.status == "online"

        await s.set_custom_status("on_break", text="lunch")
        cs = (await next_event(s, uid)).user.custom_status
        assert cs is not None and (cs.kind, cs.text) == ("on_break", "lunch")
        await s.clear_custom_status()
        assert (await next_event(s, uid)).user.custom_status is None

        await s.set_metadata({"tab": "inbox"})
        assert (await next_event(s, uid)).user.metadata == {"tab": "inbox"}

        z2 = unique("z")
        await s.set_zone(z2)
        moved = await next_event(s, uid)  # it was in zone:{zone} before the change
        assert (moved.prev_zone_id, moved.user.zone_id, s.zone_id) == (zone, z2, z2)

        await s.ping()
        assert await s.activity() is True
        assert await s.activity() is False  # throttled: at most one frame a second

        await s.unsubscribe(users=[other])
        await service.set_away(user_id=other)
        await s.set_org(org := unique("o"))
        assert (await next_event(s)).user.org_id == org  # not the other user's away


async def test_privacy_over_the_socket(user_client: Callable[..., PresenceClient]) -> None:
    uid = unique()
    stranger = user_client(unique())
    async with user_client(uid).session() as s:
        await s.set_privacy(presence="nobody")
        assert (await stranger.status(uid)).status == "offline"
        await s.set_privacy(last_seen="hidden")  # presence stays "nobody"
        own = await user_client(uid).status(uid)
        assert own.privacy is not None and (own.privacy.presence, own.privacy.last_seen) == ("nobody", "hidden")
        await s.set_privacy(presence="everyone")
        assert (await stranger.status(uid)).status == "online"


async def test_an_error_frame_raises_with_the_rest_status(user_client: Callable[..., PresenceClient]) -> None:
    async with user_client(unique()).session() as s:
        with pytest.raises(PresenceError) as info:
            await s.set_custom_status("custom", text="x" * 141)
        assert (info.value.code, info.value.status) == ("invalid_argument", 400)
        with pytest.raises(PresenceError) as info:
            await s.subscribe(scopes=["room:1"])
        assert info.value.code == "invalid_frame"
        await s.ping()  # the connection stays open


async def test_a_refused_upgrade_raises(node: Node) -> None:
    async with PresenceClient(node.url, "bad") as c:
        with pytest.raises(PresenceError) as info:
            await c.session().connect()
    assert (info.value.code, info.value.status) == ("unauthenticated", 401)


async def test_counts_only(user_client: Callable[..., PresenceClient], service: PresenceClient) -> None:
    zone = unique("z")
    async with user_client(unique()).session() as s:
        snapshot = await s.subscribe(scopes=[f"zone:{zone}"], counts_only=True)
        assert snapshot.scopes[f"zone:{zone}"].count == 0
        await service.heartbeat(user_id=unique(), zone_id=zone)
        update = await next_item(s)
        assert update == CountUpdate(scope=f"zone:{zone}", count=1)


async def test_a_dropped_connection_resubscribes_after_the_last_event(
    node: Node, proxy: CuttableProxy, service: PresenceClient
) -> None:
    watcher, a, b, zone = unique(), unique(), unique(), unique("z")
    async with PresenceClient(proxy.url, make_token(watcher)) as c:
        async with c.session(backoff=fast_backoff()) as s:
            await s.subscribe(scopes=[f"zone:{zone}"])
            await service.heartbeat(user_id=a, zone_id=zone)
            assert (await next_event(s, a)).user.status == "online"

            proxy.refusing = True
            proxy.cut()
            await eventually(lambda: not s.connected, what="the session to notice")
            with pytest.raises(PresenceError) as info:
                await s.ping()
            assert info.value.is_unavailable
            await service.set_away(user_id=a)
            await service.heartbeat(user_id=b, zone_id=zone)
            await asyncio.sleep(0.3)
            proxy.refusing = False

            missed = [await next_event(s), await next_event(s)]
            assert [(e.user.user_id, e.user.status) for e in missed] == [(a, "away"), (b, "online")]
            assert s.connects == 2
            await service.set_away(user_id=b)
            assert (await next_event(s, b)).user.status == "away"
            await s.ping()


async def test_a_session_that_cannot_resume_gets_a_reset_snapshot(user_client: Callable[..., PresenceClient], service: PresenceClient) -> None:
    zone, a = unique("z"), unique()
    async with user_client(unique()).session(backoff=fast_backoff()) as s:
        await s.subscribe(scopes=[f"zone:{zone}"])
        await service.heartbeat(user_id=a, zone_id=zone)
        await next_event(s, a)
        # As if the feed had lost the position: one the node never made.
        s.last_feed_id = "99999999999999-0"
        s.drop_connection()
        reset = await next_item(s)
        assert isinstance(reset, Snapshot) and reset.reset
        assert [v.user_id for v in reset.scopes[f"zone:{zone}"].users] == [a]
        await service.set_away(user_id=a)
        assert (await next_event(s, a)).user.status == "away"


async def test_too_many_sessions_is_not_retried(node: Node) -> None:
    uid = unique()
    async with PresenceClient(node.url, make_token(uid)) as c:
        sessions = [c.session() for _ in range(10)]
        for s in sessions:
            await s.connect()
        with pytest.raises(PresenceError) as info:
            await c.session().connect()
        assert info.value.code == "conflict"
        for s in sessions:
            await s.close()


async def test_a_session_the_service_ends_is_not_reconnected(
    user_client: Callable[..., PresenceClient], service: PresenceClient
) -> None:
    uid = unique()
    c = user_client(uid)
    s = c.session()
    await s.connect()
    assert s.session_id is not None
    listed = await service.sessions(uid)
    assert [x.session_id for x in listed] == [s.session_id]
    assert listed[0].connected_at is not None and listed[0].node_id is not None
    await service.end_session(uid, s.session_id)
    with pytest.raises(PresenceError) as info:
        async for _ in s:
            pass
    assert info.value.code == "session_ended"
    assert await service.sessions(uid) == []
    with pytest.raises(PresenceError) as info:
        await service.end_session(uid, s.session_id)
    assert info.value.code == "not_found"


async def test_an_invisible_session_comes_back_invisible(
    user_client: Callable[..., PresenceClient], service: PresenceClient, proxy: CuttableProxy
) -> None:
    uid, peer = unique(), unique()
    watcher = user_client(peer).session()
    await watcher.connect()
    await watcher.subscribe(users=[uid])
    c = user_client(uid, url=proxy.url)
    async with c.session(backoff=fast_backoff()) as s:
        await s.set_status("online", invisible=True)
        assert s.invisible
        # The connection drops for longer than the offline grace (0 here): a new presence.
        proxy.refusing = True
        proxy.cut()

        async def status_is(want: str) -> bool:
            return (await service.status(uid)).status == want

        await eventually(lambda: status_is("offline"), what="offline")
        proxy.refusing = False

        async def read() -> None:
            async for _ in s:  # reading is what reconnects
                pass

        reader = asyncio.create_task(read())
        try:
            await eventually(lambda: s.connects == 2, what="reconnected")
            await eventually(lambda: status_is("online"), what="back")
            assert (await service.status(uid)).invisible
            assert s.presence is not None and s.presence.invisible
        finally:
            reader.cancel()
    other = user_client(peer)
    assert (await other.status(uid)).status == "offline", "never online for others"
