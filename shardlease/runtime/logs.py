"""Logging with the replica's identity, group and (where relevant) shard on every line.

Several managers may live in one process (tests do this), so the context is not global: each manager
logs through a ``ContextAdapter`` that puts ``identity`` / ``group`` into the record, and calls about one
shard add ``extra={"shard": i}``.

Handler code logs through loggers of its own (``logging.getLogger("myapp")``) and cannot be asked to
pass ``extra``. So the handler runner also sets a *log context* (a ``contextvars.ContextVar``) when a
handler's thread or task starts, and :class:`ContextFilter` copies it into every record that does not
carry the field itself. A context variable is exactly as wide as a handler run: each thread starts with
an empty context and each asyncio task works on its own copy, so two shards' handlers never see each
other's values, while tasks a handler creates inherit its context.

``configure()`` installs one handler on the root logger, with that filter and either a text or a
JSON-lines formatter, so lines of any logger get the fields; records logged outside any context show
``-`` (text) or omit the fields (JSON).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
import logging
import sys
import types
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

from shardlease.errors import Unauthorized

__all__ = [
    "ContextAdapter",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "current_log_context",
    "get_logger",
    "quiet_unauthorized",
    "log_context",
    "set_log_context",
]

LOGGER_NAME = "shardlease"
_CONTEXT_FIELDS = ("identity", "group", "shard")
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class ContextAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Merges the manager's context with per-call ``extra`` (the stock adapter replaces it instead)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


class _DropUnauthorized(logging.Filter):
    """Drops records whose arguments carry an ``Unauthorized``: while credentials are rejected every
    request fails with it (renewals, watches, several a second), and the manager logs the rejection
    itself once per lease duration, with what to check."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        return not any(isinstance(arg, Unauthorized) for arg in args)


_DROP_UNAUTHORIZED = _DropUnauthorized()


def quiet_unauthorized(name: str = LOGGER_NAME) -> None:
    """Install the filter that drops per-request ``Unauthorized`` lines on the ``name`` logger (once)."""
    logger = logging.getLogger(name)
    if _DROP_UNAUTHORIZED not in logger.filters:
        logger.addFilter(_DROP_UNAUTHORIZED)


def get_logger(identity: str, group: str, name: str = LOGGER_NAME) -> ContextAdapter:
    return ContextAdapter(logging.getLogger(name), {"identity": identity, "group": group})


_LOG_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "shardlease_log_context", default=types.MappingProxyType({}))


def current_log_context() -> Mapping[str, Any]:
    """The identity/group/shard fields set for the running thread or task (empty outside a handler)."""
    return _LOG_CONTEXT.get()


def set_log_context(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add ``fields`` to the log context of the current thread or task; returns the token to undo it.

    Meant for the start of a thread or task that lives exactly as long as the context should (the
    handler runner calls it first thing); elsewhere prefer :func:`log_context`.
    """
    return _LOG_CONTEXT.set({**_LOG_CONTEXT.get(), **fields})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within the block, records logged from this thread or task carry ``fields`` (e.g. ``shard=3``).

    A thread you start yourself begins with an empty context; wrap its body in this (or start it with
    ``contextvars.copy_context().run``) to keep the shard on its lines. ``asyncio.create_task`` and
    ``asyncio.to_thread`` carry the context along by themselves.
    """
    token = set_log_context(**fields)
    try:
        yield
    finally:
        _LOG_CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Fills ``identity`` / ``group`` / ``shard`` on a record from the log context where the record
    does not carry them (fields passed with ``extra=`` win). Always lets the record through.

    ``configure()`` puts it on shardlease's handler; add it to a handler of your own to get the same
    fields there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = _LOG_CONTEXT.get()
        for key in _CONTEXT_FIELDS:
            if getattr(record, key, None) is None:
                setattr(record, key, context.get(key))
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        context = f"identity={getattr(record, 'identity', None) or '-'} group={getattr(record, 'group', None) or '-'}"
        shard = getattr(record, "shard", None)
        if shard is not None:
            context += f" shard={shard}"
        line = f"{when} {record.levelname:<7} {record.name} {context} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields given by callers are included."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and key not in doc and not key.startswith("_") and key not in _CONTEXT_FIELDS:
                try:
                    json.dumps(value)
                    doc[key] = value
                except (TypeError, ValueError):
                    doc[key] = repr(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(log_format: str = "text", level: str | int = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Install (or replace) the shardlease handler on the root logger; returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("shardlease")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "shardlease":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else str(level).upper())
    return handler
