"""A sharded ConfigMap controller: every replica sees every ConfigMap, each reconciles only its shards.

Run it against a local dev-server (see examples/README.md)::

    shardlease run examples.configmap_controller:handle --group configmaps --shards 16 \\
        --kubeconfig dev.kubeconfig --identity replica-a

How the work is split. A ConfigMap belongs to shard ``shard_for_key("<namespace>/<name>", S)``; that
mapping is fixed, so every replica agrees on it without talking to the others. Each replica runs *one*
list+watch over the namespace's ConfigMaps (not one per shard: the watch is the expensive part, and
shards come and go) and keeps the objects in memory. When shardlease hands this replica a shard,
``handle`` subscribes to that shard's keys, reconciles them as they change, and unsubscribes when the
shard is revoked.

"Reconciling" here means stamping two annotations on the object::

    shardlease.io/reconciled-by: <identity of the replica>
    shardlease.io/token:         <fencing token of the shard when it was written>

Safety. A write goes out only if (1) ``shard.valid()`` is true right before it, (2) the token already on
the object is not newer than ours (a newer holder has been there: we are a stale replica that has not yet
noticed it lost the shard), and (3) the object is unchanged since we read it: the PUT carries the
``resourceVersion`` we read, so the API server answers 409 Conflict if anyone wrote in between. After a
conflict we do not GET the object: the watch delivers the newer version and queues the key again.

Efficiency. JSON is read and written as plain dicts (``_preload_content=False``), skipping the
``kubernetes`` client's model classes, which cost more than the request itself; an object that already
carries our identity and token is skipped without any request, so the watch event caused by our own
write costs nothing; all shards of a replica share the one watch and the one connection pool.

Testing aid. If ``CONFIGMAP_JOURNAL_DIR`` is set, each write attempt is appended to
``$CONFIGMAP_JOURNAL_DIR/<identity>.<pid>.jsonl`` as a ``begin`` line (stamped just before the
``valid()`` check, written once it passed) and an ``end`` line (after the answer), with
``time.monotonic()`` stamps, so a test can prove that no two replicas ever wrote for the same shard at
the same time; an attempt stopped by ``valid()`` is a single ``skip`` line. Each line is one ``write``
call, so a SIGKILL leaves at most an unfinished ``begin``, never a torn record of a finished one.

Other settings (environment): ``CONFIGMAP_NAMESPACE`` (the namespace to watch; default: the
replica's ``SHARDLEASE_NAMESPACE``, then ``POD_NAMESPACE``, then ``default``); the kube client is set up
like shardlease's own: in a pod from the service account, else from ``SHARDLEASE_KUBECONFIG`` /
``KUBECONFIG`` / ``~/.kube/config`` and ``SHARDLEASE_CONTEXT``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from shardlease import shard_for_key

if TYPE_CHECKING:
    from shardlease import Shard

log = logging.getLogger("examples.configmap_controller")

ANNOTATION_BY = "shardlease.io/reconciled-by"
ANNOTATION_TOKEN = "shardlease.io/token"
ENV_JOURNAL_DIR = "CONFIGMAP_JOURNAL_DIR"
ENV_NAMESPACE = "CONFIGMAP_NAMESPACE"

#: Server-side timeout of one watch request; the watch is then resumed from the last resourceVersion.
#: Keeps a silently dead connection from going unnoticed for longer than this.
WATCH_SECONDS = 60
#: Pause before re-listing after an error, so a failing API server is not hammered.
RELIST_BACKOFF = 1.0


def object_key(obj: dict[str, Any]) -> str:
    """The key a ConfigMap is sharded by: ``namespace/name``, stable for the object's lifetime."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class KeyQueue:
    """A FIFO of keys that holds each key at most once, so a burst of events costs one reconcile."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._order: deque[str] = deque()
        self._pending: set[str] = set()

    def put(self, key: str) -> None:
        with self._cond:
            if key not in self._pending:
                self._pending.add(key)
                self._order.append(key)
                self._cond.notify()

    def get(self, timeout: float) -> str | None:
        with self._cond:
            if not self._order:
                self._cond.wait(timeout)
            if not self._order:
                return None
            key = self._order.popleft()
            self._pending.discard(key)
            return key

    def __len__(self) -> int:
        with self._cond:
            return len(self._order)


class ConfigMapInformer:
    """One list+watch of a namespace's ConfigMaps, an in-memory copy, and per-shard queues of keys.

    Shards subscribe and unsubscribe as shardlease moves them. Every change to an object is queued for
    the shard the object hashes to, if this replica currently holds that shard; a subscriber first gets
    every cached key of its shard, so nothing that happened before the shard arrived is missed.
    """

    def __init__(self, api: client.CoreV1Api, namespace: str) -> None:
        self._api = api
        self.namespace = namespace
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._shard_of: dict[str, int] = {}
        self._count: int | None = None
        self._queues: dict[int, KeyQueue] = {}
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="configmap-informer", daemon=True)
        self._thread.start()

    # ---- subscribers ----

    def subscribe(self, shard_id: int, count: int) -> KeyQueue:
        queue = KeyQueue()
        with self._lock:
            if self._count != count:  # first subscriber, or the group's shard count changed
                self._count = count
                self._shard_of = {key: shard_for_key(key, count) for key in self._objects}
            self._queues[shard_id] = queue
            for key, shard in self._shard_of.items():
                if shard == shard_id:
                    queue.put(key)
        return queue

    def unsubscribe(self, shard_id: int, queue: KeyQueue) -> None:
        with self._lock:
            if self._queues.get(shard_id) is queue:
                del self._queues[shard_id]

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(key)

    def remember(self, obj: dict[str, Any], based_on: str) -> None:
        """Cache the answer to our own write, so we need not wait for its watch event.

        Only if the cached copy is still the one the write was based on: otherwise the watch has
        already delivered our write or something newer. resourceVersions are compared for equality
        only, as the API asks of clients (their order is not part of the contract).
        """
        key = object_key(obj)
        with self._lock:
            current = self._objects.get(key)
            if current is not None and _rv(current) == based_on:
                self._store(key, obj)

    # ---- the watch ----

    def _store(self, key: str, obj: dict[str, Any]) -> None:
        self._objects[key] = obj
        if self._count is not None and key not in self._shard_of:
            self._shard_of[key] = shard_for_key(key, self._count)

    def _changed(self, key: str) -> None:
        shard = self._shard_of.get(key)
        if shard is not None and shard in self._queues:
            self._queues[shard].put(key)

    def _run(self) -> None:
        while True:
            try:
                version = self._list()
                self.synced.set()
                while version is not None:
                    version = self._watch(version)
            except Exception as exc:  # network trouble, 5xx, expired watch: start over from a list
                log.warning("ConfigMap watch failed (%s); listing again", exc)
            time.sleep(RELIST_BACKOFF)

    def _list(self) -> str:
        # One unpaginated list: fine for an example; a namespace with many thousands of ConfigMaps
        # would want limit/continue here.
        response = self._api.list_namespaced_config_map(self.namespace, _preload_content=False)
        listing = json.loads(response.data)
        fresh = {object_key(obj): obj for obj in listing.get("items") or []}
        with self._lock:
            for key in set(self._objects) - set(fresh):
                del self._objects[key]
                self._shard_of.pop(key, None)
            for key, obj in fresh.items():
                old = self._objects.get(key)
                self._store(key, obj)
                if old is None or _rv(old) != _rv(obj):
                    self._changed(key)
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str | None:
        """Follow the watch from ``version``; return the version to resume from, ``None`` to re-list."""
        response = self._api.list_namespaced_config_map(
            self.namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            _request_timeout=(10, WATCH_SECONDS + 30),
        )
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # 410 Expired and friends: our version is gone, list again
                    log.info("ConfigMap watch ended: %s", obj.get("message"))
                    return None
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                key = object_key(obj)
                with self._lock:
                    if kind == "DELETED":
                        self._objects.pop(key, None)
                        self._shard_of.pop(key, None)
                    else:
                        self._store(key, obj)
                        self._changed(key)
        finally:
            response.release_conn()
        return version


def _rv(obj: dict[str, Any]) -> str:
    """An object's resourceVersion (an opaque string: compare it for equality only)."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Journal:
    """Append-only record of write attempts (see the module docstring); a no-op when not configured."""

    def __init__(self, directory: str | None, identity: str) -> None:
        self._fd: int | None = None
        if directory:
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{identity}.{os.getpid()}.jsonl")
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **record: Any) -> None:
        if self._fd is not None:
            os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


