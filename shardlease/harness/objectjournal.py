"""A sharded ConfigMap controller that journals every write, a user who keeps changing the ConfigMaps,
and the per-object checks that read both journals back.

This is the chaos suite's workload (``ChaosConfig(workload="objects")``): replicas run
``shardlease run shardlease.harness.objectjournal:handle ...`` and reconcile the ConfigMaps of their
shards through ``shard.objects("v1", "configmaps")``, as ``examples/configmap_controller.py`` does,
while a :class:`UserWriter` in the test process bumps ``data.version`` of random ConfigMaps at a steady
rate. Reconciling a ConfigMap means stamping three annotations with one conditional PUT (the
``resourceVersion`` read):

    chaos.shardlease.io/version         the user's ``data.version`` this write saw
    chaos.shardlease.io/reconciled-by   the writer's identity
    chaos.shardlease.io/fence           the shard's fence, ``<generation>/<token>``

A write goes out only if ``shard.valid()`` right before it and the fence already on the object is not
newer than ours (a newer holder was there: we are stale). Failed writes (injected 5xx/429, resets,
timeouts) are retried from a fresh read while the shard stays valid, so nothing is forgotten; a 409
is left to the stream, which brings the newer version.

Journal (JSON lines next to the journaling handler's, in ``$SHARDLEASE_JOURNAL_DIR``): the handler's
``handler_start`` / ``handler_stop`` lines in :mod:`shardlease.harness.journal`'s format (so the
recovery and idle-holder checks read them unchanged), and per write a ``write_begin`` line (stamped
*before* the ``valid()`` check, written once it passed) and a ``write_end`` line with the outcome and
the ``resourceVersion`` the server gave the accepted write. The user's changes go to
``user.<pid>.jsonl`` (``change`` lines) with the run's markers (``marker`` lines).

The checks, each a pure function of the journal (plus the run's timings), per object (uid):

1. :func:`find_write_overlaps` / :func:`classify_write_overlaps` -- no two processes inside a write
   for one object at once. Two excuses only, both needing the stale write's fence to be *lower*:
   *in flight*: the newer holder's tenure began at least ``lease - renew_deadline`` after the stale
   write was decided (the runtime's margin: docs/guarantees.md, guarantee 1, does not cover a request
   that is still travelling, or a process frozen mid-write, after that margin; the fence and the
   conditional write do); *operator*: an operator deleted or overwrote the shard's Lease between the
   two (the runtime cannot keep a holder from learning of that late), and the stale write was decided
   within a renew deadline of it.
2. :func:`check_write_fences` -- along the writes the server accepted (by the ``resourceVersion`` it
   gave them), the fence never goes down, and an equal fence comes only from the same process.
3. :func:`check_placement` -- every write was for an object of the writer's shard under the writer's
   count (``shard_for_object(obj, shard.count) == shard.id``).
4. :func:`check_reconciled` -- after the faults, every object's latest user change was written by the
   process running the handler of its shard under the final count, with that handler's fence, within
   the bound.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# At import, which ``shardlease run`` does at start-up: importing the client's API classes takes
# seconds on a busy machine, and inside a handler that time would delay its return from a stop.
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from shardlease.core.fencing import ANNOTATION_FENCE as FENCE_ANNOTATION
from shardlease.core.fencing import ANNOTATION_FENCE_WRITE, LABEL_FENCED_GROUP, LABEL_FENCED_SHARD
from shardlease.core.objects import fnv1a_64, shard_for_hash
from shardlease.harness.journal import ENV_DIR, Entry

__all__ = [
    "ANNOTATION_BY",
    "ANNOTATION_FENCE",
    "ANNOTATION_VERSION",
    "ENV_DRAIN",
    "ENV_KUBECONFIG",
    "ENV_NAMESPACE",
    "ObjectJournal",
    "ObjectWrite",
    "UserChange",
    "UserWriter",
    "WriteOverlap",
    "check_placement",
    "check_reconciled",
    "check_write_fences",
    "classify_write_overlaps",
    "find_write_overlaps",
    "handle",
    "load_object_journal",
    "object_shard",
    "reconcile_delays",
    "summarize",
    "write_marker",
]

log = logging.getLogger("shardlease.harness.objectjournal")

ENV_NAMESPACE = "SHARDLEASE_CHAOS_NAMESPACE"
#: The kubeconfig of the controller's own writes: the replica's (through the fault relay on the real
#: server), not the observer's.
ENV_KUBECONFIG = "SHARDLEASE_CHAOS_KUBECONFIG"
#: Seconds of clean-up after the runtime stops the handler (see ``chaos.handlers.draining_handle``).
ENV_DRAIN = "SHARDLEASE_CHAOS_DRAIN"
#: Seconds of work between a write's ``valid()`` check and the request (default 0): the window in
#: which a SIGSTOP leaves a replica with a write to send after its shard has moved.
ENV_WRITE_DELAY = "SHARDLEASE_CHAOS_WRITE_DELAY"
#: ``1``: write with an unconditional patch of the annotations instead of the conditional PUT, so no
#: resourceVersion refuses a stale write (a 409 would stop most of them first): only fencing can.
ENV_PATCH = "SHARDLEASE_CHAOS_PATCH"
ANNOTATION_VERSION = "chaos.shardlease.io/version"
ANNOTATION_BY = "chaos.shardlease.io/reconciled-by"
ANNOTATION_FENCE = "chaos.shardlease.io/fence"
DATA_VERSION = "version"
#: (connect, read) timeout of a write or read: a black-holed request must not keep a handler from
#: returning for long (the runtime keeps the Lease until it has).
REQUEST_TIMEOUT = (1.0, 2.0)
#: A write whose end line never came (SIGKILL) lasted at most this long: the cautious choice.
MAX_WRITE_SECONDS = sum(REQUEST_TIMEOUT)


#: What ``Shard.stamp`` sets, copied into a patch.
STAMP_ANNOTATIONS = (FENCE_ANNOTATION, ANNOTATION_FENCE_WRITE)
STAMP_LABELS = (LABEL_FENCED_GROUP, LABEL_FENCED_SHARD)


def object_shard(uid: str, count: int) -> int:
    """The shard of ``count`` that owns the object with ``uid`` (what ``shard_for_object`` says)."""
    return shard_for_hash(fnv1a_64(uid), count)


def _fence_text(fence: tuple[int, int]) -> str:
    return f"{fence[0]}/{fence[1]}"


def _parse_fence(text: object) -> tuple[int, int] | None:
    if not isinstance(text, str) or "/" not in text:
        return None
    generation, _, token = text.partition("/")
    if not (generation.isdigit() and token.isdigit()):
        return None
    return int(generation), int(token)


# --------------------------------------------------------------------------------------------------
# The controller (runs in the replica processes)
# --------------------------------------------------------------------------------------------------


class _Controller:
    """What a replica's shards share: one API client for the writes (identified as the replica, so a
    dev-server partition of the replica cuts its writes too) and the journal file."""

    def __init__(self, shard: Any, writer: Any) -> None:
        from shardlease.client.connect import load_api_client

        self.identity = str(getattr(shard, "identity", "") or os.environ.get("SHARDLEASE_IDENTITY", ""))
        self.writer = writer
        self.namespace = os.environ.get(ENV_NAMESPACE) or os.environ.get("SHARDLEASE_NAMESPACE") or "default"
        kubeconfig = os.environ.get(ENV_KUBECONFIG) or os.environ.get("KUBECONFIG") or None
        # Plain dicts in and out (``_preload_content=False``): the client's models cost more than the request.
        self.core: Any = CoreV1Api(load_api_client(kubeconfig=kubeconfig, client_id=self.identity, pool_size=32))
        self.ops = itertools.count()
        self.write_delay = float(os.environ.get(ENV_WRITE_DELAY, "0") or 0)
        self.patch = os.environ.get(ENV_PATCH) == "1"

    def read(self, name: str) -> dict[str, Any] | None:
        """The object as the server has it now (``None``: deleted)."""
        try:
            response = self.core.read_namespaced_config_map(name, self.namespace, _preload_content=False,
                                                            _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: dict[str, Any] = json.loads(response.data)
        return result

    def reconcile(self, shard: Any, obj: dict[str, Any]) -> None:
        """Stamp ``obj`` for this holder; on a failure that a retry can fix, read it again and retry
        while the shard stays valid (a stream brings no event for a write that failed)."""
        delay = 0.1
        name = obj["metadata"]["name"]
        current: dict[str, Any] | None = obj
        while current is not None and not shard.stopped.is_set():
            # A 409 is left to the stream: it brings the version that beat us. Not valid (a renewal
            # late): the runtime stops the shard soon, or the next renewal makes it valid again.
            outcome = self.write(shard, current)
            if outcome in ("written", "done", "behind", "conflict", "gone", "fenced"):
                return
            if shard.stopped.wait(delay + random.uniform(0.0, delay)):
                return
            delay = min(1.0, delay * 2)
            try:
                current = self.read(name)
            except Exception as exc:  # injected errors, resets, timeouts: try again after the back-off
                log.info("re-reading %s failed: %s", name, exc)

    def write(self, shard: Any, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        annotations = dict(meta.get("annotations") or {})
        version = str((obj.get("data") or {}).get(DATA_VERSION, "0"))
        fence = (int(shard.generation), int(shard.token))
        if (annotations.get(ANNOTATION_BY) == self.identity and annotations.get(ANNOTATION_VERSION) == version
                and annotations.get(ANNOTATION_FENCE) == _fence_text(fence)):
            return "done"  # typically the event of our own write
        record = {"uid": meta["uid"], "key": f"{meta.get('namespace', '')}/{meta['name']}", "shard": shard.id,
                  "count": shard.count, "generation": fence[0], "token": fence[1],
                  "version": int(version) if version.isdigit() else 0}
        stored = _parse_fence(annotations.get(ANNOTATION_FENCE))
        if stored is not None and stored > fence:
            # A newer holder stamped it: we are behind and must not overwrite (fencing).
            self.writer.write({"event": "behind", "t": time.monotonic(), "stored": list(stored), **record})
            return "behind"
        annotations.update({ANNOTATION_BY: self.identity, ANNOTATION_VERSION: version,
                            ANNOTATION_FENCE: _fence_text(fence)})
        # Stamped as `shard.stamp` does: with `shardlease fencing` installed the API server checks it.
        body = shard.stamp({**obj, "metadata": {**meta, "annotations": annotations}})
        op = next(self.ops)
        started = time.monotonic()  # before valid(): from here on we act as the holder
        if not shard.valid():
            return "invalid"
        self.writer.write({"event": "write_begin", "op": op, "t": started, **record})
        outcome, rv = "error", None
        if self.write_delay > 0:
            time.sleep(self.write_delay)
        try:
            if self.patch:
                stamp = {key: body["metadata"]["annotations"][key] for key in
                         (ANNOTATION_BY, ANNOTATION_VERSION, ANNOTATION_FENCE, *STAMP_ANNOTATIONS)}
                response = self.core.patch_namespaced_config_map(
                    meta["name"], meta["namespace"],
                    {"metadata": {"annotations": stamp, "labels": {k: body["metadata"]["labels"][k]
                                                                   for k in STAMP_LABELS}}},
                    _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            else:
                response = self.core.replace_namespaced_config_map(
                    meta["name"], meta["namespace"], body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            written = json.loads(response.data)
            rv = int(written["metadata"]["resourceVersion"])
            outcome = "written"
        except ApiException as exc:
            outcome = {409: "conflict", 404: "gone"}.get(exc.status or 0, f"error {exc.status}")
            if exc.status == 403 and "stale shard fence" in str(exc.body):
                outcome = "fenced"  # refused by the API server's fencing: a newer holder has the shard
        except Exception as exc:  # resets, timeouts: the write may or may not have happened
            outcome = f"unknown {type(exc).__name__}"
        finally:
            self.writer.write({"event": "write_end", "op": op, "t": time.monotonic(), "outcome": outcome,
                               "rv": rv, "uid": record["uid"]})
        return outcome


_controller: _Controller | None = None
_controller_lock = threading.Lock()


def handle(shard: Any) -> None:
    """Reconcile the ConfigMaps of ``shard`` until the runtime stops it, journaling every write; then
    ``$SHARDLEASE_CHAOS_DRAIN`` seconds of clean-up (no write during it)."""
    global _controller
    from shardlease.harness.journal import _get_writer

    if not os.environ.get(ENV_DIR):
        raise RuntimeError(f"shardlease.harness.objectjournal needs {ENV_DIR} to name a directory")
    writer = _get_writer(shard)
    token = int(shard.token)
    # First: the handler runs from here on, whatever setting up its API client takes (seconds for the
    # first shard of a new process on a busy machine), and the idle-holder check reads this line.
    writer.write({"event": "handler_start", "shard": shard.id, "token": token, "t": time.monotonic(),
                  "count": shard.count, "generation": shard.generation})
    reason = "stopped"
    try:
        with _controller_lock:
            if _controller is None:
                _controller = _Controller(shard, writer)
            ctl = _controller
        for event in shard.objects("v1", "configmaps", namespace=ctl.namespace):
            if event.type in ("ADDED", "MODIFIED"):
                ctl.reconcile(shard, event.object)
    except BaseException as exc:
        reason = f"error: {type(exc).__name__}: {exc}"
        raise
    finally:
        writer.write({"event": "handler_stop", "shard": shard.id, "token": token, "t": time.monotonic(),
                      "units": 0, "reason": reason})
        drain = float(os.environ.get(ENV_DRAIN, "0") or 0)
        if drain > 0:
            time.sleep(drain)


# --------------------------------------------------------------------------------------------------
# The user (runs in the test process)
# --------------------------------------------------------------------------------------------------


class UserWriter:
    """A user who keeps changing ConfigMaps: ``data.version`` of a random one bumped ``rate`` times a
    second (a read and a conditional PUT, retried on 409 and on errors), each accepted change journaled
    as a ``change`` line. ``core`` is a ``CoreV1Api`` of the observer (never partitioned)."""

    def __init__(self, core: Any, namespace: str, journal_dir: Path, *, seed: int, rate: float) -> None:
        self.core = core
        self.namespace = namespace
        self.rate = rate
        self.rng = random.Random(seed)
        self.names: list[str] = []
        self.versions: dict[str, int] = {}
        self.uids: dict[str, str] = {}
        journal_dir.mkdir(parents=True, exist_ok=True)
        self.path = journal_dir / f"user.{os.getpid()}.jsonl"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.changes = 0
        self.failures = 0

    def _journal(self, record: dict[str, Any]) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def marker(self, name: str, **extra: Any) -> float:
        now = time.monotonic()
        self._journal({"event": "marker", "name": name, "t": now, **extra})
        return now

    def create(self, count: int, prefix: str = "chaos-cm-") -> None:
        for i in range(count):
            name = f"{prefix}{i:03d}"
            response = self.core.create_namespaced_config_map(
                self.namespace, {"metadata": {"name": name}, "data": {DATA_VERSION: "0"}}, _preload_content=False)
            created = json.loads(response.data)
            self.names.append(name)
            self.versions[name] = 0
            self.uids[name] = created["metadata"]["uid"]
            self._journal({"event": "change", "uid": self.uids[name], "key": f"{self.namespace}/{name}",
                           "version": 0, "rv": int(created["metadata"]["resourceVersion"]), "t": time.monotonic()})

    def change(self, name: str, deadline: float = float("inf")) -> bool:
        """Bump one ConfigMap's version; retried until accepted or ``deadline`` (monotonic)."""
        delay = 0.05
        while not self._stop.is_set() or deadline < float("inf"):
            try:
                response = self.core.read_namespaced_config_map(name, self.namespace, _preload_content=False,
                                                                _request_timeout=REQUEST_TIMEOUT)
                obj = json.loads(response.data)
                version = self.versions[name] + 1
                obj.setdefault("data", {})[DATA_VERSION] = str(version)
                response = self.core.replace_namespaced_config_map(name, self.namespace, obj, _preload_content=False,
                                                                   _request_timeout=REQUEST_TIMEOUT)
                rv = int(json.loads(response.data)["metadata"]["resourceVersion"])
            except ApiException as exc:
                if exc.status != 409:
                    self.failures += 1
            except Exception:  # injected errors and latency reach the user too
                self.failures += 1
            else:
                self.versions[name] = version
                self.changes += 1
                self._journal({"event": "change", "uid": self.uids[name], "key": f"{self.namespace}/{name}",
                               "version": version, "rv": rv, "t": time.monotonic()})
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(0.5, delay * 2)
        return False

    def start(self) -> UserWriter:
        self._thread = threading.Thread(target=self._loop, name="chaos-user-writer", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.change(self.rng.choice(self.names))
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def change_all(self, timeout: float) -> None:
        """One more change of every ConfigMap (after the faults: the change every object must reach)."""
        deadline = time.monotonic() + timeout
        for name in self.names:
            if not self.change(name, deadline):
                raise RuntimeError(f"the user could not change {name} within {timeout:g} s")


def write_marker(journal_dir: Path, name: str, t: float, **extra: Any) -> None:
    """A run marker (e.g. when the faults were cleared) in the user journal, for journal-only checks."""
    with open(journal_dir / f"user.{os.getpid()}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": "marker", "name": name, "t": t, **extra}) + "\n")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectWrite:
    """One write attempt: decided at ``start`` (before the ``valid()`` check), answered at ``end``.
    ``complete`` False: its process died before the answer; ``end`` is then ``start`` plus the longest a
    request may take. ``rv`` is the resourceVersion the server gave an accepted (``written``) write."""

    uid: str
    key: str
    identity: str
    pid: int
    shard: int
    count: int
    generation: int
    token: int
    version: int
    start: float
    end: float
    outcome: str | None
    rv: int | None
    complete: bool = True
    source: str = ""

    @property
    def fence(self) -> tuple[int, int]:
        return (self.generation, self.token)

    @property
    def accepted(self) -> bool:
        return self.outcome == "written"

    def describe(self) -> str:
        flags = "" if self.complete else " (no end line: process died mid-write)"
        return (f"write of {self.key} (v{self.version}) as shard {self.shard}/{self.count} by {self.identity} "
                f"(pid {self.pid}, fence {_fence_text(self.fence)}) [{self.start:.3f}, {self.end:.3f}] "
                f"-> {self.outcome}{f' rv {self.rv}' if self.rv is not None else ''}{flags} <{self.source}>")


