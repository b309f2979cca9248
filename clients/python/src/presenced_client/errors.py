"""The one exception the client raises: SPEC §6's `{"error": {"code", "message"}}`."""

from __future__ import annotations

import json
from typing import Final

# The HTTP status of each code (SPEC §6); WebSocket `error` frames carry only the code, and
# `invalid_frame` is the socket's own word for a bad request.
STATUS_OF_CODE: Final[dict[str, int]] = {
    "invalid_argument": 400,
    "invalid_frame": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}

_CODE_OF_STATUS: Final[dict[int, str]] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "invalid_argument",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


class PresenceError(Exception):
    """An answer from presenced that is not a success, or no answer at all.

    ``code`` is SPEC §6's stable code (``invalid_argument``, ``unauthenticated``,
    ``permission_denied``, ``not_found``, ``conflict``, ``payload_too_large``,
    ``rate_limited``, ``unavailable``, ``internal``; ``invalid_frame`` on a WebSocket).
    ``status`` is the HTTP status, ``None`` when the node could not be reached at all
    (then ``code`` is ``unavailable``). ``message`` is the node's own words, for people.
    """

    code: str
    status: int | None
    message: str

    def __init__(self, code: str, status: int | None, message: str) -> None:
        super().__init__(f"{code} ({status if status is not None else 'no answer'}): {message}")
        self.code = code
        self.status = status
        self.message = message

    @property
    def is_rate_limited(self) -> bool:
        """429 ``rate_limited``: slow down and try again later."""
        return self.code == "rate_limited"

    @property
    def is_unavailable(self) -> bool:
        """503 ``unavailable`` (the store or the node is out of reach, or the node is full),
        or no answer at all: try again, or try another node."""
        return self.code == "unavailable"

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later unchanged: rate limited, unavailable,
        or a 5xx."""
        return (
            self.is_rate_limited
            or self.is_unavailable
            or (self.status is not None and self.status >= 500)
        )

    def __reduce__(self) -> tuple[type[PresenceError], tuple[str, int | None, str]]:
        return (PresenceError, (self.code, self.status, self.message))

    @classmethod
    def from_answer(cls, status: int, body: bytes) -> PresenceError:
        """The error an HTTP answer carries; a body not in SPEC §6's shape (a proxy's HTML
        page, say) still gives a code, from the status."""
        fallback = _CODE_OF_STATUS.get(status, "internal" if status >= 500 else "invalid_argument")
        try:
            detail = json.loads(body)["error"]
            code, message = detail["code"], detail["message"]
            if isinstance(code, str) and isinstance(message, str):
                return cls(code, status, message)
        except (ValueError, KeyError, TypeError):
            pass
        text = body.decode("utf-8", "replace").strip()[:200]
        return cls(fallback, status, text or f"HTTP {status}")

    @classmethod
    def from_frame(cls, code: str, message: str) -> PresenceError:
        """An `error` frame of the WebSocket protocol, with the status its code has over REST."""
        return cls(code, STATUS_OF_CODE.get(code), message)

    @classmethod
    def unreachable(cls, why: BaseException | str) -> PresenceError:
        """No answer: the connection failed or timed out."""
        return cls("unavailable", None, f"presenced did not answer: {why}")
