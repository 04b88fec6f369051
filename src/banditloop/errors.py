"""The one error tree of banditloop.

Every failure that reaches a client is a :class:`BanditloopError`, rendered as
Azure Personalizer's error body ``{"error": {"code", "message", "target"?}}``
with the status below, an ``x-ms-error-code`` header and, where the request may
succeed later, ``Retry-After`` (docs/operator-guide.md, "Errors")::

    BanditloopError                 500 InternalServerError
    ├── BadRequest                  400 BadRequest (and the Invalid* codes)
    │   ├── FeatureError            400 a feature value Personalizer does not accept
    │   ├── InvalidPolicy           400 InvalidPolicyConfiguration
    │   └── PayloadTooLarge         413 PayloadSizeExceeded
    ├── Unauthorized                401 Unauthorized
    ├── Forbidden                   403 Forbidden
    ├── NotFound                    404 ResourceNotFound
    ├── Conflict                    409 Conflict
    ├── RateLimited                 429 TooManyRequests, Retry-After
    └── Unavailable                 503 ServiceUnavailable
        └── Overloaded              503 ServiceUnavailable, Retry-After: 1

Two more never reach a client as such; they tell the service's own parts what
happened::

    NotLeader                       a trainer's write from a process that no longer
                                    trains the loop (PostgreSQL); the trainer steps down
    RecommenderFailure              the upstream recommender gave no usable answer;
                                    re-ranking falls back (``reason`` says why)
"""

from __future__ import annotations


class BanditloopError(Exception):
    """Base of every error a client may see; unexpected ones become a 500."""

    status = 500
    default_code = "InternalServerError"
    retry_after: int | None = None  # seconds, sent as Retry-After

    def __init__(
        self,
        message: str,
        code: str | None = None,
        target: str | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.target = target
        self.details = details  # one {"code", "message", "target"} per part that failed

    def body(self) -> dict[str, object]:
        err: dict[str, object] = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        if self.details:
            err["details"] = self.details
        return {"error": err}


class BadRequest(BanditloopError):
    """Raised when a request is malformed or breaks a validation rule."""

    status = 400
    default_code = "BadRequest"


class FeatureError(BadRequest):
    """Raised when a feature value has a shape Personalizer does not accept."""


class InvalidPolicy(BadRequest):
    """Raised when a policy argument string is refused or VW rejects it."""

    default_code = "InvalidPolicyConfiguration"


class PayloadTooLarge(BadRequest):
    """Raised when a request body is larger than the configured limit."""

    status = 413
    default_code = "PayloadSizeExceeded"


class Unauthorized(BanditloopError):
    """Raised when a key is required and missing or wrong."""

    status = 401
    default_code = "Unauthorized"


class Forbidden(BanditloopError):
    """Raised when a valid key lacks the rights for an endpoint."""

    status = 403
    default_code = "Forbidden"


class NotFound(BanditloopError):
    """Raised when a path, loop, evaluation or other resource does not exist."""

    status = 404
    default_code = "ResourceNotFound"


class Conflict(BanditloopError):
    """Raised when a request contradicts stored state (e.g. a reused event ID)."""

    status = 409
    default_code = "Conflict"


class RateLimited(BanditloopError):
    """Raised when a key sends more requests per second than it may."""

    status = 429
    default_code = "TooManyRequests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(BanditloopError):
    """Raised when the service cannot take the request now (shutting down, overloaded)."""

    status = 503
    default_code = "ServiceUnavailable"


class Overloaded(Unavailable):
    """Raised when the process sheds load (too many requests in flight, writer backlog,
    a store that cannot save): the request may succeed a second later."""

    retry_after = 1


def overloaded(reason: str) -> Overloaded:
    """A 503 with Retry-After: the request may succeed later (queue full, disk full, lock)."""
    return Overloaded(f"{reason}; retry after the time in Retry-After.")


class NotLeader(Exception):
    """Raised by a trainer's write from a process that no longer leads the loop
    (PostgreSQL): another process trains it now."""


class RecommenderFailure(Exception):
    """Raised when the recommender gives no usable answer; ``reason`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