@dataclass(frozen=True, slots=True)
class UserChange:
    uid: str
    key: str
    version: int
    t: float
    rv: int


@dataclass
class ObjectJournal:
    writes: list[ObjectWrite] = field(default_factory=list)
    changes: list[UserChange] = field(default_factory=list)
    markers: dict[str, float] = field(default_factory=dict)
    #: The whole marker lines (their extra fields, e.g. the final check's ``since`` / ``bound`` / ``at``).
    marker_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    behind: list[dict[str, Any]] = field(default_factory=list)

    def last_changes(self) -> dict[str, UserChange]:
        latest: dict[str, UserChange] = {}
        for c in self.changes:
            if c.uid not in latest or c.version > latest[c.uid].version:
                latest[c.uid] = c
        return latest


def load_object_journal(directory: str | os.PathLike[str]) -> ObjectJournal:
    """Every write, user change and marker under ``directory`` (a torn last line is skipped)."""
    journal = ObjectJournal()
    for path in sorted(Path(directory).glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        begun: dict[int, tuple[int, dict[str, Any]]] = {}
        for number, line in enumerate(lines, start=1):
            if '"write_' not in line and '"change"' not in line and '"marker"' not in line \
                    and '"behind"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # torn by SIGKILL (only ever the last line)
            event = rec.get("event")
            if event == "write_begin":
                begun[int(rec["op"])] = (number, rec)
            elif event == "write_end":
                opened = begun.pop(int(rec["op"]), None)
                if opened is not None:
                    journal.writes.append(_write(path, opened[0], opened[1], rec))
            elif event == "change":
                journal.changes.append(UserChange(str(rec["uid"]), str(rec["key"]), int(rec["version"]),
                                                  float(rec["t"]), int(rec["rv"])))
            elif event == "marker":
                journal.markers[str(rec["name"])] = float(rec["t"])
                journal.marker_records[str(rec["name"])] = rec
            elif event == "behind":
                journal.behind.append(rec)
        for number, rec in begun.values():
            journal.writes.append(_write(path, number, rec, None))
    journal.writes.sort(key=lambda w: (w.start, w.end))
    journal.changes.sort(key=lambda c: c.t)
    return journal


def _write(path: Path, number: int, begin: Mapping[str, Any], end: Mapping[str, Any] | None) -> ObjectWrite:
    start = float(begin["t"])
    return ObjectWrite(
        uid=str(begin["uid"]), key=str(begin["key"]), identity=str(begin.get("identity", "?")),
        pid=int(begin.get("pid", 0)), shard=int(begin["shard"]), count=int(begin["count"]),
        generation=int(begin["generation"]), token=int(begin["token"]), version=int(begin["version"]),
        start=start, end=float(end["t"]) if end is not None else start + MAX_WRITE_SECONDS,
        outcome=str(end["outcome"]) if end is not None else None,
        rv=int(end["rv"]) if end is not None and end.get("rv") is not None else None,
        complete=end is not None, source=f"{path.name}:{number}")


# --------------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteOverlap:
    """Two processes inside a write for one object at the same time; ``excuse`` says why it is allowed
    (``in flight`` / ``operator``), empty for a violation."""

    first: ObjectWrite
    second: ObjectWrite
    excuse: str = ""
    detail: str = ""

    def describe(self) -> str:
        together = min(self.first.end, self.second.end) - max(self.first.start, self.second.start)
        head = f"{self.first.key}: {together * 1000:.1f} ms inside writes at once"
        if self.excuse:
            head += f" (excused: {self.excuse}"
            head += f"; {self.detail})" if self.detail else ")"
        elif self.detail:
            head += f" ({self.detail})"
        return f"{head}\n  {self.first.describe()}\n  {self.second.describe()}"


def find_write_overlaps(writes: Iterable[ObjectWrite]) -> list[tuple[ObjectWrite, ObjectWrite]]:
    """Pairs of writes for one object (uid) by different processes whose [start, end] intersect."""
    by_uid: dict[str, list[ObjectWrite]] = defaultdict(list)
    for w in writes:
        by_uid[w.uid].append(w)
    pairs: list[tuple[ObjectWrite, ObjectWrite]] = []
    for items in by_uid.values():
        items.sort(key=lambda w: w.start)
        running: list[ObjectWrite] = []
        for w in items:
            running = [r for r in running if r.end > w.start]
            pairs.extend((r, w) for r in running if (r.identity, r.pid) != (w.identity, w.pid))
            running.append(w)
    return pairs


def _tenure_start(w: ObjectWrite, handler_starts: Sequence[Entry]) -> float:
    """When the handler whose write ``w`` is began (its ``handler_start``), else the write's start."""
    best = w.start
    for e in handler_starts:
        if e.start > w.start:
            break
        if (e.identity, e.pid, e.shard, e.generation, e.token) == (w.identity, w.pid, w.shard, w.generation,
                                                                     w.token):
            best = e.start
    return best


def classify_write_overlaps(pairs: Iterable[tuple[ObjectWrite, ObjectWrite]], *, margin: float,
                            renew_deadline: float, handler_starts: Sequence[Entry] = (),
                            operator_acts: Mapping[int, Sequence[tuple[float, float]]] | None = None,
                            ) -> list[WriteOverlap]:
    """Judge each overlapping pair (see the module docstring). ``margin`` is ``lease - renew_deadline``;
    ``handler_starts`` (the journal's ``handler_start`` entries, by time) give when the newer holder's
    tenure began; ``operator_acts`` maps a shard id to the (sent, answered) times of an operator's delete
    or overwrite of its Lease. Returns every pair, excused ones with their reason."""
    starts = sorted((e for e in handler_starts if e.kind == "handler_start"), key=lambda e: e.start)
    acts = operator_acts or {}
    judged: list[WriteOverlap] = []
    for a, b in pairs:
        if a.fence == b.fence:
            judged.append(WriteOverlap(a, b, "", "both under one fence"))
            continue
        stale, newer = (a, b) if a.fence < b.fence else (b, a)
        tenure = _tenure_start(newer, starts)
        if stale.start <= tenure and tenure - stale.start >= margin:
            judged.append(WriteOverlap(stale, newer, "in flight",
                                       f"the newer tenure began {tenure - stale.start:.3f} s after the stale "
                                       f"write was decided (margin {margin:g} s)"))
            continue
        # The act happened between its request and its answer; the stale holder stays valid at most a
        # renew deadline after it, and the newer tenure must have begun after it.
        act = next(((sent, answered) for sent, answered in acts.get(stale.shard, ())
                    if stale.start <= answered + renew_deadline and sent <= tenure), None)
        if act is not None:
            judged.append(WriteOverlap(stale, newer, "operator",
                                       f"the shard's Lease was deleted or overwritten at {act[0]:.3f}..{act[1]:.3f}"))
            continue
        why = ("the lower fence began after the higher one" if stale.start > tenure else
               f"the newer tenure began only {tenure - stale.start:.3f} s after the stale write was decided "
               f"(margin {margin:g} s)")
        judged.append(WriteOverlap(stale, newer, "", why))
    return judged


def check_write_fences(writes: Iterable[ObjectWrite]) -> list[str]:
    """Along each object's accepted writes, in the order the server accepted them (resourceVersion),
    the fence never goes down and an equal fence comes only from the same process."""
    by_uid: dict[str, list[ObjectWrite]] = defaultdict(list)
    for w in writes:
        if w.accepted and w.rv is not None:
            by_uid[w.uid].append(w)
    problems: list[str] = []
    for items in by_uid.values():
        items.sort(key=lambda w: w.rv or 0)
        top: ObjectWrite | None = None
        for w in items:
            if top is not None:
                if w.fence < top.fence:
                    problems.append(f"{w.key}: fence went backwards over accepted writes: "
                                    f"{_fence_text(w.fence)} after {_fence_text(top.fence)}\n"
                                    f"  earlier: {top.describe()}\n  later:   {w.describe()}")
                elif w.fence == top.fence and (w.identity, w.pid) != (top.identity, top.pid):
                    problems.append(f"{w.key}: fence {_fence_text(w.fence)} used by two processes\n"
                                    f"  earlier: {top.describe()}\n  later:   {w.describe()}")
            if top is None or w.fence >= top.fence:
                top = w
    return problems


def check_placement(writes: Iterable[ObjectWrite]) -> list[str]:
    """Writes for an object that the writer's shard does not own under the writer's count."""
    return [f"{w.key}: written as shard {w.shard}/{w.count}, but it belongs to shard "
            f"{object_shard(w.uid, w.count)}/{w.count}\n  {w.describe()}"
            for w in writes if object_shard(w.uid, w.count) != w.shard]


def _running_at(handler_entries: Iterable[Entry], at: float) -> dict[int, list[Entry]]:
    """Per shard, the ``handler_start`` entries whose handler was running at ``at``."""
    running: dict[tuple[str, int, int], Entry] = {}
    for e in sorted(handler_entries, key=lambda e: e.start):
        if e.start > at:
            break
        key = (e.identity, e.pid, e.shard)
        if e.kind == "handler_start":
            running[key] = e
        elif e.kind == "handler_stop":
            running.pop(key, None)
    result: dict[int, list[Entry]] = defaultdict(list)
    for e in running.values():
        result[e.shard].append(e)
    return dict(result)


def check_reconciled(journal: ObjectJournal, handler_entries: Sequence[Entry], *, since: float, bound: float,
                     at: float, live_pids: Iterable[int] | None = None) -> tuple[list[str], dict[str, float]]:
    """After the faults: each object's latest user change written by the holder of its shard under the
    final count -- the process whose handler of the newest generation ran on that shard at ``at`` --
    with that handler's fence, no later than ``since + bound``. Returns (problems, per object the
    seconds from ``since`` until it was reconciled). ``live_pids``: processes still running at ``at``
    (a SIGKILLed process never journals its ``handler_stop``)."""
    alive = set(live_pids) if live_pids is not None else None
    running = {s: [e for e in es if alive is None or e.pid in alive]
               for s, es in _running_at(handler_entries, at).items()}
    generations = [e.generation for es in running.values() for e in es]
    problems: list[str] = []
    times: dict[str, float] = {}
    if not generations:
        return ["no handler was running at the end: nothing can have reconciled the objects"], times
    final = max(generations)
    counts = {e.count for es in running.values() for e in es if e.generation == final}
    if len(counts) != 1 or None in counts:
        return [f"handlers of generation {final} disagree on the count: {sorted(map(str, counts))}"], times
    count = next(iter(c for c in counts if c is not None))
    by_uid: dict[str, list[ObjectWrite]] = defaultdict(list)
    for w in journal.writes:
        if w.accepted:
            by_uid[w.uid].append(w)
    for uid, change in sorted(journal.last_changes().items(), key=lambda kv: kv[1].key):
        shard = object_shard(uid, count)
        holders = [e for e in running.get(shard, []) if e.generation == final]
        if len(holders) != 1:
            problems.append(f"{change.key}: shard {shard}/{count} has {len(holders)} handlers of generation "
                            f"{final} running at the end: {[e.describe() for e in holders]}")
            continue
        holder = holders[0]
        fence = (holder.generation, int(holder.token))
        done = [w for w in by_uid.get(uid, []) if (w.identity, w.pid, w.shard, w.fence) ==
                (holder.identity, holder.pid, shard, fence) and w.version >= change.version]
        if not done:
            last = sorted(by_uid.get(uid, []), key=lambda w: w.rv or 0)[-3:]
            behind = [b for b in journal.behind if b.get("uid") == uid][-2:]
            problems.append(
                f"{change.key}: its latest change (v{change.version} at {change.t:.3f}) was never written by "
                f"the holder of shard {shard}/{count}, {holder.identity} (pid {holder.pid}, fence "
                f"{_fence_text(fence)})\n  last accepted writes: "
                + ("; ".join(w.describe() for w in last) or "none")
                + ("\n  the holder found a newer fence on it: " + json.dumps(behind) if behind else ""))
            continue
        first = min(done, key=lambda w: w.end)
        times[change.key] = first.end - since
        if first.end - since > bound:
            problems.append(f"{change.key}: reconciled by its final holder {first.end - since:.2f} s after the "
                            f"faults stopped; bound {bound:.2f} s\n  {first.describe()}")
    return problems, times


def reconcile_delays(journal: ObjectJournal) -> list[float]:
    """For every user change, seconds until some accepted write had seen it (or a later one)."""
    by_uid: dict[str, list[ObjectWrite]] = defaultdict(list)
    for w in journal.writes:
        if w.accepted:
            by_uid[w.uid].append(w)
    for items in by_uid.values():
        items.sort(key=lambda w: w.end)
    delays: list[float] = []
    for c in journal.changes:
        if c.version == 0:
            continue
        hit = next((w for w in by_uid.get(c.uid, []) if w.version >= c.version and w.end >= c.t), None)
        if hit is not None:
            delays.append(hit.end - c.t)
    return delays


def summarize(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"n": len(ordered), "median_s": round(ordered[len(ordered) // 2], 3),
            "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
            "max_s": round(ordered[-1], 3)}

