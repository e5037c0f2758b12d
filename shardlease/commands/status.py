"""``shardlease status``: who holds which shard of a group, who should, and what looks wrong.

The picture is built from the group's Leases alone (one list call, or a list plus a watch with
``--watch``), so it works from a laptop against any cluster the kubeconfig reaches, without talking
to the replicas.

The model (``GroupView``: members, the shard table, flags and problems) is pure and lives in
``shardlease.core.groupview``, which says how liveness is approximated there; this module lists or
watches the Leases and prints the view.

A group with no Lease in the namespace is not shown as an empty table (which reads like a group whose
every replica is gone): the command says that no such group is there, which namespace it looked in and
why, and exits 1. With ``--watch`` it says so and waits for the group to appear.

Exit codes: 0 shown, 1 the cluster could not be read or the group has no Lease there, 2 a bad setting.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from shardlease.client.leases import list_group_leases
from shardlease.commands.cluster import (
    ConnectFailed,
    add_cluster_flags,
    api_failure,
    connect,
    namespace_of,
    no_group,
    reason,
)
from shardlease.core.groupview import FLAG_EXPIRED, FLAG_MISPLACED, FLAG_UNOWNED, GroupView, MemberRow, ShardRow
from shardlease.core.records import group_selector

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

__all__ = ["FLAG_EXPIRED", "FLAG_MISPLACED", "FLAG_UNOWNED", "GroupView", "MemberRow", "ShardRow",
           "list_group_leases", "register", "run"]

#: With --watch, how often to redraw just to refresh the "seconds since renew" column.
_AGE_REFRESH = 5.0
#: With --watch, what ``shown`` is while the group has no Lease.
_ABSENT: tuple[Any, ...] = ("no group",)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show which replica holds which shard of a group",
        description="Show a group's members and shard owners, and flag unowned, expired or "
                    "misplaced shards. Liveness is judged by this machine's clock (display only). Exit status: "
                    "0 shown, 1 the cluster could not be read or the group has no Lease in the namespace, "
                    "2 a bad setting.",
    )
    add_cluster_flags(parser)
    parser.add_argument("--watch", action="store_true", help="redraw whenever the Leases change (Ctrl-C exits)")
    parser.add_argument("--output", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("--load-factor", type=float, default=1.0,
                        help="the replicas' load factor, for the desired-holder column (default: 1.0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from shardlease.errors import ConfigError

    out = out or sys.stdout
    try:
        choice = namespace_of(args)
    except ConfigError as exc:
        print(f"shardlease status: {exc}", file=sys.stderr)
        return 2
    try:
        api = connect(args, "shardlease-status")
    except ConnectFailed as exc:
        print(f"shardlease status: {exc}", file=sys.stderr)
        return 1
    selector = group_selector(args.group)

    def fail(exc: BaseException) -> int:
        refused = f"to list Leases in namespace {args.namespace!r}"
        print(f"shardlease status: {api_failure(exc, api, args, refused)}", file=sys.stderr)
        return 1

    try:
        if not args.watch:
            try:
                items, _ = list_group_leases(api, args.namespace, selector)
            except Exception as exc:
                return fail(exc)
            if not items:
                print(f"shardlease status: {no_group(api, args.group, choice)}", file=sys.stderr)
                return 1
            _show(_view(args, items), args.output, out, clear=False)
            return 0
        return _watch(api, args, selector, out, fail, lambda: no_group(api, args.group, choice))
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            api.close()
        except Exception:
            pass


def _view(args: argparse.Namespace, items: Iterable[Mapping[str, Any]]) -> GroupView:
    return GroupView.from_objects(args.group, args.namespace, items,
                                  _dt.datetime.now(_dt.timezone.utc), load_factor=args.load_factor)


def _show(view: GroupView, output: str, out: TextIO, clear: bool) -> None:
    if output == "json":
        out.write(json.dumps(view.to_json(), separators=(",", ":") if clear else (", ", ": ")) + "\n")
    else:
        if clear and out.isatty():
            out.write("\x1b[H\x1b[2J")
        elif clear:
            out.write(f"--- {_dt.datetime.now().astimezone().strftime('%H:%M:%S')} ---\n")
        out.write(view.render_text() + "\n")
    out.flush()


def _show_absent(message: str, output: str, out: TextIO, clear: bool) -> None:
    """The group has no Lease (yet, or any more): in text, that is what is drawn; in JSON, stdout carries
    only views of a group that exists, so the message goes to stderr."""
    line = f"shardlease status: {message}; waiting for its Leases (Ctrl-C to stop)"
    if output == "json":
        print(line, file=sys.stderr, flush=True)
        return
    if clear and out.isatty():
        out.write("\x1b[H\x1b[2J")
    elif clear:
        out.write(f"--- {_dt.datetime.now().astimezone().strftime('%H:%M:%S')} ---\n")
    out.write(line + "\n")
    out.flush()


def _watch(api: ApiClient, args: argparse.Namespace, selector: str, out: TextIO,
           fail: Callable[[BaseException], int], absent: Callable[[], str]) -> int:
    """List, then watch from the list's resourceVersion; relist when the watch ends or expires.

    A background thread feeds events into a queue; the main thread applies them (a burst within 0.2 s
    at once) and redraws when what is shown changed -- including when time alone changed it (a Lease
    went past its expiry), which needs no request. The first list failing is fatal (exit 1); later
    failures are retried. While the group has no Lease, ``absent()`` (which names the namespace) is
    shown instead of an empty table, once each time the group goes missing.
    """
    try:
        items, version = list_group_leases(api, args.namespace, selector)
    except Exception as exc:
        return fail(exc)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    threading.Thread(target=_pump, args=(api, args.namespace, selector, version, events),
                     name="status-watch", daemon=True).start()

    objects = {item["metadata"]["name"]: item for item in items if "name" in item.get("metadata", {})}
    shown: tuple[Any, ...] | None = None
    drawn_at = 0.0
    dirty = True
    while True:
        batch: list[tuple[str, Any]] = []
        try:
            batch.append(events.get(timeout=1.0))
        except queue.Empty:
            pass  # nothing happened; still re-evaluate, since time alone expires Leases
        else:
            burst_end = time.monotonic() + 0.2  # gather a burst (a rebalance) into one redraw
            while (remaining := burst_end - time.monotonic()) > 0:
                try:
                    batch.append(events.get(timeout=remaining))
                except queue.Empty:
                    break
        for kind, payload in batch:
            dirty |= _apply(objects, kind, payload)
        if not objects:
            if shown != _ABSENT:
                _show_absent(absent(), args.output, out, clear=shown is not None)
                shown, drawn_at, dirty = _ABSENT, time.monotonic(), False
            continue
        view = _view(args, objects.values())
        # Renewals change only renewTime every retry period; redrawing for each would scroll the
        # screen constantly. Redraw when something shown besides the ages changed, and otherwise
        # refresh the ages at most every REFRESH seconds while renewals keep coming.
        changed = view.stable_key() != shown
        if changed or (dirty and time.monotonic() - drawn_at >= _AGE_REFRESH):
            _show(view, args.output, out, clear=True)
            shown, drawn_at, dirty = view.stable_key(), time.monotonic(), False


def _apply(objects: dict[str, dict[str, Any]], kind: str, payload: Any) -> bool:
    """Apply one queued event to the name -> Lease map; True if something changed."""
    if kind == "relist":
        objects.clear()
        objects.update(payload)
        return True
    if kind in ("ADDED", "MODIFIED"):
        objects[payload["metadata"]["name"]] = payload
        return True
    if kind == "DELETED":
        objects.pop(payload["metadata"]["name"], None)
        return True
    if kind == "error":
        print(f"shardlease status: watch interrupted ({payload}); retrying", file=sys.stderr)
    return False


def _pump(api: ApiClient, namespace: str, selector: str, version: str,
          events: queue.Queue[tuple[str, Any]]) -> None:
    from kubernetes import watch
    from kubernetes.client import CoordinationV1Api

    leases = CoordinationV1Api(api)
    while True:
        try:
            if not version:
                items, version = list_group_leases(api, namespace, selector)
                events.put(("relist", {i["metadata"]["name"]: i for i in items}))
            stream = watch.Watch().stream(
                leases.list_namespaced_lease, namespace, label_selector=selector,
                resource_version=version, timeout_seconds=60, allow_watch_bookmarks=True)
            for event in stream:
                raw = event.get("raw_object") or {}
                kind = event.get("type")
                if kind == "ERROR":
                    version = ""  # e.g. 410 Gone: relist
                    break
                version = str((raw.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    events.put((kind, raw))
        except Exception as exc:
            if getattr(exc, "status", None) == 410:
                version = ""
                continue
            events.put(("error", reason(exc)))
            version = ""
            time.sleep(1.0)
