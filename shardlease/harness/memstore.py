"""``MemoryLeaseStore``: the Leases of one namespace in memory, with kube-apiserver's semantics.

Why: the manager's reactor is tested as a deterministic simulation (fake clock, no sleeping), and the
cases that matter most for leases are the ones a real server produces only by accident: a conflict
at exactly the wrong moment, a write that committed although the client saw a timeout, a watch whose
history was compacted. This store produces them on demand, in the same order every run, and behaves
like the dev-server (and so like kube-apiserver) otherwise; ``tests/unit/test_memstore_vs_devserver.py``
runs one script against both and compares the outcomes.

What it does like the server:

- one global resourceVersion counter; every committed write takes the next value;
- ``create``: ``AlreadyExists`` if the name is taken; 500 if the body carries a resourceVersion;
- ``replace``: conditional on ``metadata.resourceVersion``: stale -> ``Conflict``, missing -> 422
  ``Invalid``; a Lease that does not exist is created (Leases allow create-on-update); a replace that
  changes nothing commits nothing (same resourceVersion, no event); a different ``metadata.uid`` ->
  ``Conflict``; a name that differs from the URL's -> 400;
- ``get`` of a missing Lease -> ``None``; ``delete`` -> ``NotFound`` if absent, ``Conflict`` if the
  ``resource_version`` precondition does not match; the DELETED event carries a new resourceVersion;
- ``list`` with a label selector, items in name order without ``kind``/``apiVersion``; the list's
  resourceVersion is the current counter;
- ``watch`` from a resourceVersion: ADDED / MODIFIED / DELETED, a Lease moving in or out of the
  selector as ADDED / DELETED; from ``""`` or ``"0"`` the current Leases as ADDED, then the
  ``k8s.io/initial-events-end`` BOOKMARK; ``Expired`` (410) when the version is older than the kept
  history (``history`` events, like the dev-server's bounded log; ``compact()`` forgets it all).

What it does not do: validation of names, labels and the Lease spec (only a missing name is refused),
``managedFields``, periodic watch bookmarks, pagination, field selectors, ``generateName``, dry-run,
MicroTime normalisation (times are stored as sent). Label selectors support ``k=v``, ``k==v``,
``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k``, joined by commas. Timeouts are
accepted and ignored: nothing here does I/O.

Determinism: no threads and no sleeping. A simulation reads events with ``drain_events(since_rv)`` or
``pending_events()``; only the ``watch`` generator blocks (on a condition variable, woken by writes
from other threads or by ``close_watch``), for the threaded shell. Objects go in and out as deep
copies, so no caller can change stored state. uids and ``creationTimestamp`` come from counters and
an injectable wall clock, so two runs of one script produce equal objects.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from shardlease.errors import (
    ApiError,
    Expired,
    InvalidArgument,
    RequestTimeout,
    api_error,
)

__all__ = ["MemoryLeaseStore", "Operation"]

Operation = Literal["create", "replace", "get", "delete", "list", "watch"]
_OPERATIONS: tuple[str, ...] = ("create", "replace", "get", "delete", "list", "watch")
_WRITES: tuple[str, ...] = ("create", "replace", "delete")
_QUALIFIED = "leases.coordination.k8s.io"
_STALE = "the object has been modified; please apply your changes to the latest version and try again"
#: Metadata the server keeps from a request body, in kube's output order; everything else is dropped.
_KEPT_META = ("labels", "annotations", "ownerReferences", "finalizers")
_INITIAL_END = {"k8s.io/initial-events-end": "true"}


# ---------------------------------------------------------------------------------------------------
# label selectors


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        value = labels.get(self.key)
        if self.op == "in":
            return value is not None and value in self.values
        return value is None or value not in self.values


_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^()]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on the commas that separate requirements (not the ones inside ``in (a,b)``)."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def parse_selector(selector: str) -> tuple[_Requirement, ...]:
    """Parse a label selector; an unsupported or malformed one raises ``Invalid`` (400) as the server does."""
    if not selector.strip():
        return ()
    requirements: list[_Requirement] = []
    for part in _split_requirements(selector):
        eq = _EQ_RE.match(part)
        if eq is not None:
            key, op, value = eq.groups()
            requirements.append(_Requirement(key, "notin" if op == "!=" else "in", frozenset((value,))))
            continue
        match = _SET_RE.match(part)
        if match is None or (match.group(1) and match.group(3)):
            raise api_error(400, "BadRequest", f"unable to parse requirement: {part.strip()!r} in label selector "
                            f"{selector!r}; supported: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k")
        negate, key, op, values = match.groups()
        if op:
            items = frozenset(v.strip() for v in values.split(",") if v.strip())
            requirements.append(_Requirement(key, op, items))
        else:
            requirements.append(_Requirement(key, "!" if negate else "exists", frozenset()))
    return tuple(requirements)


def _matches(requirements: tuple[_Requirement, ...], obj: Mapping[str, Any] | None) -> bool:
    if obj is None:
        return False
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


# ---------------------------------------------------------------------------------------------------
# the store


@dataclass(slots=True)
class _Logged:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the object before a MODIFIED, for selector moves


@dataclass(slots=True)
class _Fault:
    op: str
    name: str | None
    error: ApiError
    remaining: int
    commit: bool


#: Lease objects or watch events (named so that ``MemoryLeaseStore.list`` does not shadow the type).
_Objects = list[dict[str, Any]]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class MemoryLeaseStore:
    """An in-memory :class:`shardlease.client.LeaseStore` for Leases of ``namespace``.

    ``history`` is how many events the watch history keeps (older resourceVersions get ``Expired``);
    ``wall`` supplies ``creationTimestamp`` (pass a fixed clock for byte-equal runs).
    """

    def __init__(self, namespace: str = "default", *, history: int = 1000,
                 wall: Callable[[], datetime] = _utc_now) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise InvalidArgument(f"namespace must be a non-empty string, got {namespace!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise InvalidArgument(f"history must be an integer >= 1 (events kept for watches), got {history!r}")
        self.namespace = namespace
        self.history = history
        self._wall = wall
        self._cond = threading.Condition()
        self._rv = 1
        self._uids = 0
        self._objects: dict[str, dict[str, Any]] = {}
        self._log: deque[_Logged] = deque()
        self._floor = 0  # every event with rv <= floor has been dropped from the log
        self._faults: list[_Fault] = []
        self._watch_generation = 0
        self._pending_rv = self._rv

    # ---- inspection ----

    @property
    def resource_version(self) -> str:
        """The current value of the global counter (what a list would return now)."""
        with self._cond:
            return str(self._rv)

    def compact(self) -> None:
        """Forget the whole watch history: resuming from any older resourceVersion gets ``Expired``."""
        with self._cond:
            self._log.clear()
            self._floor = self._rv
            self._cond.notify_all()

    # ---- fault hooks ----

    def fail_next(self, op: Operation, error: ApiError | type[ApiError], *, name: str | None = None,
                  count: int = 1) -> None:
        """Make the next ``count`` calls of ``op`` (on Lease ``name`` only, if given) raise ``error``
        without touching the store: the request never reached the server."""
        self._add_fault(op, error, name, count, commit=False)

    def commit_then_fail_next(self, op: Operation, error: ApiError | type[ApiError] | None = None, *,
                              name: str | None = None, count: int = 1) -> None:
        """Make the next ``count`` writes ``op`` (create / replace / delete; on ``name`` only, if given)
        commit and then raise ``error`` (default ``RequestTimeout``): the server wrote, the client
        never heard. The write's watch event is recorded as usual. A write that fails on its own still
        raises its own error (nothing was committed) and uses the fault up."""
        if op not in _WRITES:
            raise InvalidArgument(f"commit_then_fail_next: op must be one of {list(_WRITES)} (a write), got {op!r}")
        self._add_fault(op, error or RequestTimeout, name, count, commit=True)

    def _add_fault(self, op: str, error: ApiError | type[ApiError], name: str | None, count: int,
                   *, commit: bool) -> None:
        if op not in _OPERATIONS:
            raise InvalidArgument(f"op must be one of {list(_OPERATIONS)}, got {op!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(f"count must be an integer >= 1, got {count!r}")
        if isinstance(error, type) and issubclass(error, ApiError):
            what = "the write was committed, then " if commit else ""
            error = error(f"injected by MemoryLeaseStore: {what}{op} failed")
        if not isinstance(error, ApiError):
            raise InvalidArgument(f"error must be an ApiError subclass or instance (e.g. errors.RequestTimeout), "
                                  f"got {error!r}")
        with self._cond:
            self._faults.append(_Fault(op, name, error, count, commit))

    def _take_fault(self, op: str, name: str | None) -> _Fault | None:
        for fault in self._faults:
            if fault.op == op and (fault.name is None or fault.name == name):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _raise_before(fault: _Fault | None) -> None:
        if fault is not None and not fault.commit:
            raise copy.copy(fault.error)

    @staticmethod
    def _raise_after(fault: _Fault | None) -> None:
        if fault is not None and fault.commit:
            raise copy.copy(fault.error)

    # ---- LeaseStore ----

    def create(self, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        name = self._name_of(body)
        with self._cond:
            fault = self._take_fault("create", name)
            self._raise_before(fault)
            result = self._create(name, body)
            self._raise_after(fault)
            return result

    def replace(self, name: str, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        with self._cond:
            fault = self._take_fault("replace", name)
            self._raise_before(fault)
            result = self._replace(name, body)
            self._raise_after(fault)
            return result

    def get(self, name: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        with self._cond:
            self._raise_before(self._take_fault("get", name))
            stored = self._objects.get(name)
            return copy.deepcopy(stored) if stored is not None else None

    def delete(self, name: str, *, resource_version: str | None = None, timeout: float | None = None) -> None:
        with self._cond:
            fault = self._take_fault("delete", name)
            self._raise_before(fault)
            current = self._objects.get(name)
            if current is None:
                raise self._not_found(name)
            current_rv = current["metadata"]["resourceVersion"]
            if resource_version and resource_version != current_rv:
                raise self._precondition_failed(name, f"ResourceVersion in precondition: {resource_version}, "
                                                      f"ResourceVersion in object meta: {current_rv}")
            del self._objects[name]
            self._rv += 1
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record("DELETED", gone, None)
            self._raise_after(fault)

    def list(self, label_selector: str, *, timeout: float | None = None) -> tuple[_Objects, str]:
        requirements = parse_selector(label_selector)
        with self._cond:
            self._raise_before(self._take_fault("list", None))
            # Items of a list carry no kind/apiVersion: the list's own kind says it (kube does the same).
            items = [{k: copy.deepcopy(v) for k, v in self._objects[n].items() if k not in ("kind", "apiVersion")}
                     for n in sorted(self._objects) if _matches(requirements, self._objects[n])]
            return items, str(self._rv)

    def watch(self, label_selector: str, resource_version: str, *, timeout_seconds: int,
              read_timeout: float, skip: Callable[[str, str], bool] | None = None) -> Iterator[dict[str, Any]]:
        """Events after ``resource_version`` (see the module docstring); blocks between events.
        ``skip`` is ignored: events here are dicts already, there is no decoding to save.

        Ends cleanly after ``timeout_seconds`` or on ``close_watch()``; raises ``RequestTimeout`` after
        ``read_timeout`` seconds without an event, as a client whose server went silent does.
        """
        requirements = parse_selector(label_selector)
        with self._cond:
            self._raise_before(self._take_fault("watch", None))
            generation = self._watch_generation
            if resource_version in ("", "0"):
                initial = self._current_as_added(requirements)
                initial.append({"type": "BOOKMARK", "object": self._bookmark(self._rv, initial_end=True)})
            else:
                initial = self._events_after(self._parse_rv(resource_version), requirements)
            position = self._rv  # every event up to here has been considered
        yield from initial
        deadline = time.monotonic() + timeout_seconds
        while True:
            with self._cond:
                silent_until = time.monotonic() + read_timeout
                while True:
                    if self._watch_generation != generation:
                        return
                    if self._rv > position:
                        break
                    now = time.monotonic()
                    if now >= deadline:
                        return
                    if now >= silent_until:
                        raise RequestTimeout(f"watch stream silent for {read_timeout:g} s (read timed out)")
                    self._cond.wait(min(deadline, silent_until) - now)
                events = self._events_after(position, requirements)
                position = self._rv
            yield from events

    def close_watch(self) -> None:
        """End every running ``watch`` generator at its next wake-up (cleanly, without an error)."""
        with self._cond:
            self._watch_generation += 1
            self._cond.notify_all()

    def close(self) -> None:
        self.close_watch()

    # ---- deterministic event access ----

    def drain_events(self, since_rv: str, label_selector: str = "") -> _Objects:
        """The watch events after ``since_rv``, at once and without blocking (no bookmarks).

        ``since_rv`` ``""`` or ``"0"`` gives the current Leases as ADDED; an older version than the
        history keeps raises ``Expired``. Does not consume anything: call it as often as wanted.
        """
        requirements = parse_selector(label_selector)
        with self._cond:
            if since_rv in ("", "0"):
                return self._current_as_added(requirements)
            return self._events_after(self._parse_rv(since_rv), requirements)

    def pending_events(self) -> _Objects:
        """Every event committed since the previous call (the first call: since the store was made).

        The feed a single-threaded simulation steps through; raises ``Expired`` if more events than
        ``history`` happened in between.
        """
        with self._cond:
            events = self._events_after(self._pending_rv, ())
            self._pending_rv = self._rv
            return events

    # ---- internals (called with the lock held) ----

    def _name_of(self, body: Mapping[str, Any]) -> str:
        meta = body.get("metadata") if isinstance(body, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str) or not name:
            raise api_error(422, "Invalid", 'Lease.coordination.k8s.io "" is invalid: metadata.name: Required value: '
                            "name or generateName is required")
        return name

    def _not_found(self, name: str) -> ApiError:
        return api_error(404, "NotFound", f'{_QUALIFIED} "{name}" not found')

    def _check_namespace(self, meta: Mapping[str, Any]) -> None:
        namespace = meta.get("namespace")
        if namespace and namespace != self.namespace:
            raise api_error(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                            "sent on the request")

    def _create(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        if meta.get("resourceVersion"):
            raise api_error(500, "InternalError", "resourceVersion should not be set on objects to be created")
        self._check_namespace(meta)
        if name in self._objects:
            raise api_error(409, "AlreadyExists", f'{_QUALIFIED} "{name}" already exists')
        self._uids += 1
        obj = self._shape(name, body, uid=str(uuid.UUID(int=self._uids)),
                          created=self._wall().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return self._commit(name, obj, "ADDED", None)

    def _precondition_failed(self, name: str, detail: str) -> ApiError:
        return api_error(409, "Conflict", f'Operation cannot be fulfilled on {_QUALIFIED} "{name}": '
                         f"StorageError: invalid object, Code: 4, Key: /registry/leases/{self.namespace}/{name}, "
                         f"ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: {detail}")

    def _replace(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        body_name = self._name_of(body)
        if body_name != name:
            raise api_error(400, "BadRequest", f"the name of the object ({body_name}) does not match the name on "
                            f"the URL ({name})")
        meta = body["metadata"]
        self._check_namespace(meta)
        current = self._objects.get(name)
        if current is None:  # Leases allow create-on-update; the body's resourceVersion is ignored,
            uid = meta.get("uid")  # but a uid is a precondition on the object that is gone
            if uid:
                raise self._precondition_failed(name, f"UID in precondition: {uid}, UID in object meta: ")
            stripped = dict(body)
            stripped["metadata"] = {k: v for k, v in meta.items() if k != "resourceVersion"}
            return self._create(name, stripped)
        body_rv = meta.get("resourceVersion")
        if not body_rv:
            raise api_error(422, "Invalid", f'{_QUALIFIED} "{name}" is invalid: metadata.resourceVersion: Invalid '
                            "value: 0: must be specified for an update")
        current_meta = current["metadata"]
        if body_rv != current_meta["resourceVersion"]:
            raise api_error(409, "Conflict", f'Operation cannot be fulfilled on {_QUALIFIED} "{name}": {_STALE}')
        uid = meta.get("uid")
        if uid and uid != current_meta["uid"]:
            raise api_error(409, "Conflict", f'Operation cannot be fulfilled on {_QUALIFIED} "{name}": '
                            f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                            f"{current_meta['uid']}")
        obj = self._shape(name, body, uid=current_meta["uid"], created=current_meta["creationTimestamp"])
        obj["metadata"]["resourceVersion"] = current_meta["resourceVersion"]
        if obj == current:
            return copy.deepcopy(current)  # the server skips writes that change nothing
        return self._commit(name, obj, "MODIFIED", current)

    def _shape(self, name: str, body: Mapping[str, Any], *, uid: str, created: str) -> dict[str, Any]:
        """The stored form: server-set metadata, the kept request metadata, the spec without nulls."""
        source = body["metadata"]
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "uid": uid,
                                "resourceVersion": "", "creationTimestamp": created}
        for key in _KEPT_META:
            value = source.get(key)
            if value:
                meta[key] = copy.deepcopy(dict(sorted(value.items())) if isinstance(value, Mapping) else value)
        spec = body.get("spec") or {}
        return {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": meta,
                "spec": {k: copy.deepcopy(v) for k, v in spec.items() if v is not None}}

    def _commit(self, name: str, obj: dict[str, Any], kind: str, old: dict[str, Any] | None) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[name] = obj
        self._record(kind, copy.deepcopy(obj), old)
        return copy.deepcopy(obj)

    def _record(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._log.append(_Logged(self._rv, kind, obj, old))
        while len(self._log) > self.history:
            self._floor = self._log.popleft().rv
        self._cond.notify_all()

    def _parse_rv(self, resource_version: str) -> int:
        try:
            since = int(resource_version)
        except ValueError:
            raise api_error(400, "BadRequest", f'resourceVersion: Invalid value: "{resource_version}": must be a '
                            "valid resource version") from None
        self._check_history(since)
        return since

    def _check_history(self, since: int) -> None:
        if since < self._floor:
            raise Expired(f"HTTP 410 Expired: too old resource version: {since} ({self._floor + 1})",
                          status=410, reason="Expired")

    def _events_after(self, since: int, requirements: tuple[_Requirement, ...]) -> _Objects:
        self._check_history(since)
        events: _Objects = []
        for logged in self._log:
            if logged.rv <= since:
                continue
            kind = logged.type
            if requirements:
                now = _matches(requirements, logged.obj)
                if kind == "MODIFIED":
                    before = _matches(requirements, logged.old)
                    if not now and not before:
                        continue
                    kind = "DELETED" if not now else ("ADDED" if not before else kind)
                elif not now:
                    continue
            events.append({"type": kind, "object": copy.deepcopy(logged.obj)})
        return events

    def _current_as_added(self, requirements: tuple[_Requirement, ...]) -> _Objects:
        return [{"type": "ADDED", "object": copy.deepcopy(self._objects[n])} for n in sorted(self._objects)
                if _matches(requirements, self._objects[n])]

    @staticmethod
    def _bookmark(rv: int, *, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = dict(_INITIAL_END)
        return {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": meta, "spec": {}}
