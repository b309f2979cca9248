"""The SSE feed: order, resume after a dropped connection, resume from a stored id, reset
snapshots, and the parts it is made of (SSE parsing, the version gate, backoff)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from presenced_client import (
    Backoff,
    PresenceClient,
    PresenceError,
    PresenceEvent,
    PresenceFeed,
    PresenceView,
    Snapshot,
    StreamItem,
    VersionGate,
)
from presenced_client.feed import SseMessage, sse_messages
from tests.conftest import CuttableProxy, cancel, Node, eventually, fast_backoff, make_token, unique

pytestmark = pytest.mark.anyio


async def next_item(feed: PresenceFeed, timeout: float = 10.0) -> StreamItem:
    return await asyncio.wait_for(anext(feed), timeout)


async def next_event(feed: PresenceFeed) -> PresenceEvent:
    item = await next_item(feed)
    assert isinstance(item, PresenceEvent), item
    return item


async def test_events_arrive_in_order_with_the_whole_view(service: PresenceClient) -> None:
    zone, uid = unique("z"), unique()
    async with service.events([f"zone:{zone}"]) as feed:
        first = asyncio.create_task(next_event(feed))
        await eventually(lambda: feed.connects == 1, what="the feed to connect")
        await service.heartbeat(user_id=uid, zone_id=zone, device="desktop")
        await service.set_away(user_id=uid)
        await service.set_custom_status("busy", text="deep work", user_id=uid)

        online = await first
        away = await next_event(feed)
        busy = await next_event(feed)
    assert [e.user.status for e in (online, away, busy)] == ["online", "away", "away"]
    assert (online.prev_status, away.prev_status) == ("offline", "online")
    assert online.user.zone_id == zone and online.user.devices == ("desktop",)
    assert busy.user.custom_status is not None and busy.user.custom_status.text == "deep work"
    assert online.user.version < away.user.version < busy.user.version
    assert feed.last_event_id == busy.feed_id


async def test_a_dropped_connection_resumes_after_the_last_event(
    node: Node, proxy: CuttableProxy, service: PresenceClient, service_token: str
) -> None:
    zone, a, b = unique("z"), unique(), unique()
    async with PresenceClient(proxy.url, service_token) as via_proxy:
        feed = via_proxy.events([f"zone:{zone}"], backoff=fast_backoff())
        first = asyncio.create_task(next_event(feed))
        await eventually(lambda: feed.connects == 1, what="the feed to connect")
        await service.heartbeat(user_id=a, zone_id=zone)
        assert (await first).user.user_id == a

        # The network fails, and stays down while presence changes.
        proxy.refusing = True
        proxy.cut()
        pending = asyncio.create_task(next_event(feed))
        await service.set_away(user_id=a)
        await service.heartbeat(user_id=b, zone_id=zone)
        await service.set_online(user_id=a)
        await asyncio.sleep(0.3)  # several refused attempts
        assert proxy.accepted == 1  # none got through
        proxy.refusing = False

        missed = [await pending, await next_event(feed), await next_event(feed)]
        assert [(e.user.user_id, e.user.status) for e in missed] == [(a, "away"), (b, "online"), (a, "online")]
        assert feed.connects == 2

        # Live events keep coming on the new connection, and nothing was repeated.
        await service.set_away(user_id=b)
        live = await next_event(feed)
        assert (live.user.user_id, live.user.status) == (b, "away")
        assert feed.last_event_id == live.feed_id
        await feed.aclose()


async def test_reading_again_from_a_stored_id_misses_nothing(service: PresenceClient) -> None:
    zone, uid = unique("z"), unique()
    async with service.events([f"zone:{zone}"]) as feed:
        first = asyncio.create_task(next_event(feed))
        await eventually(lambda: feed.connects == 1, what="the feed to connect")
        await service.heartbeat(user_id=uid, zone_id=zone)
        await first
        stored = feed.last_event_id
    assert stored is not None

    # While no one reads: two changes.
    await service.set_away(user_id=uid)
    await service.set_zone(unique("z"), user_id=uid)  # leaves the zone: still its event

    async with service.events([f"zone:{zone}"], after=stored) as again:
        away = await next_event(again)
        moved = await next_event(again)
    assert away.user.status == "away"
    assert moved.prev_zone_id == zone and moved.user.zone_id != zone


async def test_an_aged_out_id_starts_with_a_reset_snapshot(service: PresenceClient) -> None:
    zone, uid = unique("z"), unique()
    await service.heartbeat(user_id=uid, zone_id=zone)
    # An id the feed never made (from before the store lost its data, say).
    async with service.events([f"zone:{zone}"], after="99999999999999-0") as feed:
        snapshot = await next_item(feed)
        assert isinstance(snapshot, Snapshot) and snapshot.reset
        scope = snapshot.scopes[f"zone:{zone}"]
        assert scope.count == 1 and [v.user_id for v in scope.users] == [uid]
        assert feed.last_event_id == snapshot.feed_id

        await service.set_away(user_id=uid)
        event = await next_event(feed)
        assert event.user.status == "away"


async def test_a_token_source_gives_each_reconnect_a_fresh_token(node: Node, proxy: CuttableProxy) -> None:
    issued = 0

    def token() -> str:
        nonlocal issued
        issued += 1
        return make_token(unique("svc"), role="service")

    async with PresenceClient(proxy.url, token) as c:
        feed = c.events(backoff=fast_backoff())
        task = asyncio.create_task(anext(feed))
        await eventually(lambda: feed.connects == 1, what="connect")
        proxy.cut()
        await eventually(lambda: feed.connects == 2, what="reconnect")
        assert issued == 2
        await cancel(task)
        await feed.aclose()


async def test_a_rejected_token_is_raised_not_retried(node: Node) -> None:
    async with PresenceClient(node.url, "bad") as c:
        feed = c.events(backoff=fast_backoff())
        with pytest.raises(PresenceError) as info:
            await next_item(feed)
    assert (info.value.code, info.value.status) == ("unauthenticated", 401)
    assert feed.connects == 0


# -- the parts --------------------------------------------------------------------------------


async def lines(*items: str) -> AsyncIterator[str]:
    for i in items:
        yield i


async def test_sse_parsing_follows_the_standard() -> None:
    got = [
        m
        async for m in sse_messages(
            lines(": keep-alive", "", "id: 1-0", "event: presence", "data: {\"a\":", "data: 1}", "", "data:x", "", "id: 2-0", "event: unknown", "data: y", "")
        )
    ]
    assert got == [
        SseMessage("presence", '{"a":\n1}', "1-0"),
        SseMessage("message", "x", None),
        SseMessage("unknown", "y", "2-0"),
    ]


def view(user: str, version: int, updated_s: float) -> PresenceView:
    t = datetime(2024, 11, 26, tzinfo=timezone.utc)
    return PresenceView(
        user_id=user,
        status="online",
        away_reason=None,
        last_activity=t,
        last_seen=None,
        zone_id=None,
        org_id=None,
        devices=("web",),
        custom_status=None,
        metadata=None,
        invisible=False,
        privacy=None,
        version=version,
        updated_at=t + timedelta(seconds=updated_s),
    )


def test_the_gate_drops_stale_and_repeated_versions() -> None:
    gate = VersionGate()
    assert gate.admit(view("1", 2, 2))
    assert not gate.admit(view("1", 2, 2))  # repeated
    assert not gate.admit(view("1", 1, 1))  # stale
    assert gate.admit(view("1", 3, 3))
    assert gate.admit(view("2", 1, 1))  # per user
    # The record was deleted after its retention and began again at version 1, later on.
    assert gate.admit(view("1", 1, 999))
    assert gate.version_of("1") == 1


def test_a_reset_forgets_versions_and_holds_the_snapshot() -> None:
    gate = VersionGate()
    gate.admit(view("1", 9, 9))
    gate.admit(view("3", 4, 4))
    snap = Snapshot(feed_id="5-0", reset=True, scopes={}, users={"1": view("1", 2, 1), "2": None})
    gate.reset(snap)
    assert len(gate) == 1 and gate.version_of("1") == 2
    assert not gate.admit(view("1", 2, 1))  # what the snapshot showed
    assert gate.admit(view("1", 3, 2))


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 4.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert 0.25 <= b.next_delay() <= 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)
