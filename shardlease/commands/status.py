"""``shardlease status``: who holds which shard of a group, who should, and what looks wrong.

The picture is built from the group's Leases alone (one list call, or a list plus a watch with
``--watch``), so it works from a laptop against any cluster the kubeconfig reaches, without talking
to the replicas.

Liveness and expiry here are a *display-only approximation*: a member or shard Lease counts as live
while it is held and ``renewTime + leaseDurationSeconds`` is not in the past by *this machine's* wall
clock. The replicas themselves never judge a peer that way (they time expiry with their own monotonic
clock from when they observed a change, see ``shardlease/elector.py``), so a skewed clock here can
make this command call a shard expired that no replica would, or the reverse. Good enough to look at;
not a basis for decisions.

The desired holder of each shard is ``assign(group, S, live members)``, the same function the
replicas use, with ``S`` taken from the live members' ``shardlease.io/shards`` annotations.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ..elector import Timing
from ..membership import compute_membership
from ..records import (
    ANNOTATION_PROBLEMS,
    ANNOTATION_REFUSED,
    ROLE_MEMBER,
    ROLE_SHARD,
    LeaseRecord,
    group_selector,
    member_lease_name,
    parse_microtime,
)

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

__all__ = ["GroupView", "MemberRow", "ShardRow", "list_group_leases", "register", "run"]

FLAG_UNOWNED = "UNOWNED"
FLAG_EXPIRED = "EXPIRED"
FLAG_MISPLACED = "MISPLACED"

_REQUEST_TIMEOUT = 10.0
#: With --watch, how often to redraw just to refresh the "seconds since renew" column.
_AGE_REFRESH = 5.0


# --------------------------------------------------------------------------------------------------
# The model (pure: Lease dicts + a wall-clock "now" in, rows out)
# --------------------------------------------------------------------------------------------------


def _age(record: LeaseRecord, now: _dt.datetime) -> float | None:
    if record.renew_time is None:
        return None
    return (now - record.renew_time).total_seconds()


def _live(record: LeaseRecord, now: _dt.datetime) -> bool:
    """Held and not past ``renewTime + leaseDurationSeconds`` (display-only, see module docstring)."""
    if not record.is_held or record.renew_time is None or record.lease_duration_seconds is None:
        return False
    return record.renew_time + _dt.timedelta(seconds=record.lease_duration_seconds) >= now


@dataclass(frozen=True)
class MemberRow:
    identity: str
    declared_shards: int | None
    live: bool
    age: float | None
    """Seconds since ``renewTime`` (wall clock of this machine); ``None`` if unknown."""
    eligible: bool = False
    """Live and declaring the group's shard count: in the ring the replicas assign shards over."""


