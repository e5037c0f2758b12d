"""Logging with the replica's identity, group and (where relevant) shard on every line.

Several managers may live in one process (tests do this), so the context is not global: each manager
logs through a ``ContextAdapter`` that puts ``identity`` / ``group`` into the record, and calls about one
shard add ``extra={"shard": i}``. ``configure()`` installs one handler on the ``shardlease`` logger with
either a text or a JSON-lines formatter; records from elsewhere simply show ``-`` for missing fields.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

__all__ = ["ContextAdapter", "JsonFormatter", "TextFormatter", "configure", "get_logger"]

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


def get_logger(identity: str, group: str, name: str = LOGGER_NAME) -> ContextAdapter:
    return ContextAdapter(logging.getLogger(name), {"identity": identity, "group": group})


class _ContextDefaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in _CONTEXT_FIELDS:
            if not hasattr(record, key):
                setattr(record, key, None)
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
    handler.addFilter(_ContextDefaults())
    handler.set_name("shardlease")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "shardlease":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else str(level).upper())
    return handler
