"""SPEC §6's error shape mapped to PresenceError: from a live node where it can make the
error, from a stand-in transport for bodies a node never sends (a proxy's page)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from presenced_client import PresenceClient, PresenceError
from tests.conftest import Node, cancel, eventually, fast_backoff, make_token, start_node, unique

pytestmark = pytest.mark.anyio


async def expect(code: str, status: int | None, call: object) -> PresenceError:
    with pytest.raises(PresenceError) as info:
        await call  # type: ignore[misc]
    e = info.value
    assert (e.code, e.status) == (code, status), e
    assert e.message
    return e


async def test_a_bad_token_is_unauthenticated(node: Node) -> None:
    async with PresenceClient(node.url, "not-a-jwt") as c:
        e = await expect("unauthenticated", 401, c.count())
    assert not e.retryable
    expired = make_token(unique(), ttl=-60)
    async with PresenceClient(node.url, expired) as c:
        await expect("unauthenticated", 401, c.status("1"))


async def test_a_user_naming_another_user_is_denied(user_client: Callable[..., PresenceClient]) -> None:
    me = user_client(unique())
    await expect("permission_denied", 403, me.set_away(user_id=unique()))
    await expect("permission_denied", 403, me.activity([unique()]))


async def test_unknown_users_and_sessions_are_not_found(service: PresenceClient) -> None:
    await expect("not_found", 404, service.status(unique("never")))
    uid = unique()
    await service.heartbeat(user_id=uid)
    await expect("not_found", 404, service.renew_heartbeat("Zz9Zz9Zz", user_id=uid))
    await expect("not_found", 404, service.set_away(user_id=unique("never")))


async def test_bad_arguments_are_invalid(service: PresenceClient) -> None:
    e = await expect("invalid_argument", 400, service.online_page(limit=0))
    assert "limit" in e.message
    await expect("invalid_argument", 400, service.online_page(zone_id="1", org_id="2"))
    await expect("invalid_argument", 400, service.online_page(cursor="garbage!"))
    await expect("invalid_argument", 400, service.status("not an id"))
    await expect("invalid_argument", 400, service.batch(str(i) for i in range(1001)))
    await expect("invalid_argument", 400, service.set_custom_status("custom", text="x" * 141, user_id="1"))


async def test_too_many_requests_are_rate_limited(node: Node) -> None:
    # A user token's REST budget is 50/s with bursts of 100 (service tokens have none).
    # Rounds of 150 at once until one is refused: on a loaded machine the bucket refills
    # while a slow round trickles in.
    errors: list[PresenceError] = []
    async with PresenceClient(node.url, make_token(unique())) as c:
        for _ in range(10):
            results = await asyncio.gather(*(c.count() for _ in range(150)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, PresenceError)]
            assert len(errors) + sum(1 for r in results if not isinstance(r, BaseException)) == 150
            if errors:
                break
    assert errors, "rounds of 150 requests at once should pass the burst of 100"
    assert all(e.is_rate_limited and e.status == 429 and e.retryable for e in errors)
    assert not any(e.is_unavailable for e in errors)


@pytest.fixture
async def full_node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node that holds one connection at most."""
    n = await asyncio.to_thread(start_node, tmp_path, "--max-connections", "1")
    yield n
    await asyncio.to_thread(n.stop)


async def test_a_full_node_is_unavailable_and_the_feed_waits_for_a_slot(full_node: Node) -> None:
    async with PresenceClient(full_node.url, make_token(unique("svc"), role="service")) as c:
        holder = c.events()
        holding = asyncio.create_task(anext(holder))
        await eventually(lambda: holder.connects == 1, what="the first stream to hold the slot")

        refused = c.events(retries=0)
        e = await expect("unavailable", 503, anext(refused))
        assert e.is_unavailable and e.retryable and not e.is_rate_limited
        await refused.aclose()
        await expect("unavailable", 503, c.session().connect())

        # A feed that may retry gets in once the slot is free.
        waiting = c.events(["global"], backoff=fast_backoff())
        first = asyncio.create_task(anext(waiting))
        await asyncio.sleep(0.3)
        assert waiting.connects == 0
        await cancel(holding)
        await holder.aclose()
        await eventually(lambda: waiting.connects == 1, what="the waiting feed to connect")
        await cancel(first)
        await waiting.aclose()


async def test_no_answer_is_unavailable_without_a_status() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    async with PresenceClient(f"http://127.0.0.1:{port}", "t") as c:
        e = await expect("unavailable", None, c.count())
        assert e.is_unavailable and e.retryable


def stand_in(status: int, body: bytes, content_type: str) -> PresenceClient:
    transport = httpx.MockTransport(lambda req: httpx.Response(status, content=body, headers={"content-type": content_type}))
    return PresenceClient("http://presenced.test", "t", http=httpx.AsyncClient(transport=transport))


async def test_bodies_not_in_the_error_shape_still_map_by_status() -> None:
    e = await expect("unavailable", 502, stand_in(502, b"<html>Bad Gateway</html>", "text/html").count())
    assert "Bad Gateway" in e.message and e.retryable
    await expect("rate_limited", 429, stand_in(429, b"slow down", "text/plain").count())
    await expect("internal", 500, stand_in(500, b"", "text/plain").count())
    await expect("not_found", 404, stand_in(404, b'{"detail": "nope"}', "application/json").status("1"))
    e = await expect("conflict", 409, stand_in(409, b'{"error": {"code": "conflict", "message": "m"}}', "application/json").count())
    assert str(e) == "conflict (409): m"


def test_errors_pickle_with_their_fields() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(PresenceError("rate_limited", 429, "m")))
    assert (e.code, e.status, e.message) == ("rate_limited", 429, "m")