class Controller:
    """Everything a replica shares between its shards: the API client, the informer, the journal."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.api = client.CoreV1Api(_api_client())
        namespace = (
            os.environ.get(ENV_NAMESPACE)
            or os.environ.get("SHARDLEASE_NAMESPACE")
            or os.environ.get("POD_NAMESPACE")
            or "default"
        )
        self.informer = ConfigMapInformer(self.api, namespace)
        self.journal = Journal(os.environ.get(ENV_JOURNAL_DIR), identity)

    def reconcile(self, shard: Shard, key: str) -> bool:
        """Bring one ConfigMap's annotations up to date for this holder of its shard; True if written."""
        obj = self.informer.get(key)
        if obj is None:  # deleted meanwhile
            return False
        token = str(shard.token)
        annotations = dict(obj["metadata"].get("annotations") or {})
        if annotations.get(ANNOTATION_BY) == self.identity and annotations.get(ANNOTATION_TOKEN) == token:
            return False  # already done (typically: the watch event of our own write)
        seen = annotations.get(ANNOTATION_TOKEN, "")
        if seen.isdigit() and int(seen) > int(shard.token):
            # A later holder of this shard has written; we are behind and must not overwrite it.
            log.warning("skip %s: its token %s is newer than ours (%s)", key, seen, token)
            return False

        annotations[ANNOTATION_BY] = self.identity
        annotations[ANNOTATION_TOKEN] = token
        # The whole object as read, resourceVersion included, so the PUT is conditional.
        body = {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}
        meta = obj["metadata"]
        record = {"key": key, "shard": shard.id, "token": shard.token, "identity": self.identity}
        # The span a test checks for overlaps starts *before* the valid() check: from then on this
        # replica acts as the shard's holder, until the answer to its write is in.
        started = time.monotonic()
        if not shard.valid():  # right before the write: the lease may have lapsed while we queued
            self.journal.write(event="skip", at=started, **record)
            return False
        self.journal.write(event="begin", at=started, **record)
        outcome = "error"
        try:
            response = self.api.replace_namespaced_config_map(
                meta["name"], meta["namespace"], body, _preload_content=False
            )
            self.informer.remember(json.loads(response.data), based_on=_rv(obj))
            outcome = "written"
        except ApiException as exc:
            if exc.status == 409:  # changed since we read it; the watch will queue it again
                outcome = "conflict"
            elif exc.status == 404:  # deleted meanwhile; nothing to reconcile
                outcome = "gone"
            else:
                outcome = f"error {exc.status}"
                raise
        finally:
            self.journal.write(event="end", at=time.monotonic(), outcome=outcome, **record)
        return outcome == "written"


