"""``shardlease reshard``: change a running group's shard count (rules: ``core/resharding.py``).

One conditional write of the group Lease's next generation (``shardlease.runtime.reshard``); the
replicas switch by themselves, stopping every old handler before any of the new generation starts.
``--wait`` then watches the shard Leases until that switch is complete.

Exit codes: 0 written (or nothing to change), 1 the cluster could not be read or written or the wait
ended without the switch completing, 2 a bad flag or a group that cannot be resharded as it is (also a
group with no Lease at all in the namespace, which the message then says, naming the namespace).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, TextIO

from shardlease.commands.cluster import ConnectFailed, add_cluster_flags, api_failure, connect, namespace_of, no_group

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reshard",
        help="change a running group's shard count",
        description="Write the group's next generation with a new shard count. The replicas keep running "
                    "and switch at once: no handler of the new generation starts before every handler of the "
                    "old one has stopped. Members still configured with their old --shards follow the new "
                    "count; a later rollout to another count changes it again.",
    )
    add_cluster_flags(parser)
    parser.add_argument("--shards", required=True, type=int, metavar="N", help="the new shard count")
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="wait up to SECONDS for the switch to complete (exit 1 if it does not)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from shardlease.errors import ConfigError, InvalidArgument
    from shardlease.runtime.reshard import (
        GroupLeaseMissing,
        GroupLeaseUnreadable,
        ReshardError,
        ReshardSuperseded,
        ReshardTimeout,
        check_shards,
        reshard,
    )

    out = out or sys.stdout
    try:
        choice = namespace_of(args)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    try:
        check_shards(args.shards, "--shards")
    except InvalidArgument as exc:
        return _fail(str(exc), 2)
    if args.wait is not None and not (math.isfinite(args.wait) and args.wait >= 0):
        return _fail(f"--wait must be a number of seconds >= 0, got {args.wait}", 2)

    try:
        api = connect(args, "shardlease-reshard")
    except ConnectFailed as exc:
        return _fail(str(exc), 1)
    try:
        result = reshard(args.group, args.shards, namespace=args.namespace, api_client=api, wait=args.wait)
    except GroupLeaseMissing as exc:
        return _fail(_missing(api, args, choice) or str(exc), 2)
    except GroupLeaseUnreadable as exc:
        return _fail(str(exc), 2)
    except (ReshardTimeout, ReshardSuperseded) as exc:
        _report(exc.result, out)
        return _fail(str(exc), 1)
    except ReshardError as exc:
        return _fail(str(exc), 1)
    except Exception as exc:
        return _fail(api_failure(exc, api, args, f"a request on Leases in namespace {args.namespace!r}"), 1)
    finally:
        api.close()
    _report(result, out)
    if result.pending == ():
        print(f"switch to generation {result.generation} complete: every shard Lease below {result.span} carries "
              f"it", file=out)
    return 0


def _missing(api: Any, args: argparse.Namespace, choice: Any) -> str | None:
    """When the group has no Lease at all in the namespace (not merely no group Lease), the message
    ``status`` gives for it, naming the namespace, why that one, and where the group does run."""
    from shardlease.client.leases import list_group_leases
    from shardlease.core.records import group_selector

    try:
        items, _ = list_group_leases(api, args.namespace, group_selector(args.group))
    except Exception:
        return None
    return None if items else no_group(api, args.group, choice)


def _report(result: Any, out: TextIO) -> None:
    """``8 -> 16 shards, generation 3 -> 4`` (or that nothing changed), and the basis written."""
    before, after = result.before, result.state
    if not result.changed:
        print(f"group {result.group!r} already runs {after.count} shards (generation {after.generation}); "
              f"nothing changed", file=out)
        return
    print(f"group {result.group!r}: {before.count} -> {after.count} shards, generation {before.generation} -> "
          f"{after.generation}", file=out)
    if result.fleet is not None and result.fleet != after.count:
        print(f"most live members are configured with {result.fleet} shards; they follow {after.count} until a "
              f"rollout configures them with another count", file=out)


def _fail(message: str, code: int) -> int:
    print(f"shardlease reshard: {message}", file=sys.stderr)
    return code