@dataclass(frozen=True)
class ShardRow:
    shard: int
    holder: str | None
    """``None`` when the Lease is absent or released."""
    desired: str | None
    age: float | None
    transitions: int | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class GroupView:
    """What ``shardlease status`` shows, computed from the group's Leases at one moment."""

    group: str
    namespace: str
    shards: int
    members: tuple[MemberRow, ...]
    rows: tuple[ShardRow, ...]
    notes: tuple[str, ...] = field(default=())
    problems: tuple[str, ...] = field(default=())
    """What replicas report about themselves on their member Leases (a refused duplicate identity,
    crash-looping or stuck handlers, a shard-count mismatch): each makes the summary say ATTENTION."""

    @classmethod
    def from_objects(
        cls,
        group: str,
        namespace: str,
        objects: Iterable[Mapping[str, Any]],
        now: _dt.datetime,
        *,
        shards: int | None = None,
        load_factor: float = 1.0,
    ) -> GroupView:
        """Build the view. ``shards`` overrides the count read from the member annotations."""
        from ..assignment import assign

        member_records: dict[str, LeaseRecord] = {}
        shard_records: dict[int, LeaseRecord] = {}
        notes: list[str] = []
        prefix = member_lease_name(group, "")
        for obj in objects:
            record = LeaseRecord.from_object(obj)
            if record is None or record.group != group:
                continue
            if record.role == ROLE_MEMBER:
                identity = record.name[len(prefix):] if record.name.startswith(prefix) else None
                identity = identity or record.holder or record.name
                member_records[identity] = record
            elif record.role == ROLE_SHARD:
                if record.shard is None:
                    notes.append(f"Lease {record.name} has no readable shard label")
                elif record.shard in shard_records:
                    notes.append(f"two Leases claim shard {record.shard}: "
                                 f"{shard_records[record.shard].name}, {record.name}")
                else:
                    shard_records[record.shard] = record

        # As the replicas judge it: a member counts while its holder names it (a released or renamed
        # record does not), and the group's shard count is the oldest live member's declaration.
        # The replicas' own rule (shardlease.membership), with each record's renewTime standing in for
        # the moment a replica would have observed it (see the module docstring).
        membership = compute_membership(
            group, ((rec, rec.renew_time.timestamp() if rec.renew_time else float("-inf"))
                    for rec in member_records.values()), now.timestamp(), Timing(), seen_change_after=float("-inf"))
        live_records = [m.record for m in membership.live]
        group_count = membership.group_count
        if shards is None:
            shards = _shard_count(group_count, member_records.values(), shard_records, notes)
        members = tuple(
            MemberRow(identity, rec.declared_shards, rec in live_records, _age(rec, now),
                      eligible=rec in live_records and rec.declared_shards == shards)
            for identity, rec in sorted(member_records.items())
        )
        for m in members:
            if m.live and not m.eligible:
                notes.append(f"member {m.identity} declares {_text(m.declared_shards)} shards, the group "
                             f"uses {shards}: it takes no shards")
        extra = sorted(s for s in shard_records if s >= shards)
        if extra:
            notes.append(f"shard Leases beyond the shard count {shards}: {extra}")

        problems = _member_problems(member_records, live_records, now)
        ring = [m.identity for m in members if m.eligible]
        desired = assign(group, shards, ring, load_factor) if shards and ring else {}
        rows = []
        for shard in range(shards):
            rec = shard_records.get(shard)
            holder = rec.holder if rec is not None and rec.holder else None
            flags: list[str] = []
            if holder is None:
                flags.append(FLAG_UNOWNED)
            else:
                assert rec is not None
                if not _live(rec, now):
                    flags.append(FLAG_EXPIRED)
                if desired.get(shard) is not None and holder != desired[shard]:
                    flags.append(FLAG_MISPLACED)
            rows.append(ShardRow(
                shard=shard, holder=holder, desired=desired.get(shard),
                age=_age(rec, now) if rec is not None else None,
                transitions=rec.transitions if rec is not None else None, flags=tuple(flags),
            ))
        return cls(group, namespace, shards, members, tuple(rows), tuple(notes), tuple(problems))

    # ---------------------------------------------------------------- questions

    def flagged(self, flag: str) -> list[int]:
        return [row.shard for row in self.rows if flag in row.flags]

    def summary(self) -> str:
        owned = sum(1 for row in self.rows if row.holder)
        live = sum(1 for m in self.members if m.live)
        text = (
            f"{owned}/{self.shards} shards owned, {len(self.flagged(FLAG_UNOWNED))} unowned, "
            f"{len(self.flagged(FLAG_EXPIRED))} expired, {len(self.flagged(FLAG_MISPLACED))} misplaced; "
            f"{live}/{len(self.members)} members live"
        )
        healthy = self.shards > 0 and not any(row.flags for row in self.rows) and not self.problems
        return ("OK: " if healthy else "ATTENTION: ") + text

    # ---------------------------------------------------------------- output

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "namespace": self.namespace,
            "shards": self.shards,
            "members": [asdict(m) for m in self.members],
            "shard_table": [
                {"shard": r.shard, "holder": r.holder, "desired": r.desired, "age": r.age,
                 "transitions": r.transitions, "flags": list(r.flags)} for r in self.rows
            ],
            "summary": {
                "owned": sum(1 for row in self.rows if row.holder),
                "unowned": self.flagged(FLAG_UNOWNED),
                "expired": self.flagged(FLAG_EXPIRED),
                "misplaced": self.flagged(FLAG_MISPLACED),
                "live_members": sum(1 for m in self.members if m.live),
                "text": self.summary(),
            },
            "notes": list(self.notes),
            "problems": list(self.problems),
        }

    def render_text(self) -> str:
        lines = [f"group {self.group!r} in namespace {self.namespace!r}: {self.shards} shards"]
        lines.append("")
        lines.append(f"MEMBERS ({len(self.members)})")
        lines.extend(_table(
            ("IDENTITY", "SHARDS", "LIVE", "RENEWED"),
            [(m.identity, _text(m.declared_shards),
              ("yes" if m.eligible else "yes, other count") if m.live else "NO", _ago(m.age))
             for m in self.members],
        ) if self.members else ["  (none)"])
        lines.append("")
        lines.append("SHARDS")
        lines.extend(_table(
            ("SHARD", "HOLDER", "DESIRED", "RENEWED", "TRANSITIONS", "FLAGS"),
            [(str(r.shard), r.holder or "-", r.desired or "-", _ago(r.age), _text(r.transitions),
              ",".join(r.flags)) for r in self.rows],
        ) if self.rows else ["  (no shard count known: no member declares one and no shard Lease exists)"])
        lines.append("")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"PROBLEM: {problem}" for problem in self.problems)
        lines.append(self.summary())
        return "\n".join(lines)

    def stable_key(self) -> tuple[Any, ...]:
        """Everything shown except the ages, to redraw only when something meaningful changed."""
        return (self.shards, tuple((m.identity, m.declared_shards, m.live) for m in self.members),
                tuple((r.holder, r.desired, r.transitions, r.flags) for r in self.rows), self.notes,
                self.problems)


