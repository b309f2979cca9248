"""The seed's FastAPI messenger, with presenced in place of its presence module.

Where the seed's code touched presence, this app calls presenced instead:

- ``websocket.py`` ``connect()`` / ``disconnect()`` called ``set_online`` / ``set_offline``:
  here the chat socket holds a REST heartbeat session for its user while it is open
  (``presence.lease``), so presenced counts that connection like any other device, across
  every instance of this app.
- ``messenger.py``'s ``update_user_activity(user_id)``, called by ``handle_message_send``,
  ``handle_message_edit``, ``handle_message_delete``, ``handle_read_receipt`` and on
  ``typing.start``: here it is ``POST /messenger/presence/activity`` with the service token,
  called from the same five places.
- The seed's four routes (``GET /messenger/presence/online``, ``/count``,
  ``/status/{user_id}``, ``POST /messenger/presence/away``) answer what presenced answers: they
  are proxied with the *caller's own* token, so presenced applies that user's view of others
  (invisible users, privacy settings, tenancy) rather than the all-seeing service token's.

Users authenticate with HS256 JWTs signed with the secret presenced also has
(``auth.jwt_secret``), so the same token works here and on presenced. Run it with::

    export PRESENCE_AUTH__JWT_SECRET=...            # the node's secret (>= 32 bytes)
    export PRESENCED_URL=http://127.0.0.1:8000
    export PRESENCED_SERVICE_TOKEN=$(presenced token --sub chat-backend --role service --ttl 30d)
    uvicorn fastapi_app:app --app-dir clients/python/examples
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import jwt
from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from presenced_client import PresenceClient, PresenceError

logger = logging.getLogger("messenger")


@dataclass(frozen=True)
class Settings:
    presenced_url: str
    service_token: str
    jwt_secret: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            presenced_url=os.environ.get("PRESENCED_URL", "http://127.0.0.1:8000"),
            service_token=os.environ["PRESENCED_SERVICE_TOKEN"],
            jwt_secret=os.environ["PRESENCE_AUTH__JWT_SECRET"],
        )


@dataclass(frozen=True)
class CurrentUser:
    id: str
    org_id: str | None
    token: str


@dataclass
class Message:
    id: int
    conversation_id: str
    sender_id: str
    content: str
    deleted: bool = False
    read_by: set[str] = field(default_factory=set)


class MessageStore:
    """Stands in for the app's database."""

    def __init__(self) -> None:
        self.messages: dict[int, Message] = {}
        self._ids = itertools.count(1)

    def add(self, conversation_id: str, sender_id: str, content: str) -> Message:
        m = Message(next(self._ids), conversation_id, sender_id, content)
        self.messages[m.id] = m
        return m


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def presence_of(request: Request) -> PresenceClient:
    p: PresenceClient = request.app.state.presence
    return p


def user_from_token(token: str, settings: Settings) -> CurrentUser:
    """Stands in for the app's own authentication: its tokens are presenced's (one secret)."""
    try:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"])
    except jwt.PyJWTError as e:
        raise HTTPException(401, f"bad token: {e}") from e
    return CurrentUser(id=str(claims["sub"]), org_id=claims.get("org_id"), token=token)


def current_user(request: Request) -> CurrentUser:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "a bearer token is required")
    return user_from_token(token, request.app.state.settings)


