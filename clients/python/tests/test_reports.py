"""History, the inactive report, location and nearby, against a live node."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from presenced_client import HistoryDay, PresenceClient, PresenceError
from tests.conftest import eventually, unique

pytestmark = pytest.mark.anyio


async def test_history_is_the_users_own_and_counts_the_presence_going_on(
    user_client: Callable[..., PresenceClient], service: PresenceClient
) -> None:
    uid = unique()
    me = user_client(uid)
    await me.heartbeat()
    today = datetime.now(timezone.utc).date()
    days = await me.history(uid, start=today, end=today)
    assert days == [HistoryDay(date=today, online_seconds=days[0].online_seconds)]
    assert days[0].online_seconds >= 0
    week = await service.history(uid)
    assert len(week) == 7 and week[-1].date == today
    with pytest.raises(PresenceError) as e:
        await user_client(unique()).history(uid)
    assert e.value.code == "permission_denied"


async def test_the_inactive_report_pages_offline_users_for_the_backend(
    user_client: Callable[..., PresenceClient], service: PresenceClient
) -> None:
    uid = unique()
    me = user_client(uid)
    lease = await me.heartbeat()
    await me.end_heartbeat(lease.session_id)

    async def listed() -> bool:
        cursor: str | None = None
        while True:
            page = await service.inactive(0, limit=500, cursor=cursor)
            if any(u.user_id == uid for u in page.users):
                return True
            if page.next_cursor is None:
                return False
            cursor = page.next_cursor

    await eventually(listed, what="the user in the inactive report")
    with pytest.raises(PresenceError) as e:
        await me.inactive(0)
    assert e.value.code == "permission_denied"


async def test_nearby_finds_users_sharing_a_location_nearest_first(
    user_client: Callable[..., PresenceClient],
) -> None:
    # A point of its own, so that other tests' users are never near.
    lat, lon = random.uniform(-60, 60), random.uniform(-170, 170)
    near, far = unique("near"), unique("far")
    for uid, dlat in ((near, 0.001), (far, 0.01)):
        c = user_client(uid)
        await c.heartbeat()
        view = await c.set_location(lat + dlat, lon)
        assert view.user_id == uid and "location" not in view.extra
    asker = user_client(unique())
    found = await asker.nearby(lat, lon, 5_000)
    assert [n.view.user_id for n in found] == [near, far]
    assert 50 < found[0].distance_m < 200 and found[0].distance_m < found[1].distance_m
    assert [n.view.user_id for n in await asker.nearby(lat, lon, 5_000, limit=1)] == [near]
    await user_client(near).clear_location()
    assert [n.view.user_id for n in await asker.nearby(lat, lon, 5_000)] == [far]
    with pytest.raises(PresenceError) as e:
        await asker.nearby(lat, lon, 0)
    assert e.value.code == "invalid_argument"
    with pytest.raises(PresenceError) as e:
        await user_client(unique()).set_location(lat, lon)
    assert e.value.code == "not_found"
