"""An async Python client for presenced (SPEC §5-§6): REST calls on httpx, the feed as
Server-Sent Events (:class:`PresenceFeed`, what a backend follows) and a user's WebSocket
session (:class:`PresenceSession`), both reconnecting and resuming from the last feed id.

    async with PresenceClient("http://127.0.0.1:8000", service_token) as presence:
        await presence.activity(["42", "43"])
        print(await presence.status("42"))
        async for item in presence.events(["zone:10"]):
            ...
"""

from .client import PresenceClient, TokenSource
from .errors import PresenceError
from .feed import PresenceFeed
from .models import (
    AwayReason,
    CountUpdate,
    Counts,
    CustomStatus,
    CustomStatusKind,
    Device,
    HistoryDay,
    InactivePage,
    InactiveUser,
    LastSeenVisibility,
    Lease,
    NearbyUser,
    OnlinePage,
    PresenceEvent,
    PresenceView,
    PresenceVisibility,
    Privacy,
    ScopeSnapshot,
    SessionInfo,
    SessionItem,
    Snapshot,
    Status,
    StatusChange,
    StreamItem,
)
from .ordering import Backoff, VersionGate
from .session import PresenceSession

__all__ = [
    "AwayReason",
    "Backoff",
    "CountUpdate",
    "Counts",
    "CustomStatus",
    "CustomStatusKind",
    "Device",
    "HistoryDay",
    "InactivePage",
    "InactiveUser",
    "LastSeenVisibility",
    "Lease",
    "NearbyUser",
    "OnlinePage",
    "PresenceClient",
    "PresenceError",
    "PresenceEvent",
    "PresenceFeed",
    "PresenceSession",
    "PresenceView",
    "PresenceVisibility",
    "Privacy",
    "ScopeSnapshot",
    "SessionInfo",
    "SessionItem",
    "Snapshot",
    "Status",
    "StatusChange",
    "StreamItem",
    "TokenSource",
    "VersionGate",
]

__version__ = "0.1.0"
