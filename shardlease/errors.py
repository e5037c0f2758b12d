"""Exceptions shardlease raises on purpose. Catch ``ShardleaseError`` to handle all of them."""

from __future__ import annotations

__all__ = ["ConfigError", "HandlerSignatureError", "ShardleaseError"]


class ShardleaseError(Exception):
    """Base class of every error shardlease raises deliberately (not of bugs or library errors)."""


class ConfigError(ShardleaseError):
    """The replica cannot start as configured: the message says what was tried and how to fix it."""


class HandlerSignatureError(ConfigError):
    """The handler cannot be called with one positional argument, the ``Shard``.

    Raised before any shard is taken: a handler that fails on every call would otherwise be restarted
    with back-off forever while its shards stay held and unprocessed.
    """
