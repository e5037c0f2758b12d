"""The error hierarchy: one class per API failure kind, all of them ``ShardleaseError``.

Users write ``except Conflict`` / ``except ShardleaseError``; these tests pin the mapping from HTTP
status and ``Status.reason`` to classes, the fields every error keeps, and the label each class gives
``shardlease_api_errors_total{kind}``.
"""

from __future__ import annotations

import inspect
import pickle

import pytest

import shardlease.errors as errors
from shardlease.errors import (
    AlreadyExists,
    ApiError,
    ConfigError,
    Conflict,
    ConflictError,
    Expired,
    Forbidden,
    HandlerImportError,
    Invalid,
    InvalidArgument,
    NotFound,
    ServerError,
    ShardleaseError,
    Throttled,
    Unauthorized,
    UnexpectedApiError,
    api_error,
    api_error_class,
)


@pytest.mark.parametrize(("status", "reason", "cls", "kind"), [
    (409, "Conflict", Conflict, "conflict"),
    (409, "", Conflict, "conflict"),
    (409, "AlreadyExists", AlreadyExists, "already_exists"),
    (404, "NotFound", NotFound, "not_found"),
    (410, "Expired", Expired, "expired"),
    (410, "Gone", Expired, "expired"),
    (429, "TooManyRequests", Throttled, "throttled"),
    (500, "InternalError", ServerError, "server"),
    (503, "ServiceUnavailable", ServerError, "server"),
    (504, "Timeout", ServerError, "server"),
    (400, "BadRequest", Invalid, "invalid"),
    (422, "Invalid", Invalid, "invalid"),
    (401, "Unauthorized", Unauthorized, "unauthorized"),
    (403, "Forbidden", Forbidden, "forbidden"),
    (418, "", UnexpectedApiError, "other"),
])
def test_status_and_reason_map_to_one_class(status: int, reason: str, cls: type[ApiError], kind: str) -> None:
    assert api_error_class(status, reason) is cls
    err = api_error(status, reason, "boom")
    assert type(err) is cls and err.label == kind and cls.label == kind
    assert (err.status, err.reason, err.retry_after) == (status, reason, None)
    assert str(err) == f"HTTP {status} {reason}: boom".replace("  ", " ")


def test_retry_after_is_kept() -> None:
    err = api_error(429, "TooManyRequests", "slow down", retry_after=2.5)
    assert isinstance(err, Throttled) and err.retry_after == 2.5


def test_every_exception_shardlease_exports_is_a_shardlease_error() -> None:
    classes = [obj for name in errors.__all__ if inspect.isclass(obj := getattr(errors, name))]
    assert len(classes) >= 18
    for cls in classes:
        assert issubclass(cls, ShardleaseError), cls
    for cls in (Conflict, AlreadyExists):
        assert issubclass(cls, ConflictError)
    assert issubclass(HandlerImportError, ConfigError)
    assert issubclass(InvalidArgument, ValueError)  # code that caught ValueError keeps working


def test_handler_import_error_is_still_importable_from_the_run_command() -> None:
    from shardlease.commands.run import HandlerImportError as from_run

    assert from_run is HandlerImportError


def test_errors_survive_pickling_with_their_fields() -> None:
    """Errors cross process boundaries (worker pools, multiprocessing queues) intact."""
    err = api_error(429, "TooManyRequests", "slow", retry_after=1.0)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is Throttled and (back.status, back.reason, back.retry_after) == (429, "TooManyRequests", 1.0)
    assert str(back) == str(err)
