"""Exceptions shardlease raises on purpose. Catch ``ShardleaseError`` to handle all of them.

Everything shardlease raises deliberately derives from ``ShardleaseError``:

- ``ConfigError`` (and its subclasses ``HandlerSignatureError``, ``HandlerImportError``): the replica
  cannot start as configured; the message names what was tried and the fix.
- ``ApiError`` and one subclass per failure kind of a Kubernetes API request (``Conflict``,
  ``AlreadyExists``, ``NotFound``, ``Expired``, ``Throttled``, ``ServerError``, ``RequestTimeout``,
  ``NetworkError``, ``Invalid``, ``Forbidden`` (and its ``CredentialsError``), ``UnexpectedApiError``):
  callers branch with ``except Conflict`` instead of comparing strings, and the type checker sees every
  branch. ``outcome_unknown`` says a write may have been applied although it failed.
- ``InvalidArgument`` (also a ``ValueError``): a function was called with a value it cannot accept.
- ``ControlLoopCrashed``: ``ShardManager.run()`` stopped because its control loop failed for good.

Not covered, on purpose: errors raised by the user's own handler (they stay the handler's), the
pydantic ``ValidationError`` of building a ``ShardConfig`` directly (``shardlease run`` turns it into
a message naming the field and the fix), ``TypeError`` for an argument of the wrong type (e.g. a key
for ``shard_for_key`` that is neither ``str`` nor ``bytes``), the test harness's own errors, and bugs.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AlreadyExists",
    "ApiError",
    "ConfigError",
    "Conflict",
    "ConflictError",
    "CredentialsError",
    "ControlLoopCrashed",
    "Expired",
    "Forbidden",
    "HandlerImportError",
    "HandlerSignatureError",
    "Invalid",
    "InvalidArgument",
    "NetworkError",
    "NotFound",
    "RequestTimeout",
    "ServerError",
    "ShardleaseError",
    "Throttled",
    "UnexpectedApiError",
    "api_error",
    "api_error_class",
]


class ShardleaseError(Exception):
    """Base class of every error shardlease raises deliberately (not of bugs or library errors)."""


class ConfigError(ShardleaseError):
    """The replica cannot start as configured: the message says what was tried and how to fix it."""


class HandlerSignatureError(ConfigError):
    """The handler cannot be called with one positional argument, the ``Shard``.

    Raised before any shard is taken: a handler that fails on every call would otherwise be restarted
    with back-off forever while its shards stay held and unprocessed.
    """


class HandlerImportError(ConfigError):
    """``MODULE:FUNC`` does not name a usable handler; the message says what is wrong and the fix."""


class InvalidArgument(ShardleaseError, ValueError):
    """A function got a value it cannot work with. Also a ``ValueError``, so code that caught the plain
    ``ValueError`` these checks used to raise keeps working."""


class ControlLoopCrashed(ShardleaseError):
    """``ShardManager.run()`` ended because its control loop failed in a way it cannot recover from.

    The original exception is the ``__cause__``. Every held Lease has been released or left to expire
    by the time this is raised, so restarting the process (or the manager) is safe.
    """


# ---------------------------------------------------------------------------------------------------
# Kubernetes API errors


class ApiError(ShardleaseError):
    """A failed Kubernetes API request; catch a subclass to handle one kind of failure.

    ``status`` is the HTTP status (``None`` when no response arrived), ``reason`` the ``reason`` of the
    Kubernetes ``Status`` body (``"Conflict"``, ``"AlreadyExists"``, ...), ``retry_after`` the seconds
    the server asked us to wait (429 and some 5xx), if any. ``label`` (per class) is the value of the
    ``kind`` label on ``shardlease_api_errors_total``.

    ``outcome_unknown`` is true when a write was sent and the connection failed (or timed out) before a
    complete answer: the server may have applied it. Repeating it blindly could turn our own success
    into a ``Conflict`` or ``AlreadyExists``, so read the object back first. ``False`` says nothing
    either way for a ``ServerError``: a 5xx can come after a write was applied, too.
    """

    label: ClassVar[str] = "other"

    def __init__(self, message: str, /, *, status: int | None = None, reason: str = "",
                 retry_after: float | None = None, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown

    def __repr__(self) -> str:
        unknown = ", outcome_unknown=True" if self.outcome_unknown else ""
        return (f"{type(self).__name__}(status={self.status!r}, reason={self.reason!r}{unknown}, "
                f"message={str(self)!r})")


class ConflictError(ApiError):
    """409: the write lost against another writer. Base of ``Conflict`` and ``AlreadyExists``, which
    lease code usually treats alike (someone else got there first: re-read and decide again)."""

    label = "conflict"


class Conflict(ConflictError):
    """409 Conflict: the resourceVersion (or a delete precondition) no longer matches the object."""

    label = "conflict"


class AlreadyExists(ConflictError):
    """409 AlreadyExists: a create found the object already there."""

    label = "already_exists"


class NotFound(ApiError):
    """404: the object (or the namespace) does not exist."""

    label = "not_found"


class Expired(ApiError):
    """410 Gone / Expired: the resourceVersion a watch or list continues from is older than the
    server's history; relist."""

    label = "expired"


class Throttled(ApiError):
    """429 Too Many Requests; ``retry_after`` says how long the server asked us to wait."""

    label = "throttled"


class ServerError(ApiError):
    """5xx: the server (or something in front of it) failed; the write may or may not have happened."""

    label = "server"


class RequestTimeout(ApiError):
    """No complete answer within the client's timeout; the write may or may not have happened."""

    label = "timeout"


class NetworkError(ApiError):
    """The connection failed (refused, reset, DNS); no HTTP status was received. With ``outcome_unknown``
    the request had gone out first, so a write may have been applied."""

    label = "network"


class Invalid(ApiError):
    """400 BadRequest or 422 Invalid: the request itself is wrong; retrying it unchanged cannot help."""

    label = "invalid"


class Forbidden(ApiError):
    """401 Unauthorized or 403 Forbidden: the credentials (or RBAC) do not allow the request."""

    label = "forbidden"


class CredentialsError(Forbidden):
    """The client could not get credentials to send (an in-cluster token file that is empty or gone, an
    exec plugin that failed): no request was sent. A ``Forbidden``, because callers treat it alike: the
    fix is the credentials, not a retry now."""

    label = "credentials"


class UnexpectedApiError(ApiError):
    """Any other failure: an unexpected status code or a response that is not a JSON object."""

    label = "other"


def api_error_class(status: int, reason: str = "") -> type[ApiError]:
    """The class for an HTTP error response, from its status code and ``Status.reason``."""
    if status == 409:
        return AlreadyExists if reason == "AlreadyExists" else Conflict
    if status == 404:
        return NotFound
    if status == 410:
        return Expired
    if status == 429:
        return Throttled
    if status >= 500:
        return ServerError
    if status in (400, 422):
        return Invalid
    if status in (401, 403):
        return Forbidden
    return UnexpectedApiError


def api_error(status: int, reason: str, message: str, *, retry_after: float | None = None) -> ApiError:
    """The error for an HTTP error response, worded ``HTTP <status> <reason>: <message>`` as every
    shardlease client (the real one and the in-memory one) words it."""
    return api_error_class(status, reason)(f"HTTP {status} {reason}: {message}".strip(), status=status,
                                           reason=reason, retry_after=retry_after)
