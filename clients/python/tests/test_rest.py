"""Every REST call of the client against a live node."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from presenced_client import PresenceClient, PresenceView, Privacy
from tests.conftest import Node, eventually, unique

pytestmark = pytest.mark.anyio


async def test_heartbeat_status_renew_and_end(user_client: Callable[..., PresenceClient], service: PresenceClient) -> None:
    uid, zone, org = unique(), unique("z"), unique("o")
    me = user_client(uid)
    lease = await me.heartbeat(device="desktop", zone_id=zone, org_id=org)
    assert lease.session_id
    assert lease.expires_at > datetime.now(timezone.utc) + timedelta(seconds=200)

    view = await me.status(uid)
    assert (view.user_id, view.status, view.zone_id, view.org_id) == (uid, "online", zone, org)
    assert view.devices == ("desktop",)
    assert view.away_reason is None and view.last_seen is None and view.custom_status is None
    assert view.version >= 1

    renewed = await me.renew_heartbeat(lease.session_id)
    assert renewed.session_id == lease.session_id
    assert renewed.expires_at >= lease.expires_at

    await me.end_heartbeat(lease.session_id)

    async def offline() -> bool:
        return (await service.status(uid)).status == "offline"

    await eventually(offline, what="offline after the heartbeat ended")
    gone = await service.status(uid)
    assert isinstance(gone.last_seen, datetime)


async def test_a_service_token_acts_for_any_user(service: PresenceClient) -> None:
    uid = unique()
    lease = await service.heartbeat(user_id=uid, device="mobile")
    assert (await service.status(uid)).devices == ("mobile",)
    assert (await service.renew_heartbeat(lease.session_id, user_id=uid)).session_id == lease.session_id
    await service.end_heartbeat(lease.session_id, user_id=uid)


async def test_batch_answers_none_for_unknown_users(service: PresenceClient) -> None:
    a, b, nobody = unique(), unique(), unique("nobody")
    await service.heartbeat(user_id=a)
    await service.heartbeat(user_id=b)
    views = await service.batch([a, b, nobody])
    assert set(views) == {a, b, nobody}
    assert views[nobody] is None
    assert all(isinstance(views[u], PresenceView) for u in (a, b))


async def test_online_pages_follow_next_cursor(service: PresenceClient) -> None:
    zone = unique("z")
    users = [unique() for _ in range(7)]
    for u in users:
        await service.heartbeat(user_id=u, zone_id=zone)

    pages = [p async for p in service.online_pages(zone_id=zone, limit=3)]
    assert [len(p.online_users) for p in pages] == [3, 3, 1]
    assert all(p.count == 7 for p in pages)
    assert pages[-1].next_cursor is None

    seen = [v.user_id async for v in service.online(zone_id=zone, limit=3)]
    assert sorted(seen) == sorted(users)  # each exactly once
    # Most recent activity first: the last to come online leads.
    assert seen[0] == users[-1]

    first = await service.online_page(zone_id=zone, limit=5)
    rest = await service.online_page(zone_id=zone, limit=5, cursor=first.next_cursor)
    assert len(first.online_users) == 5 and len(rest.online_users) == 2

    await service.set_away(user_id=users[0])
    away = [v.user_id async for v in service.online(zone_id=zone, status="away")]
    assert away == [users[0]]
    online = [v.user_id async for v in service.online(zone_id=zone, status="online")]
    assert sorted(online) == sorted(users[1:])


async def test_count_global_zone_and_org(service: PresenceClient) -> None:
    zone, org = unique("z"), unique("o")
    for _ in range(3):
        await service.heartbeat(user_id=unique(), zone_id=zone, org_id=org)
    counts = await service.count(zone_id=zone)
    assert counts.zone == 3 and counts.org is None and counts.global_ >= 3
    counts = await service.count(zone_id=zone, org_id=org)
    assert (counts.zone, counts.org) == (3, 3)
    assert (await service.count(zone_id=unique("empty"))).zone == 0
    assert (await service.count()).to_json().keys() == {"global", "zone", "org"}


async def test_activity_for_the_token_user_and_for_many(
    user_client: Callable[..., PresenceClient], service: PresenceClient
) -> None:
    a, b = unique(), unique()
    await service.heartbeat(user_id=a)
    await service.heartbeat(user_id=b)
    before = await service.batch([a, b])

    await service.activity([a, b])
    await user_client(a).activity()

    def last_activity(views: dict[str, PresenceView | None], u: str) -> datetime:
        v = views[u]
        assert v is not None and v.last_activity is not None
        return v.last_activity

    async def refreshed() -> bool:
        now = await service.batch([a, b])
        return all(last_activity(now, u) > last_activity(before, u) for u in (a, b))

    await eventually(refreshed, what="last_activity to move (activity is flushed every 250 ms)")
    # Activity alone changes no version: it is not an event.
    after = await service.batch([a, b])
    assert all((v := after[u]) is not None and (w := before[u]) is not None and v.version == w.version for u in (a, b))


async def test_away_online_and_invisible(user_client: Callable[..., PresenceClient], service: PresenceClient) -> None:
    uid, other = unique(), unique()
    me = user_client(uid)
    await me.heartbeat()

    change = await me.set_away()
    assert (change.status, change.user_id) == ("away", uid)
    view = await me.status(uid)
    assert (view.status, view.away_reason) == ("away", "manual")

    assert (await me.set_online(invisible=True)).status == "online"
    assert (await me.status(uid)).invisible is True  # the user's own view: the truth
    seen_by_other = await user_client(other).status(uid)
    assert (seen_by_other.status, seen_by_other.invisible) == ("offline", False)
    assert (await service.status(uid)).invisible is True  # service tokens see the truth

    await service.set_online(user_id=uid, invisible=False)
    assert (await user_client(other).status(uid)).status == "online"
    assert (await service.set_away(user_id=uid)).user_id == uid


async def test_custom_status_set_and_cleared(user_client: Callable[..., PresenceClient], service: PresenceClient) -> None:
    uid = unique()
    me = user_client(uid)
    await me.heartbeat()
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    view = await me.set_custom_status("in_meeting", text="Standup", emoji="📅", expires_at=until)
    cs = view.custom_status
    assert cs is not None
    assert (cs.kind, cs.text, cs.emoji) == ("in_meeting", "Standup", "📅")
    assert cs.expires_at is not None and abs((cs.expires_at - until).total_seconds()) < 0.002
    assert view.status == "online"  # left alone

    assert (await me.clear_custom_status()).custom_status is None
    assert (await service.set_custom_status("dnd", user_id=uid)).custom_status is not None
    assert (await service.clear_custom_status(user_id=uid)).custom_status is None


async def test_privacy_settings(user_client: Callable[..., PresenceClient], service: PresenceClient) -> None:
    uid, org = unique(), unique("o")
    me = user_client(uid)
    lease = await me.heartbeat(org_id=org)
    own = await me.set_privacy(presence="org")
    assert own.privacy == Privacy("org", "exact")
    stranger, colleague = user_client(unique()), user_client(unique(), org=org)
    seen = await stranger.status(uid)
    assert (seen.status, seen.privacy) == ("offline", None)  # the settings are not theirs to see
    assert (await colleague.status(uid)).status == "online"

    # How last seen shows once the user has left.
    view = await service.set_privacy(presence="everyone", last_seen="approximate", user_id=uid)
    assert view.privacy == Privacy("everyone", "approximate")
    await me.end_heartbeat(lease.session_id)

    async def offline() -> bool:
        return (await service.status(uid)).status == "offline"

    await eventually(offline, what="offline")
    assert (await stranger.status(uid)).last_seen == "recently"
    assert isinstance((await me.status(uid)).last_seen, datetime)  # the truth for the user
    await me.set_privacy(last_seen="hidden")
    assert (await stranger.status(uid)).last_seen is None


async def test_zone_and_org_moves(user_client: Callable[..., PresenceClient]) -> None:
    uid, z1, z2, org = unique(), unique("z"), unique("z"), unique("o")
    me = user_client(uid)
    await me.heartbeat(zone_id=z1)
    assert (await me.set_zone(z2)).zone_id == z2
    assert (await me.count(zone_id=z1)).zone == 0
    assert (await me.set_zone(None)).zone_id is None
    assert (await me.set_org(org)).org_id == org
    assert (await me.set_org(None)).org_id is None


async def test_lease_renews_in_the_background_and_ends_on_exit(service: PresenceClient) -> None:
    uid = unique()
    async with service.lease(user_id=uid, device="other", renew_every=0.2) as keeper:
        first = keeper.current
        assert first is not None
        assert (await service.status(uid)).status == "online"

        def renewed() -> bool:
            return keeper.current is not None and keeper.current.expires_at > first.expires_at

        await eventually(renewed, what="a renewal")
        assert keeper.session_id == first.session_id

    async def offline() -> bool:
        return (await service.status(uid)).status == "offline"

    await eventually(offline, what="offline after the lease ended")


async def test_a_lost_lease_is_opened_again(service: PresenceClient) -> None:
    uid = unique()
    async with service.lease(user_id=uid, renew_every=0.2) as keeper:
        lost = keeper.session_id
        # Someone ends the session underneath (as a store that lost it would).
        await service.end_heartbeat(lost, user_id=uid)
        await eventually(lambda: keeper.session_id != lost, what="a new session")
        assert (await service.status(uid)).status == "online"


async def test_views_go_back_out_exactly_as_presenced_wrote_them(node: Node, service: PresenceClient, service_token: str) -> None:
    uid, zone = unique(), unique("z")
    await service.heartbeat(user_id=uid, zone_id=zone, device="web")
    await service.set_custom_status("busy", text="x", user_id=uid)
    headers = {"Authorization": f"Bearer {service_token}"}
    async with httpx.AsyncClient(base_url=node.url, headers=headers) as raw:
        status = (await raw.get(f"/messenger/presence/status/{uid}")).json()
        page = (await raw.get("/messenger/presence/online", params={"zone_id": zone})).json()
        count = (await raw.get("/messenger/presence/count", params={"zone_id": zone})).json()
    assert (await service.status(uid)).to_json() == status
    assert (await service.online_page(zone_id=zone)).to_json() == page
    assert (await service.count(zone_id=zone)).to_json() == count


async def test_with_token_shares_the_pool(node: Node, service: PresenceClient) -> None:
    uid = unique()
    await service.heartbeat(user_id=uid)
    from tests.conftest import make_token

    as_user = service.with_token(make_token(uid))
    assert as_user.http is service.http
    assert (await as_user.set_away()).user_id == uid
    await as_user.aclose()  # does not close the shared pool
    assert (await service.status(uid)).status == "away"


async def test_a_token_source_is_asked_for_every_call(node: Node) -> None:
    from tests.conftest import make_token

    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        return make_token(unique("svc"), role="service")

    async with PresenceClient(node.url, token) as c:
        await c.count()
        await c.count()
    assert calls == 2


async def test_unknown_fields_from_a_newer_node_are_kept() -> None:
    raw: dict[str, object] = {
        "user_id": "1",
        "status": "offline",
        "away_reason": None,
        "last_activity": "2024-11-26T10:25:00.000Z",
        "last_seen": "recently",
        "zone_id": None,
        "org_id": None,
        "devices": [],
        "custom_status": None,
        "metadata": {"a": 1},
        "invisible": False,
        "version": 3,
        "updated_at": "2024-11-26T10:25:00.120Z",
        "privacy": {"presence": "everyone", "last_seen": "approximate"},
        "location": {"lat": 1.5, "lon": 2.5},
    }
    view = PresenceView.from_json(raw)
    assert view.last_seen == "recently"
    assert view.privacy == Privacy("everyone", "approximate")
    assert view.extra == {"location": {"lat": 1.5, "lon": 2.5}}
    assert view.to_json() == raw
