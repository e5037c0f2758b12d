"""Exceptions shardlease raises on purpose. Catch ``ShardleaseError`` to handle all of them."""

from __future__ import annotations

__all__ = ["ConfigError", "ShardleaseError"]


class ShardleaseError(Exception):
    """Base class of every error shardlease raises deliberately (not of bugs or library errors)."""


class ConfigError(ShardleaseError):
    """The replica cannot start as configured: the message says what was tried and how to fix it."""
