"""The ``shardlease`` command line: a thin dispatcher over one module per sub-command.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed namespace, returning an exit code). Command modules keep their
heavy imports inside ``func`` so that ``shardlease --help`` and ``shardlease dev-server`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from shardlease import __version__

#: Modules that contribute a sub-command, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "shardlease.commands.run",
    "shardlease.commands.status",
    "shardlease.commands.reshard",
    "shardlease.commands.fencing",
    "shardlease.commands.demo",
    "shardlease.commands.dev_server",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardlease",
        description="Split work between replicas with one Kubernetes Lease per shard.",
    )
    parser.add_argument("--version", action="version", version=f"shardlease {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["run"]:
        # The process's own entry (not an in-process call from a test or an embedding program, whose
        # signal handling is its own): before the sub-commands' heavy imports, so that a SIGTERM during
        # start-up ends in a clean exit.
        from shardlease.runtime.signals import catch_early

        catch_early()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover - ``python -m shardlease.cli``
    sys.exit(main())
