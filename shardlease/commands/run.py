"""``shardlease run MODULE:FUNC``: run a handler as one replica of a group until SIGTERM/SIGINT.

Settings come from, in increasing precedence: defaults, ``SHARDLEASE_*`` environment variables, flags.
Only flags that were actually given are passed to ``ShardConfig``, so an unset flag never hides an
environment variable. Exit codes: 0 after a graceful stop, 2 for invalid settings or a handler that
cannot be imported, 1 if the manager failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

#: Exit status when handlers were still running after the drain timeout at shutdown.
EXIT_ABANDONED = 3

__all__ = ["register", "run", "load_handler"]

# (flag, metavar, help); each flag's dest is the ShardConfig field of the same name
# Values stay strings here: ShardConfig converts and validates them, so a bad flag gets the same
# message as a bad SHARDLEASE_* variable.
_FLAGS: tuple[tuple[str, str | None, str], ...] = (
    ("--group", "G", "group name (Lease name prefix)"),
    ("--shards", "S", "number of shards in the group"),
    ("--namespace", "NS", "namespace of the Leases"),
    ("--identity", "ID", "this replica's identity (default: hostname)"),
    ("--kubeconfig", "PATH", "kubeconfig file"),
    ("--context", "C", "kubeconfig context"),
    ("--lease-duration", "SECONDS", "how long a Lease stays valid without renewal (default 15)"),
    ("--renew-deadline", "SECONDS", "stop a handler after failing to renew for this long (default 10)"),
    ("--retry-period", "SECONDS", "renew interval and retry period (default 2)"),
    ("--load-factor", "F", "bounded-load factor, >= 1.0 (default 1.0)"),
    ("--handoff-grace", "SECONDS", "after this long free, any member may take a shard (default 2 x retry period)"),
    ("--drain-timeout", "SECONDS", "how long to wait for a handler to return after revoke (default 30)"),
    ("--metrics-port", "PORT", "serve /metrics, /healthz and /readyz on this port"),
    ("--log-format", "{text,json}", "log line format: text or json (default text)"),
    ("--log-level", "LEVEL", "log level (default INFO)"),
)
_FIELDS = tuple(flag[2:].replace("-", "_") for flag, *_rest in _FLAGS)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a handler as one replica of a shard group",
        description=(
            "Join GROUP as one replica, hold this replica's share of its shards (one Lease each) and call "
            "MODULE:FUNC(shard) for every shard held, in its own thread (or as an asyncio task for an "
            "async def). SIGTERM or SIGINT stops the handlers, releases every Lease and exits. Every "
            "option can also be set as SHARDLEASE_<OPTION> in the environment; flags win. Exit status: "
            "0 after a graceful stop, 1 on an unexpected error, 2 on bad configuration, 3 if handlers "
            "were still running after the drain timeout at shutdown (their Leases are left to expire)."
        ),
    )
    parser.add_argument("target", metavar="MODULE:FUNC", help="the handler, e.g. myapp.workers:handle")
    for flag, metavar, text in _FLAGS:
        # SUPPRESS: an absent flag stays absent, so the environment can fill it in.
        parser.add_argument(flag, default=argparse.SUPPRESS, metavar=metavar, help=text)
    parser.set_defaults(func=run)


class HandlerImportError(Exception):
    pass


def load_handler(target: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNC`` (dots allowed in FUNC) with the current directory on ``sys.path``."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerImportError(f"handler must be given as MODULE:FUNC, got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise HandlerImportError(f"cannot import module {module_name!r}: no module named {exc.name!r} "
                                     f"(searched the current directory {cwd} and sys.path)") from None
        raise HandlerImportError(f"importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise HandlerImportError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise HandlerImportError(f"{target} is not callable (it is a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..config import ShardConfig, format_config_error
    from ..errors import ShardleaseError
    from ..logs import configure
    from ..manager import ShardManager

    given = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    try:
        config = ShardConfig(**given)
    except ValidationError as exc:
        print(f"shardlease run: {format_config_error(exc)}", file=sys.stderr)
        return 2
    configure(config.log_format, config.log_level)
    try:
        handler = load_handler(args.target)
    except HandlerImportError as exc:
        print(f"shardlease run: {exc}", file=sys.stderr)
        return 2
    try:
        manager = ShardManager(config, handler)
        manager.run()
    except ShardleaseError as exc:  # e.g. no usable kubeconfig: a setup problem, like a config error
        print(f"shardlease run: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        import logging

        logging.getLogger("shardlease").exception("shardlease run failed")
        print(f"shardlease run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    abandoned = manager.abandoned_shards()
    if abandoned:
        # The process exits anyway (ending the threads); the Leases expire after the lease duration.
        print(f"shardlease run: exited with handlers of shards {sorted(abandoned)} still running after "
              f"the drain timeout ({config.drain_timeout:g} s); their Leases were left to expire. "
              "Make handlers return promptly once shard.stopped is set, or raise --drain-timeout.",
              file=sys.stderr)
        return EXIT_ABANDONED
    return 0