User = Annotated[CurrentUser, Depends(current_user)]
Presence = Annotated[PresenceClient, Depends(presence_of)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with PresenceClient(settings.presenced_url, settings.service_token) as presence:
            app.state.presence = presence
            yield

    app = FastAPI(title="messenger (presence by presenced)", lifespan=lifespan)
    store = MessageStore()
    app.state.messages = store
    app.state.settings = settings


    @app.exception_handler(PresenceError)
    async def presence_failed(request: Request, e: PresenceError) -> JSONResponse:
        # presenced's own answer, passed on; no answer at all is a 503 here.
        return JSONResponse(error_body(e.code, e.message), status_code=e.status or 503)

    @app.exception_handler(HTTPException)
    async def http_failed(request: Request, e: HTTPException) -> JSONResponse:
        code = {401: "unauthenticated", 403: "permission_denied", 404: "not_found"}.get(e.status_code, "invalid_argument")
        return JSONResponse(error_body(code, str(e.detail)), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_argument", str(e.errors())), status_code=400)

    # -- the seed's update_user_activity, now a call to presenced --------------------------

    async def update_user_activity(presence: PresenceClient, user_id: str) -> None:
        """Update the user's last activity in the presence system.

        Called when the user does anything (sends, edits or deletes a message, reads, types)
        to keep their status accurate and prevent auto-away. Best effort, as in the seed: a
        presence outage must not fail the message."""
        try:
            await presence.activity([user_id])
        except PresenceError as e:
            logger.warning("Failed to update presence for user %s: %s", user_id, e)

    # -- the seed's event handlers (messenger.py) -----------------------------------------

    async def handle_message_send(presence: PresenceClient, user: CurrentUser, data: dict[str, Any]) -> dict[str, Any]:
        message = store.add(str(data["conversation_id"]), user.id, str(data["content"]))
        await update_user_activity(presence, user.id)  # after committing the message
        return {"type": "message.sent", "message_id": message.id}

    async def handle_message_edit(presence: PresenceClient, user: CurrentUser, data: dict[str, Any]) -> dict[str, Any]:
        message = store.messages[int(data["message_id"])]
        if message.sender_id != user.id:
            return {"type": "error", "message": "not your message"}
        message.content = str(data["content"])
        await update_user_activity(presence, user.id)  # after updating the content
        return {"type": "message.edited", "message_id": message.id}

    async def handle_message_delete(presence: PresenceClient, user: CurrentUser, data: dict[str, Any]) -> dict[str, Any]:
        message = store.messages[int(data["message_id"])]
        if message.sender_id != user.id:
            return {"type": "error", "message": "not your message"}
        message.deleted = True
        await update_user_activity(presence, user.id)  # after the soft delete
        return {"type": "message.deleted", "message_id": message.id}

    async def handle_read_receipt(presence: PresenceClient, user: CurrentUser, data: dict[str, Any]) -> dict[str, Any]:
        message = store.messages[int(data["message_id"])]
        message.read_by.add(user.id)
        await update_user_activity(presence, user.id)  # after creating the receipt
        return {"type": "read_receipt.created", "message_id": message.id}

    async def handle_typing_start(presence: PresenceClient, user: CurrentUser, data: dict[str, Any]) -> dict[str, Any]:
        await update_user_activity(presence, user.id)  # on the typing indicator
        return {"type": "typing.ok", "conversation_id": data.get("conversation_id")}

    handlers = {
        "message.send": handle_message_send,
        "message.edit": handle_message_edit,
        "message.delete": handle_message_delete,
        "read_receipt": handle_read_receipt,
        "typing.start": handle_typing_start,
    }

    @app.websocket("/chat/ws")
    async def chat_socket(
        websocket: WebSocket,
        token: str,
        zone_id: str | None = None,
        org_id: str | None = None,
    ) -> None:
        try:
            user = user_from_token(token, settings)
        except HTTPException:
            await websocket.close(code=4001)
            return
        presence: PresenceClient = websocket.app.state.presence
        await websocket.accept()
        async with AsyncExitStack() as stack:
            # The seed's connect()/disconnect(): a presence session for as long as this
            # socket is open (presenced counts sessions, so several sockets or app
            # instances are fine). Chat goes on without presence if presenced is down.
            try:
                await stack.enter_async_context(
                    presence.lease(user_id=user.id, zone_id=zone_id, org_id=org_id, device="web")
                )
            except PresenceError as e:
                logger.warning("Failed to set presence for user %s: %s", user.id, e)
            try:
                while True:
                    data = await websocket.receive_json()
                    handler = handlers.get(str(data.get("type")))
                    if handler is None:
                        await websocket.send_json({"type": "error", "message": "unknown type"})
                        continue
                    await websocket.send_json(await handler(presence, user, data))
            except WebSocketDisconnect:
                pass

    # -- the seed's four routes, proxied with the caller's token ---------------------------

    @app.get("/messenger/presence/online")
    async def get_online_users(
        user: User,
        presence: Presence,
        zone_id: str | None = None,
        org_id: str | None = None,
        limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
        cursor: str | None = None,
        status: Literal["online", "away"] | None = None,
    ) -> dict[str, Any]:
        page = await presence.with_token(user.token).online_page(
            zone_id=zone_id, org_id=org_id, limit=limit, cursor=cursor, status=status
        )
        return page.to_json()

    @app.get("/messenger/presence/count")
    async def get_online_count(
        user: User, presence: Presence, zone_id: str | None = None, org_id: str | None = None
    ) -> dict[str, Any]:
        counts = await presence.with_token(user.token).count(zone_id=zone_id, org_id=org_id)
        return counts.to_json()

    @app.get("/messenger/presence/status/{user_id}")
    async def get_user_status(user_id: str, user: User, presence: Presence) -> dict[str, Any]:
        view = await presence.with_token(user.token).status(user_id)
        return view.to_json()

    @app.post("/messenger/presence/away")
    async def set_away(user: User, presence: Presence) -> dict[str, Any]:
        change = await presence.with_token(user.token).set_away()
        return change.to_json()

    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn fastapi_app:app` asks for `app`: built from the environment on first use, so
    # importing the module for its factory (as the tests do) needs no environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