def _member_problems(members: Mapping[str, LeaseRecord], live: Iterable[LeaseRecord],
                     now: _dt.datetime) -> list[str]:
    """Problems the replicas wrote on their member Leases, worded with the fix.

    A refused duplicate re-marks the live member Lease once per lease duration while it keeps trying,
    so a mark older than three lease durations is history, not a present problem.
    """
    live_set = {id(rec) for rec in live}
    found: list[str] = []
    for identity, rec in sorted(members.items()):
        refused = rec.annotations.get(ANNOTATION_REFUSED, "")
        incarnation, _, stamp = refused.partition(" ")
        when = parse_microtime(stamp) if stamp else None
        duration = rec.lease_duration_seconds or 15
        if incarnation and when is not None and (now - when).total_seconds() <= 3 * duration:
            found.append(f"identity {identity}: a second process with this identity (incarnation {incarnation}) "
                         f"was refused and takes no shards; give every replica a unique --identity / POD_NAME")
        if id(rec) not in live_set:
            continue
        for item in filter(None, rec.annotations.get(ANNOTATION_PROBLEMS, "").split(";")):
            key, _, value = item.partition("=")
            if key == "crashing":
                found.append(f"member {identity}: handlers of shards {value} keep raising (see its logs and "
                             f"shardlease_handler_errors_total)")
            elif key == "stuck":
                found.append(f"member {identity}: handlers of shards {value} did not return within the drain "
                             f"timeout; their Leases stay held")
            elif key == "count-mismatch":
                configured, _, group_count = value.partition("/")
                found.append(f"member {identity}: configured for {configured} shards, the group uses "
                             f"{group_count}; it takes no shards until every replica runs one count")
            else:
                found.append(f"member {identity}: {item}")
    return found


def _shard_count(group_count: int | None, members: Iterable[LeaseRecord],
                 shard_records: Mapping[int, LeaseRecord], notes: list[str]) -> int:
    """The group's shard count: the oldest live member's declaration; without live members, what
    most members declare; without members, one past the highest shard Lease."""
    if group_count:
        return group_count
    declared = Counter(r.declared_shards for r in members if r.declared_shards)
    if declared:
        if len(declared) > 1:
            notes.append("members disagree on the shard count: "
                         + ", ".join(f"{n} declared by {c}" for n, c in sorted(declared.items())))
        # Most common; a tie goes to the larger count so that no shard is left off the table.
        return max(declared.items(), key=lambda item: (item[1], item[0]))[0]
    return max(shard_records) + 1 if shard_records else 0


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _ago(age: float | None) -> str:
    return "-" if age is None else f"{age:.1f}s ago"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
            for line in (header, *rows)]


# --------------------------------------------------------------------------------------------------
# Reading from the cluster
# --------------------------------------------------------------------------------------------------


