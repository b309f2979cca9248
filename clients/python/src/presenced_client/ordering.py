"""What both streams share: where to resume from, which events are stale, and how long to
wait before reconnecting."""

from __future__ import annotations

import random
from datetime import datetime

from .models import PresenceEvent, PresenceView, Snapshot


class VersionGate:
    """Drops stale and repeated events: per user, an event passes only if its view's
    ``version`` is above the one already seen (SPEC §4).

    One exception: a record that outlived ``last_seen_retention`` is deleted, and the user's
    next record starts again at version 1. An event whose version is lower but whose
    ``updated_at`` is later than the one held is such a new record, and passes (a view whose
    ``updated_at`` is hidden by the user's privacy never passes that way).

    It holds one entry per user seen (a user id, an int and a datetime): a backend following
    every event holds one per active user. A reset snapshot starts it afresh.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, datetime | None]] = {}

    def admit(self, view: PresenceView) -> bool:
        """Whether ``view`` is newer than what was seen of its user; remembers it if so."""
        held = self._seen.get(view.user_id)
        if held is not None:
            version, updated_at = held
            newer_record = (
                view.version < version
                and view.updated_at is not None
                and updated_at is not None
                and view.updated_at > updated_at
            )
            if view.version == version or (view.version < version and not newer_record):
                return False
        self._seen[view.user_id] = (view.version, view.updated_at)
        return True

    def admit_event(self, event: PresenceEvent) -> bool:
        return self.admit(event.user)

    def reset(self, snapshot: Snapshot) -> None:
        """Forget everything (versions may have started again) and hold what the snapshot
        shows."""
        self._seen.clear()
        self.seed(snapshot)

    def seed(self, snapshot: Snapshot) -> None:
        """Hold the snapshot's views, so events it already covers are dropped."""
        for view in snapshot.views():
            self.admit(view)

    def version_of(self, user_id: str) -> int | None:
        held = self._seen.get(user_id)
        return None if held is None else held[0]

    def __len__(self) -> int:
        return len(self._seen)


class Backoff:
    """Exponential backoff with jitter: the n-th wait in a row is drawn uniformly from
    ``[d/2, d]`` with ``d = min(maximum, initial * 2**n)``, so clients dropped together by a
    node restart do not come back together. ``reset()`` after a connection that worked."""

    __slots__ = ("initial", "maximum", "_attempt", "_random")

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, *, rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0
        self._random = rng or random.Random()

    @property
    def attempt(self) -> int:
        """Waits since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self._attempt, 32)))
        self._attempt += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