def _api_client() -> client.ApiClient:
    """A client configured the way shardlease configures its own (in-cluster first, then kubeconfig)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config(
            config_file=os.environ.get("SHARDLEASE_KUBECONFIG") or os.environ.get("KUBECONFIG") or None,
            context=os.environ.get("SHARDLEASE_CONTEXT") or None,
        )
    return client.ApiClient()


_controller: Controller | None = None
_controller_lock = threading.Lock()


def _identity(shard: Shard) -> str:
    """The replica's identity, as written into the annotation: the runtime puts it on every Shard;
    the environment (what ``shardlease run`` itself reads) is only a fallback."""
    explicit = getattr(shard, "identity", None)
    if explicit:
        return str(explicit)
    return os.environ.get("SHARDLEASE_IDENTITY") or os.environ.get("POD_NAME") or socket.gethostname()


def controller(shard: Shard) -> Controller:
    """The replica's single Controller, created on the first shard (handlers run in parallel threads)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = Controller(_identity(shard))
        return _controller


def handle(shard: Shard) -> None:
    """Reconcile the ConfigMaps of ``shard`` until shardlease takes it away."""
    ctl = controller(shard)
    queue = ctl.informer.subscribe(shard.id, shard.count)
    log.info("shard %d/%d (token %s): reconciling its ConfigMaps in %s",
             shard.id, shard.count, shard.token, ctl.informer.namespace)
    written = 0
    try:
        while not shard.stopped.is_set():
            key = queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                written += ctl.reconcile(shard, key)
            except Exception:
                # One bad object must not stop the shard; try it again a little later.
                log.exception("reconciling %s failed; will retry", key)
                if not shard.stopped.wait(1.0):
                    queue.put(key)
    finally:
        ctl.informer.unsubscribe(shard.id, queue)
        log.info("shard %d: stopped after %d writes", shard.id, written)
