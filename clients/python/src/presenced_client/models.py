"""The shapes presenced answers with (SPEC §3-§6), as frozen dataclasses.

Each has ``from_json`` (a decoded JSON object in, tolerant of fields a newer node adds: they
are kept in ``extra``) and ``to_json`` (the same JSON shape out, ``extra`` included), so a
proxy can hand an answer on exactly as presenced gave it. Times are timezone-aware UTC
``datetime`` objects and go back out as presenced writes them (three fractional digits, ``Z``).
Ids are always strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Literal, Mapping, Union, cast

Status = Literal["online", "away", "offline"]
AwayReason = Literal["auto", "manual"]
Device = Literal["web", "desktop", "mobile", "other"]
CustomStatusKind = Literal["dnd", "busy", "in_meeting", "on_break", "custom"]
PresenceVisibility = Literal["everyone", "org", "nobody"]
LastSeenVisibility = Literal["exact", "approximate", "hidden"]
Json = dict[str, Any]


def parse_time(text: str) -> datetime:
    """RFC 3339 (``2024-11-26T10:25:00.000Z``) to an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def format_time(t: datetime) -> str:
    """An aware datetime as presenced writes times: UTC, milliseconds, ``Z``."""
    if t.tzinfo is None:
        raise ValueError("times sent to presenced must be timezone-aware")
    u = t.astimezone(timezone.utc)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def _opt_time(v: Any) -> datetime | None:
    return None if v is None else parse_time(cast(str, v))


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _extra(d: Mapping[str, Any], known: frozenset[str]) -> Mapping[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


@dataclass(frozen=True, slots=True)
class CustomStatus:
    """A user's custom status: ``kind`` with optional ``text`` (≤ 140 characters), ``emoji``
    (≤ 16 bytes) and ``expires_at`` (it clears itself then)."""

    kind: CustomStatusKind
    text: str | None = None
    emoji: str | None = None
    expires_at: datetime | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CustomStatus:
        return cls(
            kind=cast(CustomStatusKind, d["kind"]),
            text=d.get("text"),
            emoji=d.get("emoji"),
            expires_at=_opt_time(d.get("expires_at")),
        )

    def to_json(self) -> Json:
        return {
            "kind": self.kind,
            "text": self.text,
            "emoji": self.emoji,
            "expires_at": None if self.expires_at is None else format_time(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class Privacy:
    """A user's privacy settings (SPEC §3): who sees the real status (``everyone``, ``org``:
    tokens of the user's org, ``nobody``) and how others see ``last_seen`` (``exact``,
    ``approximate``: a bucket such as ``recently``, ``hidden``: ``None``)."""

    presence: PresenceVisibility
    last_seen: LastSeenVisibility

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Privacy:
        return cls(presence=cast(PresenceVisibility, d["presence"]), last_seen=cast(LastSeenVisibility, d["last_seen"]))

    def to_json(self) -> Json:
        return {"presence": self.presence, "last_seen": self.last_seen}


_VIEW_FIELDS = frozenset(
    {
        "user_id",
        "status",
        "away_reason",
        "last_activity",
        "last_seen",
        "zone_id",
        "org_id",
        "devices",
        "custom_status",
        "metadata",
        "invisible",
        "privacy",
        "version",
        "updated_at",
    }
)


def _last_seen(v: Any) -> datetime | str | None:
    # An exact time, or (privacy `last_seen = approximate`) a bucket such as "recently".
    if v is None:
        return None
    try:
        return parse_time(cast(str, v))
    except ValueError:
        return cast(str, v)


@dataclass(frozen=True, slots=True)
class PresenceView:
    """One user's presence as the caller may see it (SPEC §3, "The public view")."""

    user_id: str
    status: Status
    away_reason: AwayReason | None
    #: The last counted activity; ``None`` only when an offline user's privacy keeps last
    #: seen approximate or hidden from the caller.
    last_activity: datetime | None
    #: When the last session ended; ``None`` while present. A bucket name (``recently``,
    #: ``within_week``, ``within_month``, ``long_ago``) where the user's privacy says so.
    last_seen: datetime | str | None
    zone_id: str | None
    org_id: str | None
    devices: tuple[Device, ...]
    custom_status: CustomStatus | None
    metadata: Json | None
    #: True only in the user's own view and for service and admin tokens.
    invisible: bool
    #: The user's privacy settings: in the user's own view and for service and admin
    #: tokens; ``None`` for everyone else (and from nodes older than privacy).
    privacy: Privacy | None
    #: Increases strictly per user with every change of the view.
    version: int
    #: When the view last changed; ``None`` only when an offline user's privacy keeps last
    #: seen approximate or hidden from the caller (it would give the time away).
    updated_at: datetime | None
    #: Fields a newer node sends that this client does not know yet.
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PresenceView:
        cs = d.get("custom_status")
        return cls(
            user_id=str(d["user_id"]),
            status=cast(Status, d["status"]),
            away_reason=cast("AwayReason | None", d.get("away_reason")),
            last_activity=_opt_time(d.get("last_activity")),
            last_seen=_last_seen(d.get("last_seen")),
            zone_id=_opt_str(d.get("zone_id")),
            org_id=_opt_str(d.get("org_id")),
            devices=tuple(cast("list[Device]", d.get("devices") or [])),
            custom_status=None if cs is None else CustomStatus.from_json(cs),
            metadata=d.get("metadata"),
            invisible=bool(d.get("invisible", False)),
            privacy=None if (p := d.get("privacy")) is None else Privacy.from_json(p),
            version=int(d["version"]),
            updated_at=_opt_time(d.get("updated_at")),
            extra=_extra(d, _VIEW_FIELDS),
        )

    def to_json(self) -> Json:
        last_seen = self.last_seen
        return {
            "user_id": self.user_id,
            "status": self.status,
            "away_reason": self.away_reason,
            "last_activity": None if self.last_activity is None else format_time(self.last_activity),
            "last_seen": format_time(last_seen) if isinstance(last_seen, datetime) else last_seen,
            "zone_id": self.zone_id,
            "org_id": self.org_id,
            "devices": list(self.devices),
            "custom_status": None if self.custom_status is None else self.custom_status.to_json(),
            "metadata": self.metadata,
            "invisible": self.invisible,
            "privacy": None if self.privacy is None else self.privacy.to_json(),
            "version": self.version,
            "updated_at": None if self.updated_at is None else format_time(self.updated_at),
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """One change of a user's view (SPEC §4): the whole view after it, what it was before,
    and where it sits in the feed."""

    feed_id: str
    user: PresenceView
    prev_status: Status
    prev_zone_id: str | None
    prev_org_id: str | None
    ts: datetime
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    _FIELDS = frozenset({"type", "feed_id", "user", "prev_status", "prev_zone_id", "prev_org_id", "ts"})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PresenceEvent:
        return cls(
            feed_id=str(d["feed_id"]),
            user=PresenceView.from_json(d["user"]),
            prev_status=cast(Status, d["prev_status"]),
            prev_zone_id=_opt_str(d.get("prev_zone_id")),
            prev_org_id=_opt_str(d.get("prev_org_id")),
            ts=parse_time(d["ts"]),
            extra=_extra(d, cls._FIELDS),
        )

    def to_json(self) -> Json:
        return {
            "type": "presence",
            "feed_id": self.feed_id,
            "user": self.user.to_json(),
            "prev_status": self.prev_status,
            "prev_zone_id": self.prev_zone_id,
            "prev_org_id": self.prev_org_id,
            "ts": format_time(self.ts),
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class ScopeSnapshot:
    """A scope in a snapshot: its count and its first page of users."""

    count: int
    users: tuple[PresenceView, ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ScopeSnapshot:
        return cls(
            count=int(d["count"]),
            users=tuple(PresenceView.from_json(u) for u in d.get("users") or []),
            next_cursor=d.get("next_cursor"),
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The present, as a `snapshot` frame (WebSocket) or `event: snapshot` (SSE) gives it.

    With ``reset`` true the position the stream resumed from had aged out of the feed (or the
    store lost its data): events in between are gone, so replace what you hold with this and
    reload over REST what it does not cover (an SSE stream without scopes carries no users).
    Events continue after ``feed_id``.
    """

    feed_id: str
    reset: bool
    scopes: Mapping[str, ScopeSnapshot]
    users: Mapping[str, PresenceView | None]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Snapshot:
        return cls(
            feed_id=str(d["feed_id"]),
            reset=bool(d.get("reset", False)),
            scopes={k: ScopeSnapshot.from_json(v) for k, v in (d.get("scopes") or {}).items()},
            users={
                k: None if v is None else PresenceView.from_json(v)
                for k, v in (d.get("users") or {}).items()
            },
        )

    def views(self) -> list[PresenceView]:
        """Every view the snapshot holds, scopes and users together."""
        out = [u for s in self.scopes.values() for u in s.users]
        out.extend(v for v in self.users.values() if v is not None)
        return out


@dataclass(frozen=True, slots=True)
class CountUpdate:
    """A counts-only subscription's scope changed (at most once a second per scope)."""

    scope: str
    count: int


@dataclass(frozen=True, slots=True)
class OnlinePage:
    """One page of ``GET /messenger/presence/online``: users online or away in the scope,
    most recent activity first; ``count`` is the scope's total."""

    online_users: tuple[PresenceView, ...]
    count: int
    next_cursor: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OnlinePage:
        return cls(
            online_users=tuple(PresenceView.from_json(u) for u in d["online_users"]),
            count=int(d["count"]),
            next_cursor=d.get("next_cursor"),
        )

    def to_json(self) -> Json:
        return {
            "online_users": [u.to_json() for u in self.online_users],
            "count": self.count,
            "next_cursor": self.next_cursor,
        }


@dataclass(frozen=True, slots=True)
class Counts:
    """``GET /messenger/presence/count``: ``zone`` and ``org`` are ``None`` unless asked for."""

    global_: int
    zone: int | None
    org: int | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Counts:
        return cls(global_=int(d["global"]), zone=d.get("zone"), org=d.get("org"))

    def to_json(self) -> Json:
        return {"global": self.global_, "zone": self.zone, "org": self.org}


@dataclass(frozen=True, slots=True)
class StatusChange:
    """The answer of ``POST /messenger/presence/away`` and ``.../online``."""

    status: Literal["away", "online"]
    user_id: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StatusChange:
        return cls(status=d["status"], user_id=str(d["user_id"]))

    def to_json(self) -> Json:
        return {"status": self.status, "user_id": self.user_id}


@dataclass(frozen=True, slots=True)
class Lease:
    """A REST heartbeat session: present until ``expires_at`` unless renewed."""

    session_id: str
    expires_at: datetime

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Lease:
        return cls(session_id=str(d["session_id"]), expires_at=parse_time(d["expires_at"]))


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One open session of a user (``GET /messenger/presence/sessions/{user_id}``)."""

    session_id: str
    device: Device
    #: The node holding its WebSocket; ``None`` for a REST heartbeat session.
    node_id: str | None
    #: When it opened (to the second); ``None`` for sessions older than that field.
    connected_at: datetime | None
    #: The user's last activity (activity is kept per user, not per session).
    last_activity: datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SessionInfo:
        return cls(
            session_id=str(d["session_id"]),
            device=cast(Device, d["device"]),
            node_id=_opt_str(d.get("node_id")),
            connected_at=_opt_time(d.get("connected_at")),
            last_activity=_opt_time(d.get("last_activity")),
        )


@dataclass(frozen=True, slots=True)
class HistoryDay:
    """One UTC day of a user's online history (``GET /messenger/presence/history/{user_id}``)."""

    date: date
    #: Seconds present that day (online or away, visible or not).
    online_seconds: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HistoryDay:
        return cls(date=date.fromisoformat(str(d["date"])), online_seconds=int(d["online_seconds"]))


@dataclass(frozen=True, slots=True)
class InactiveUser:
    """An offline user of the inactive report, with when they were last seen."""

    user_id: str
    last_seen: datetime

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InactiveUser:
        return cls(user_id=str(d["user_id"]), last_seen=parse_time(str(d["last_seen"])))


@dataclass(frozen=True, slots=True)
class InactivePage:
    """One page of the inactive report, oldest last seen first."""

    users: tuple[InactiveUser, ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InactivePage:
        return cls(
            users=tuple(InactiveUser.from_json(u) for u in d["users"]),
            next_cursor=_opt_str(d.get("next_cursor")),
        )


@dataclass(frozen=True, slots=True)
class NearbyUser:
    """A user ``nearby`` found: the view, and how far from the point asked."""

    view: PresenceView
    #: Metres, to the centimetre (from the location as stored: rounded to about 111 m).
    distance_m: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NearbyUser:
        fields = dict(d)
        distance = float(fields.pop("distance_m"))
        return cls(view=PresenceView.from_json(fields), distance_m=distance)


#: What a presence stream yields: an event, or a snapshot with ``reset`` true; a WebSocket
#: session with a counts-only subscription also yields count updates.
StreamItem = Union[PresenceEvent, Snapshot]
SessionItem = Union[PresenceEvent, Snapshot, CountUpdate]
