"""The one error tree of banditloop.

Every failure that reaches a client is one of these, rendered as Azure
Personalizer's error body ``{"error": {"code", "message", "target"?}}`` with the
status below and an ``x-ms-error-code`` header::

    BanditloopError                 500 InternalServerError
    ├── BadRequest                  400 BadRequest (and the Invalid* codes)
    │   └── PayloadTooLarge         413 PayloadSizeExceeded
    ├── Unauthorized                401 Unauthorized
    ├── Forbidden                   403 Forbidden
    ├── NotFound                    404 ResourceNotFound
    ├── Conflict                    409 Conflict
    └── Unavailable                 503 ServiceUnavailable
"""

from __future__ import annotations


class BanditloopError(Exception):
    """Base of every error a client may see; unexpected ones become a 500."""

    status = 500
    default_code = "InternalServerError"

    def __init__(self, message: str, code: str | None = None, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.target = target

    def body(self) -> dict[str, object]:
        err: dict[str, object] = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        return {"error": err}


class BadRequest(BanditloopError):
    """Raised when a request is malformed or breaks a validation rule."""

    status = 400
    default_code = "BadRequest"


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


class Unavailable(BanditloopError):
    """Raised when the service cannot take the request now (shutting down, overloaded)."""

    status = 503
    default_code = "ServiceUnavailable"
