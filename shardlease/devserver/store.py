"""The object store: one cluster-wide resourceVersion, optimistic concurrency, and the event log.

Every mutation runs under one lock and is serialised to JSON exactly once; that byte string is what
GET returns, what lists slice their items from, and what watch events embed. Readers never see a dict
that a writer could still change, and writers never lose an update: each write either sees the current
resourceVersion or gets a 409.

The event log is bounded (by count and by age) like etcd's compacted history behind the watch cache:
a watch that asks for a resourceVersion older than the log gets 410 Expired.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import builtins
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import microtime
from .resources import ALL, Resource
from .selectors import FieldSelector, LabelSelector
from .status import STALE_OBJECT, ApiError, already_exists, bad_request, conflict, invalid, not_found
from .validation import validate

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_META_ORDER = ("name", "generateName", "namespace", "uid", "resourceVersion", "creationTimestamp",
               "labels", "annotations", "ownerReferences", "finalizers", "managedFields")
#: String maps, which Go serialises with sorted keys (so kube-apiserver's output is sorted too).
_MAPS = frozenset(("labels", "annotations", "data", "binaryData"))
#: Sets ``metadata.managedFields`` of the new object from (stored object or None, new object).
Track = Callable[[dict[str, Any] | None, dict[str, Any]], None]
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a "
    "new list without the continue parameter, or use the continue token in this response to retrieve "
    "the remainder of the results. Continuing with the provided token results in an inconsistent list "
    "- objects that were created, modified, or deleted between the time the first chunk was returned "
    "and now may show up in the list."
)


def _sorted_map(value: Any) -> Any:
    return {k: value[k] for k in sorted(value)} if isinstance(value, dict) else value


def dumps(obj: Any) -> bytes:
    return _dumps(obj).encode()


@dataclass(slots=True)
class Stored:
    """One object version: the dict (never mutated after creation) and its JSON bytes."""

    obj: dict[str, Any]
    raw: bytes
    rv: int
    resource: Resource

    @property
    def labels(self) -> dict[str, str]:
        return self.obj["metadata"].get("labels") or {}

    def item_bytes(self) -> bytes:
        """The object as a list item: kube-apiserver leaves kind and apiVersion out of items."""
        return b"{" + self.raw[len(self.resource.prefix):]


@dataclass(slots=True)
class Event:
    """One committed change, as kept in the log and fanned out to watchers."""

    type: str  # ADDED / MODIFIED / DELETED
    stored: Stored
    namespace: str
    name: str
    old_labels: dict[str, str] | None  # labels before a MODIFIED, to send DELETED/ADDED on selector moves
    at: float = field(default_factory=time.monotonic)


class Subscriber(Protocol):
    resource: Resource

    def offer(self, event: Event) -> None: ...


class Expired(Exception):
    """The asked-for resourceVersion is older than the kept event history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.message = str(self)


