"""The FastAPI example against the live node: the chat socket holds a presence session, its
message handlers report activity where the seed called update_user_activity, and the seed's
four routes answer what presenced answers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from examples.fastapi_app import Settings, create_app
from tests.conftest import SECRET, Node, make_token, unique


@pytest.fixture
def presenced(node: Node) -> Iterator[httpx.Client]:
    """Straight to the node, with a service token: what the test checks against."""
    token = make_token(unique("svc"), role="service")
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, trust_env=False) as c:
        yield c


@pytest.fixture
def app(node: Node) -> Iterator[TestClient]:
    settings = Settings(presenced_url=node.url, service_token=make_token("chat-backend", role="service"), jwt_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        yield client


def wait_for(check: Callable[[], Any], what: str, timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


def view(presenced: httpx.Client, uid: str) -> dict[str, Any]:
    r = presenced.get(f"/messenger/presence/status/{uid}")
    return r.json() if r.status_code == 200 else {}


def test_the_chat_socket_is_a_session_and_its_handlers_report_activity(app: TestClient, presenced: httpx.Client) -> None:
    uid, zone = unique(), unique("z")
    with app.websocket_connect(f"/chat/ws?token={make_token(uid)}&zone_id={zone}") as ws:
        online = wait_for(lambda: view(presenced, uid).get("status") == "online" and view(presenced, uid), "online")
        assert online["zone_id"] == zone and online["devices"] == ["web"]

        last = online["last_activity"]
        frames: list[tuple[dict[str, Any], str]] = [
            ({"type": "message.send", "conversation_id": "c1", "content": "hi"}, "message.sent"),
            ({"type": "message.edit", "message_id": 1, "content": "hi!"}, "message.edited"),
            ({"type": "read_receipt", "message_id": 1}, "read_receipt.created"),
            ({"type": "typing.start", "conversation_id": "c1"}, "typing.ok"),
            ({"type": "message.delete", "message_id": 1}, "message.deleted"),
        ]
        for frame, answer in frames:
            time.sleep(0.01)  # last_activity has millisecond resolution
            ws.send_json(frame)
            assert ws.receive_json()["type"] == answer
            # Each handler reported activity: last_activity moves (the node writes it in batches).
            wait_for(lambda: view(presenced, uid)["last_activity"] > last, f"activity from {frame['type']}")
            last = view(presenced, uid)["last_activity"]
        assert app.app.state.messages.messages[1].deleted  # type: ignore[attr-defined]

    # The socket closed: its session ended, the user is offline (no grace on the test node).
    wait_for(lambda: view(presenced, uid).get("status") == "offline", "offline after the socket closed")


def test_the_seeds_four_routes_answer_what_presenced_answers(app: TestClient, presenced: httpx.Client) -> None:
    uid, other, zone = unique(), unique(), unique("z")
    for u in (uid, other):
        presenced.post("/messenger/presence/heartbeat", json={"user_id": u, "zone_id": zone}).raise_for_status()
    auth = {"Authorization": f"Bearer {make_token(uid)}"}

    listed = app.get("/messenger/presence/online", params={"zone_id": zone, "limit": 1}, headers=auth)
    assert listed.status_code == 200
    body = listed.json()
    assert body["count"] == 2 and len(body["online_users"]) == 1 and body["next_cursor"]
    # Exactly what presenced answers the same user (a service token may see more).
    direct = presenced.get("/messenger/presence/online", params={"zone_id": zone, "limit": 1}, headers=auth).json()
    assert body == direct

    counted = app.get("/messenger/presence/count", params={"zone_id": zone}, headers=auth).json()
    assert counted["zone"] == 2 and counted["org"] is None and counted["global"] >= 2

    status = app.get(f"/messenger/presence/status/{other}", headers=auth)
    direct_status = presenced.get(f"/messenger/presence/status/{other}", headers=auth).json()
    assert status.status_code == 200 and status.json() == direct_status

    away = app.post("/messenger/presence/away", headers=auth)
    assert away.json() == {"status": "away", "user_id": uid}
    assert view(presenced, uid)["away_reason"] == "manual"


def test_the_routes_answer_as_the_caller_sees_it(app: TestClient, presenced: httpx.Client) -> None:
    # Proxied with the caller's own token: an invisible user stays hidden from others.
    hidden, viewer = unique(), unique()
    presenced.post("/messenger/presence/heartbeat", json={"user_id": hidden}).raise_for_status()
    presenced.post("/messenger/presence/online", json={"user_id": hidden, "invisible": True}).raise_for_status()
    seen = app.get(f"/messenger/presence/status/{hidden}", headers={"Authorization": f"Bearer {make_token(viewer)}"})
    assert seen.json()["status"] == "offline"
    own = app.get(f"/messenger/presence/status/{hidden}", headers={"Authorization": f"Bearer {make_token(hidden)}"})
    assert own.json()["status"] == "online" and own.json()["invisible"] is True


def test_errors_keep_presenceds_shape_and_status(app: TestClient) -> None:
    auth = {"Authorization": f"Bearer {make_token(unique())}"}
    missing = app.get(f"/messenger/presence/status/{unique('never')}", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = app.get("/messenger/presence/online", params={"limit": 0}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_argument"
    both = app.get("/messenger/presence/online", params={"zone_id": "1", "org_id": "2"}, headers=auth)
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
    anonymous = app.get("/messenger/presence/count")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated"


def test_chat_goes_on_when_presenced_is_down() -> None:
    # As in the seed, presence is best effort: nothing listens at this address.
    settings = Settings(presenced_url="http://127.0.0.1:9", service_token="unused", jwt_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect(f"/chat/ws?token={make_token(unique())}") as ws:
            ws.send_json({"type": "message.send", "conversation_id": "c1", "content": "still here"})
            assert ws.receive_json()["type"] == "message.sent"
        down = client.get("/messenger/presence/count", headers={"Authorization": f"Bearer {make_token(unique())}"})
        assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
