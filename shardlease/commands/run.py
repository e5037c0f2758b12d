"""``shardlease run MODULE:FUNC``: run a handler as one replica of a group until SIGTERM/SIGINT.

Settings come from, in increasing precedence: defaults, ``SHARDLEASE_*`` environment variables, flags.
Only flags that were actually given are passed to ``ShardConfig``, so an unset flag never hides an
environment variable. Exit codes: 0 after a graceful stop, 2 for invalid settings or a handler that
cannot be imported, 1 if the manager failed.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable
from typing import Any

from shardlease.commands.cluster import NAMESPACE_HELP

# Re-exported: it lived here before moving into the one error hierarchy.
from shardlease.errors import HandlerImportError as HandlerImportError

#: Exit status when handlers were still running after the drain timeout at shutdown.
EXIT_ABANDONED = 3

__all__ = ["load_handler", "register", "run"]

# (flag, metavar, help); each flag's dest is the ShardConfig field of the same name
# Values stay strings here: ShardConfig converts and validates them, so a bad flag gets the same
# message as a bad SHARDLEASE_* variable.
_FLAGS: tuple[tuple[str, str | None, str], ...] = (
    ("--group", "G", "group name (Lease name prefix)"),
    ("--shards", "S", "number of shards in the group"),
    ("--namespace", "NS", NAMESPACE_HELP),
    ("--identity", "ID", "this replica's identity, unique per replica (default: $POD_NAME, else the hostname)"),
    ("--kubeconfig", "PATH", "kubeconfig file"),
    ("--context", "C", "kubeconfig context"),
    ("--lease-duration", "SECONDS", "how long a Lease stays valid without renewal (default 15)"),
    ("--renew-deadline", "SECONDS", "stop a handler after failing to renew for this long (default 10)"),
    ("--retry-period", "SECONDS", "retry period after failures, and the renew interval unless set (default 2)"),
    ("--renew-interval", "SECONDS", "how often a held Lease is renewed (default: the retry period)"),
    ("--max-write-rate", "W", "space renewals so this replica writes at most W Leases per second, never later "
                              "than renew deadline - retry period after the last renewal (default: no limit)"),
    ("--load-factor", "F", "bounded-load factor, >= 1.0 (default 1.0)"),
    ("--capacity", "C", "this replica's size relative to the others, > 0 (default 1; docs/load.md)"),
    ("--weights", "JSON", "static per-shard loads, a JSON object: '{\"0\": 5, \"3\": 20}' (docs/load.md)"),
    ("--load-half-life", "SECONDS", "half-life of the smoothing of reported shard loads (default 30)"),
    ("--rebalance-period", "SECONDS", "at most one load rebalance per this many seconds (default 60)"),
    ("--rebalance-threshold", "T", "rebalance when a replica carries over (1+T) x its fair load (default 0.15)"),
    ("--rebalance-epsilon", "E", "a rebalance aims for no replica over (1+E) x its fair load (default 0.1)"),
    ("--rebalance-max-moves", "K", "most shards moved for load per rebalance (default 32)"),
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


def _did_you_mean(wanted: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(wanted, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"; did you mean {listed}?"


def _callable_names(obj: object) -> list[str]:
    """Names of the callables reachable as attributes of ``obj`` (not dunders): the names a
    handler could have meant. Getting an attribute can run code (properties); any failure skips it."""
    names = []
    for name in dir(obj):
        if name.startswith("__"):
            continue
        try:
            if callable(getattr(obj, name)):
                names.append(name)
        except Exception:
            continue
    return names


def _sibling_modules(missing: str) -> list[str]:
    """Importable module names next to ``missing`` (same package, or top level), for a suggestion."""
    parent, _, _ = missing.rpartition(".")
    if not parent:
        return [info.name for info in pkgutil.iter_modules()]
    package = sys.modules.get(parent)
    path = getattr(package, "__path__", None)
    return [f"{parent}.{info.name}" for info in pkgutil.iter_modules(path)] if path is not None else []


def load_handler(target: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNC`` (dots allowed in FUNC) with the current directory on ``sys.path``, and
    check that it can be called with one argument, the ``Shard``.

    Every mistake found here would otherwise surface only once shards are held (a ``TypeError`` per
    shard, restarted with back-off forever), or as a crash loop of the pod; here it is one message.
    """
    from shardlease.errors import HandlerSignatureError
    from shardlease.runtime.handlers import check_handler_signature

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerImportError(f"handler must be given as MODULE:FUNC, e.g. myapp.worker:handle; got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise HandlerImportError(
                f"cannot import module {module_name!r} of {target}: no module named {exc.name!r}"
                f"{_did_you_mean(exc.name, _sibling_modules(exc.name))} (searched the current directory "
                f"{cwd} and sys.path; run from the directory that contains the module, or add its "
                "directory to PYTHONPATH)") from None
        raise HandlerImportError(f"importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise HandlerImportError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    where = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            hint = _did_you_mean(part, _callable_names(obj))
            container = f"module {module_name!r}" if where == module_name else f"{where!r}"
            raise HandlerImportError(
                f"{container} has no attribute {part!r} (looking for {target}){hint}") from None
        where = f"{where}.{part}"
    if not callable(obj):
        raise HandlerImportError(
            f"{target} is not callable: it is {_short_repr(obj)} of type {type(obj).__name__}; name the "
            "function (or async function) to call for each shard, e.g. def handle(shard): ...")
    try:
        check_handler_signature(obj, name=target)
    except HandlerSignatureError as exc:
        raise HandlerImportError(str(exc)) from None
    return obj  # type: ignore[no-any-return]


def _short_repr(obj: object, limit: int = 60) -> str:
    try:
        text = repr(obj)
    except Exception:
        return "?"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from shardlease.config import ShardConfig, find_namespace, format_config_error
    from shardlease.errors import ConfigError, ShardleaseError
    from shardlease.runtime.logs import configure
    from shardlease.runtime.manager import ShardManager

    given = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    # The namespace rule every command shares (find_namespace), applied here rather than left to the
    # settings machinery, so that run, status, reshard and demo cannot drift apart.
    given.setdefault("namespace", find_namespace().name)
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
    except ConfigError as exc:  # e.g. no usable kubeconfig: a setup problem, like a config error
        print(f"shardlease run: {exc}", file=sys.stderr)
        return 2
    except ShardleaseError as exc:  # e.g. the control loop crashed: a failure, not a setup problem
        print(f"shardlease run: {exc}", file=sys.stderr)
        return 1
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