class Store:
    """All objects of all served resources, plus the bounded event history and the watcher registry."""

    def __init__(self, history_limit: int = 10_000, history_seconds: float = 300.0) -> None:
        self.lock = threading.RLock()
        self.rv = 1
        self.history_limit = history_limit
        self.history_seconds = history_seconds
        self._objects: dict[Resource, dict[tuple[str, str], Stored]] = {r: {} for r in ALL}
        self._sorted: dict[Resource, list[tuple[str, str]] | None] = dict.fromkeys(ALL)
        self._log: deque[Event] = deque()
        #: Every event with rv <= floor has been dropped from the log.
        self._floor = 0
        self._subscribers: dict[Resource, set[Subscriber]] = {r: set() for r in ALL}

    # ------------------------------------------------------------------ reads

    def get(self, resource: Resource, namespace: str, name: str) -> Stored:
        stored = self._objects[resource].get((namespace, name))
        if stored is None:
            raise not_found(resource.plural, resource.group, name)
        return stored

    def exists(self, resource: Resource, namespace: str, name: str) -> bool:
        return (namespace, name) in self._objects[resource]

    def list(
        self,
        resource: Resource,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[Stored], int, str, int | None]:
        """Return (items, list RV, continue token, remainingItemCount) in key order."""
        with self.lock:
            list_rv = self.rv
            start: tuple[str, str] | None = None
            if continue_token:
                list_rv, start = self._decode_continue(continue_token)
            objects = self._objects[resource]
            selected: list[Stored] = []
            remaining = 0
            total_scan = limit > 0
            for key in self._keys_from(resource, namespace, start):
                if not fields.matches(key[0], key[1]):
                    continue
                stored = objects[key]
                if not labels.matches(stored.labels):
                    continue
                if total_scan and len(selected) >= limit:
                    remaining += 1
                    if not (labels.empty and fields.empty):
                        break  # the count is only reported without selectors: one more is enough
                    continue
                selected.append(stored)
            token = ""
            count: int | None = None
            if total_scan and remaining:
                last = selected[-1]
                token = self._encode_continue(list_rv, last.obj["metadata"]["namespace"],
                                              last.obj["metadata"]["name"])
                if labels.empty and fields.empty:
                    count = remaining
            return selected, list_rv, token, count

    def _keys_from(self, resource: Resource, namespace: str | None,
                   after: tuple[str, str] | None) -> Iterator[tuple[str, str]]:
        """Keys in order, limited to ``namespace`` and to those after ``after``; found by bisection,
        so a namespaced list costs what that namespace holds, not what the whole store holds."""
        keys = self._sorted_keys(resource)
        low = (namespace, "") if namespace is not None else ("", "")
        if after is not None and after > low:
            index = bisect.bisect_right(keys, after)
        else:
            index = bisect.bisect_left(keys, low)
        for position in range(index, len(keys)):
            key = keys[position]
            if namespace is not None and key[0] != namespace:
                return
            yield key

    def _sorted_keys(self, resource: Resource) -> builtins.list[tuple[str, str]]:
        keys = self._sorted[resource]
        if keys is None:
            keys = sorted(self._objects[resource])
            self._sorted[resource] = keys
        return keys

    @staticmethod
    def _encode_continue(rv: int, namespace: str, name: str) -> str:
        payload = {"v": "meta.k8s.io/v1", "rv": rv, "start": f"{namespace}/{name}\u0000"}
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()

    def _decode_continue(self, token: str) -> tuple[int, tuple[str, str]]:
        try:
            payload = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
            rv = int(payload["rv"])
            namespace, _, name = str(payload["start"]).rstrip("\u0000").partition("/")
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
            raise bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                              "(version meta.k8s.io/v1)") from None
        if rv < self._floor:
            raise ApiError(410, EXPIRED_CONTINUE, "Expired")
        return rv, (namespace, name)

    # ------------------------------------------------------------------ writes

    def create(self, resource: Resource, namespace: str, decoded: dict[str, Any],
               dry_run: bool = False, track: Track | None = None) -> Stored:
        with self.lock:
            meta = decoded["metadata"]
            if meta.get("resourceVersion"):
                raise ApiError(500, "resourceVersion should not be set on objects to be created", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(resource, namespace, meta["generateName"])
            meta["namespace"] = namespace
            validate(resource, decoded)
            key = (namespace, meta["name"])
            if key in self._objects[resource]:
                raise already_exists(resource.plural, resource.group, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = microtime.now_rfc3339()
            if track is not None:
                track(None, decoded)
            return self._commit(resource, key, decoded, "ADDED", None, dry_run)

    def _generate_name(self, resource: Resource, namespace: str, prefix: str) -> str:
        for _ in range(16):
            name = prefix + "".join(random.choice(_GENERATE_ALPHABET) for _ in range(5))
            if (namespace, name) not in self._objects[resource]:
                return name
        raise ApiError(500, "could not generate a unique name", None)

    def update(self, resource: Resource, namespace: str, name: str, decoded: dict[str, Any],
               dry_run: bool = False, track: Track | None = None) -> tuple[Stored, bool]:
        """PUT semantics. Returns (stored, created)."""
        with self.lock:
            meta = decoded["metadata"]
            current = self._objects[resource].get((namespace, name))
            if current is None:
                if not resource.create_on_update:
                    raise not_found(resource.plural, resource.group, name)
                uid = meta.get("uid")
                if uid:
                    # A uid is a precondition: the object it names is gone, so kube-apiserver refuses
                    # rather than create another (a PUT without one does create, resourceVersion or not).
                    raise conflict(resource.plural, resource.group, name, self._precondition_msg(
                        resource, namespace, name, f"UID in precondition: {uid}, UID in object meta: "))
                meta.pop("resourceVersion", None)
                return self.create(resource, namespace, decoded, dry_run, track), True
            body_rv = meta.get("resourceVersion", "")
            if not body_rv:
                if not resource.unconditional_update:
                    raise invalid(resource.qualified, name, resource.group, resource.plural, [(
                        "FieldValueInvalid", "metadata.resourceVersion",
                        "Invalid value: 0: must be specified for an update")])
            elif body_rv != str(current.rv):
                raise conflict(resource.plural, resource.group, name, STALE_OBJECT)
            return self._replace(resource, current, decoded, dry_run, track), False

    def modify(self, resource: Resource, namespace: str, name: str,
               change: Callable[[dict[str, Any]], dict[str, Any]], dry_run: bool = False,
               track: Track | None = None) -> Stored:
        """PATCH semantics: ``change`` gets a private copy of the current object and returns the new
        one (already decoded). A resourceVersion left in the result makes the write conditional."""
        with self.lock:
            current = self.get(resource, namespace, name)
            updated = change(json.loads(current.raw))
            rv = updated["metadata"].get("resourceVersion")
            if rv and rv != str(current.rv):
                raise conflict(resource.plural, resource.group, name, STALE_OBJECT)
            return self._replace(resource, current, updated, dry_run, track)

    def _replace(self, resource: Resource, current: Stored, decoded: dict[str, Any],
                 dry_run: bool, track: Track | None = None) -> Stored:
        meta = decoded["metadata"]
        old_meta = current.obj["metadata"]
        name = old_meta["name"]
        uid = meta.get("uid")
        if uid and uid != old_meta["uid"]:
            raise conflict(resource.plural, resource.group, name,
                           f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                           f"{old_meta['uid']}")
        meta["namespace"] = old_meta["namespace"]
        meta["uid"] = old_meta["uid"]
        meta["creationTimestamp"] = old_meta["creationTimestamp"]
        validate(resource, decoded, current.obj)
        if track is not None:
            track(current.obj, decoded)
        meta["resourceVersion"] = str(current.rv)
        candidate = self._shape(resource, decoded)
        if candidate == current.obj:
            return current  # kube-apiserver skips writes that change nothing: no new RV, no event
        return self._commit(resource, (old_meta["namespace"], name), decoded, "MODIFIED",
                            current, dry_run)

    def delete(self, resource: Resource, namespace: str, name: str,
               preconditions: dict[str, Any] | None = None, dry_run: bool = False) -> Stored:
        with self.lock:
            current = self.get(resource, namespace, name)
            meta = current.obj["metadata"]
            if preconditions:
                want_uid = preconditions.get("uid")
                if want_uid and want_uid != meta["uid"]:
                    raise conflict(resource.plural, resource.group, name, self._precondition_msg(
                        resource, namespace, name, f"UID in precondition: {want_uid}, UID in object "
                                                   f"meta: {meta['uid']}"))
                want_rv = preconditions.get("resourceVersion")
                if want_rv and want_rv != meta["resourceVersion"]:
                    raise conflict(resource.plural, resource.group, name, self._precondition_msg(
                        resource, namespace, name, f"ResourceVersion in precondition: {want_rv}, "
                                                   f"ResourceVersion in object meta: {meta['resourceVersion']}"))
            if dry_run:
                return current
            del self._objects[resource][(namespace, name)]
            self._sorted[resource] = None
            self.rv += 1
            last = json.loads(current.raw)
            last["metadata"]["resourceVersion"] = str(self.rv)
            gone = Stored(last, dumps(last), self.rv, resource)
            self._record(Event("DELETED", gone, namespace, name, None))
            return gone

    @staticmethod
    def _precondition_msg(resource: Resource, namespace: str, name: str, detail: str) -> str:
        return (f"StorageError: invalid object, Code: 4, Key: /registry/{resource.plural}/{namespace}/"
                f"{name}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: {detail}")

    def delete_collection(self, resource: Resource, namespace: str | None, labels: LabelSelector,
                          fields: FieldSelector, dry_run: bool = False) -> builtins.list[Stored]:
        with self.lock:
            doomed, _, _, _ = self.list(resource, namespace, labels, fields)
            if dry_run:
                return doomed
            return [self.delete(resource, s.obj["metadata"]["namespace"], s.obj["metadata"]["name"])
                    for s in doomed]

    def _shape(self, resource: Resource, decoded: dict[str, Any]) -> dict[str, Any]:
        """The stored form: kind and apiVersion first (see Resource.prefix), metadata in kube's order."""
        meta = decoded["metadata"]
        ordered = {k: _sorted_map(meta[k]) if k in _MAPS else meta[k]
                   for k in _META_ORDER if meta.get(k) not in (None, "", {}, [])}
        obj: dict[str, Any] = {"kind": resource.kind, "apiVersion": resource.api_version,
                               "metadata": ordered}
        for key, value in decoded.items():
            if key != "metadata":
                obj[key] = _sorted_map(value) if key in _MAPS else value
        return obj

    def _commit(self, resource: Resource, key: tuple[str, str], decoded: dict[str, Any], kind: str,
                previous: Stored | None, dry_run: bool) -> Stored:
        if dry_run:
            # Nothing is written, so no new resourceVersion exists: a dry-run create shows none and
            # a dry-run update shows the current one, as kube-apiserver does.
            decoded["metadata"]["resourceVersion"] = str(previous.rv) if previous else ""
            obj = self._shape(resource, decoded)
            return Stored(obj, dumps(obj), previous.rv if previous else 0, resource)
        rv = self.rv + 1
        decoded["metadata"]["resourceVersion"] = str(rv)
        obj = self._shape(resource, decoded)
        stored = Stored(obj, dumps(obj), rv, resource)
        self.rv = rv
        objects = self._objects[resource]
        if key not in objects:
            self._sorted[resource] = None
        objects[key] = stored
        self._record(Event(kind, stored, key[0], key[1], previous.labels if previous else None))
        return stored

    # ------------------------------------------------------------------ history and watchers

    def _record(self, event: Event) -> None:
        log = self._log
        log.append(event)
        while len(log) > self.history_limit:
            self._floor = log.popleft().stored.rv
        horizon = event.at - self.history_seconds
        while log and log[0].at < horizon:
            self._floor = log.popleft().stored.rv
        for subscriber in tuple(self._subscribers[event.stored.resource]):
            subscriber.offer(event)

    def compact(self) -> None:
        """Forget the whole event history (tests use this to provoke 410 Expired)."""
        with self.lock:
            self._log.clear()
            self._floor = self.rv

    def subscribe(self, subscriber: Subscriber, since: int | None, namespace: str | None,
                  fields: FieldSelector) -> builtins.list[Event]:
        """Register ``subscriber`` and return what it must see first, atomically.

        ``since=None`` (watch without resourceVersion, or "0") yields a synthetic ADDED per current
        object; otherwise the logged events after ``since``. Raises :class:`Expired` if the log no
        longer reaches back to ``since``.
        """
        resource = subscriber.resource
        with self.lock:
            if since is None:
                objects = self._objects[resource]
                initial = [Event("ADDED", objects[k], k[0], k[1], None)
                           for k in self._keys_from(resource, namespace, None) if fields.matches(*k)]
            else:
                horizon = time.monotonic() - self.history_seconds
                while self._log and self._log[0].at < horizon:
                    self._floor = self._log.popleft().stored.rv
                if since < self._floor:
                    raise Expired(since, self._floor + 1)
                initial = []
                for event in reversed(self._log):
                    if event.stored.rv <= since:
                        break
                    if event.stored.resource is resource:
                        initial.append(event)
                initial.reverse()
            self._subscribers[resource].add(subscriber)
            return initial

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self.lock:
            self._subscribers[subscriber.resource].discard(subscriber)

    def all_objects(self, resource: Resource) -> Iterable[Stored]:
        with self.lock:
            return list(self._objects[resource].values())
