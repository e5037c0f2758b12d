"""Kubernetes ``v1 Status`` errors, worded the way kube-apiserver words them.

Clients branch on these bodies (the Python elector reads ``code``; client-go reads ``reason``), so the
exact shape matters more than the prose. Every handler signals failure by raising :class:`ApiError`;
the HTTP layer turns it into a response, so no error path can leave a half-written reply.
"""

from __future__ import annotations

from typing import Any

_REASONS: dict[int, str] = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A request failure that becomes a ``v1 Status`` body with the same HTTP code."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = "",
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # "" means "the usual reason for this code"; None means "no reason" (kube omits it sometimes).
        self.reason = _REASONS.get(code, "") if reason == "" else reason
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        return failure_status(self.code, self.message, self.reason, self.details)


def failure_status(
    code: int, message: str, reason: str | None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def qualified(plural: str, group: str) -> str:
    """``leases.coordination.k8s.io`` or just ``configmaps`` for the core group."""
    return f"{plural}.{group}" if group else plural


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(404, f'{qualified(plural, group)} "{name}" not found', "NotFound",
                    _details(name, group, plural))


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(409, f'{qualified(plural, group)} "{name}" already exists', "AlreadyExists",
                    _details(name, group, plural))


def conflict(plural: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
                    "Conflict", _details(name, group, plural))


STALE_OBJECT = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(kind_label: str, name: str, group: str, kind: str,
            causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid. ``causes`` are (reason, field, message-without-field) triples.

    ``kind_label`` is what leads the message (``Lease.coordination.k8s.io`` for validation errors,
    ``leases.coordination.k8s.io`` for the missing-resourceVersion update error) and ``kind`` is what
    goes into ``details.kind``; kube-apiserver uses the Kind for one and the plural for the other.
    """
    parts = [f"{field}: {msg}" for _, field, msg in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(name, group, kind)
    details["causes"] = [{"reason": r, "message": m, "field": f} for r, f, m in causes]
    return ApiError(422, f'{kind_label} "{name}" is invalid: {joined}', "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def path_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound", {})


def method_not_allowed(method: str) -> ApiError:
    """405. kube-apiserver 1.36 does not name the method in the message (checked for PUT on a Lease
    collection and GET on selfsubjectaccessreviews); ``method`` is kept for the call sites' clarity."""
    del method
    return ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {})


def success_status(details: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