def list_group_leases(api: ApiClient, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
    """List Leases by label selector as plain dicts, plus the list's resourceVersion.

    ``_preload_content=False`` skips the client's model deserialisation: we only need the JSON.
    """
    from kubernetes.client import CoordinationV1Api

    # With _preload_content=False the client returns the raw urllib3 response, not the V1LeaseList
    # its annotations promise.
    response: Any = CoordinationV1Api(api).list_namespaced_lease(
        namespace, label_selector=selector, _preload_content=False,
        _request_timeout=_REQUEST_TIMEOUT)
    body = json.loads(response.data)
    items = body.get("items") or []
    return [item for item in items if isinstance(item, dict)], str(
        (body.get("metadata") or {}).get("resourceVersion") or "")


def _connection_settings(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(kubeconfig, context)`` as ``shardlease run`` would pick them: the flag, else
    ``SHARDLEASE_KUBECONFIG`` / ``SHARDLEASE_CONTEXT``; ``None`` leaves the rest of the search
    (``$KUBECONFIG``, ``~/.kube/config``, in-cluster) to ``shardlease.kube``. An empty variable counts as
    unset, as it does for ``run``."""
    kubeconfig = args.kubeconfig or os.environ.get("SHARDLEASE_KUBECONFIG") or None
    context = args.context or os.environ.get("SHARDLEASE_CONTEXT") or None
    return kubeconfig, context


def _kubeconfig_tried(args: argparse.Namespace) -> str:
    kubeconfig, _ = _connection_settings(args)
    if kubeconfig:
        return kubeconfig
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = os.path.expanduser("~/.kube/config")
    if os.path.exists(default):
        return default
    return "in-cluster service account" if os.environ.get("KUBERNETES_SERVICE_HOST") else default


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show which replica holds which shard of a group",
        description="Show a group's members and shard owners, and flag unowned, expired or "
                    "misplaced shards. Liveness is judged by this machine's clock (display only).",
    )
    parser.add_argument("--group", required=True, help="the shard group")
    parser.add_argument("--namespace", default="default", help="namespace of the Leases (default: default)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $SHARDLEASE_KUBECONFIG, then "
                                             "$KUBECONFIG, ~/.kube/config, in-cluster, as for run)")
    parser.add_argument("--context", help="kubeconfig context to use (default: $SHARDLEASE_CONTEXT, "
                                          "else the kubeconfig's current context)")
    parser.add_argument("--watch", action="store_true", help="redraw whenever the Leases change (Ctrl-C exits)")
    parser.add_argument("--output", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("--load-factor", type=float, default=1.0,
                        help="the replicas' load factor, for the desired-holder column (default: 1.0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    tried = _kubeconfig_tried(args)
    kubeconfig, context = _connection_settings(args)
    try:
        from ..kube import load_api_client

        api = load_api_client(kubeconfig=kubeconfig, context=context, user_agent="shardlease-status")
    except Exception as exc:
        print(f"shardlease status: cannot load a Kubernetes configuration (tried {tried}"
              f"{', context ' + context if context else ''}): {exc}", file=sys.stderr)
        return 1
    server = getattr(api.configuration, "host", "?")
    selector = group_selector(args.group)

    def fail(exc: BaseException) -> int:
        if getattr(exc, "status", None):  # the server answered, but with an error (e.g. RBAC)
            problem = f"the Kubernetes API at {server} refused to list Leases in namespace {args.namespace!r}"
        else:
            problem = f"cannot reach the Kubernetes API at {server}"
        print(f"shardlease status: {problem} (kubeconfig: {tried}): {_reason(exc)}", file=sys.stderr)
        return 1

    try:
        if not args.watch:
            try:
                items, _ = list_group_leases(api, args.namespace, selector)
            except Exception as exc:
                return fail(exc)
            _show(_view(args, items), args.output, out, clear=False)
            return 0
        return _watch(api, args, selector, out, fail)
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            api.close()
        except Exception:
            pass


def _reason(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


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


def _watch(api: ApiClient, args: argparse.Namespace, selector: str, out: TextIO,
           fail: Callable[[BaseException], int]) -> int:
    """List, then watch from the list's resourceVersion; relist when the watch ends or expires.

    A background thread feeds events into a queue; the main thread applies them (a burst within 0.2 s
    at once) and redraws when what is shown changed -- including when time alone changed it (a Lease
    went past its expiry), which needs no request. The first list failing is fatal (exit 1); later
    failures are retried.
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
            events.put(("error", _reason(exc)))
            version = ""
            time.sleep(1.0)
