"""A sharded ConfigMap controller: each replica receives and reconciles only the ConfigMaps of its shards.

Run it against a local dev-server (see examples/README.md)::

    shardlease run examples.configmap_controller:handle --group configmaps --shards 16 \\
        --kubeconfig dev.kubeconfig --identity replica-a

How the work is split. A ConfigMap belongs to the shard whose hash range holds the FNV-1a hash of its
``metadata.uid`` (``shardlease.shard_for_object(obj, S)``), the ranges Kubernetes' sharded list and
watch use (KEP-5866). ``shard.objects("v1", "configmaps")`` streams exactly those objects: first the
current ones, then their changes, until the shard is revoked. shardlease runs one list+watch per
replica for all the shards it holds, and on a cluster with the ``ShardedListAndWatch`` gate the API
server sends each replica only its own ConfigMaps; without it the replica drops the others itself.
After a handoff, the new holder starts from a fresh list of the shard's objects.

"Reconciling" here means stamping two annotations on the object::

    shardlease.io/reconciled-by: <identity of the replica>
    shardlease.io/fence:         <group>/<shard>/<generation>/<token>   (the shard's fence when written)

and, with the fence, the labels ``shardlease.io/fenced-group`` and ``shardlease.io/fenced-shard``: all
three are set by ``shard.stamp(body)``. With ``shardlease fencing install --group <group> --resource
v1/configmaps`` the API server itself refuses the write of a replica that lost its shard while paused
between its checks and the write (docs/fencing.md).

Safety. A write goes out only if (1) ``shard.valid()`` is true right before it, (2) the fence already on
the object is not newer than ours (a newer holder has been there: we are a stale replica that has not yet
noticed it lost the shard), and (3) the object is unchanged since we read it: the PUT carries the
``resourceVersion`` we read, so the API server answers 409 Conflict if anyone wrote in between. After a
conflict we do not GET the object: the stream delivers the newer version, and we reconcile that.

Fences, not tokens, are compared: ``shard.fence`` is ``(generation, token)``. After a reshard an object
may belong to another shard id, whose Lease hands out smaller tokens than the old one did; the new
generation is larger, so the new holder's fence is still the newer one and it reconciles the object.

Efficiency. JSON is written as plain dicts (``_preload_content=False``), skipping the ``kubernetes``
client's model classes, which cost more than the request itself; an object that already carries our
identity and token is skipped without any request, so the event caused by our own write costs nothing.

Testing aid. If ``CONFIGMAP_JOURNAL_DIR`` is set, each write attempt is appended to
``$CONFIGMAP_JOURNAL_DIR/<identity>.<pid>.jsonl`` as a ``begin`` line (stamped just before the
``valid()`` check, written once it passed) and an ``end`` line (after the answer), with
``time.monotonic()`` stamps, so a test can prove that no two replicas ever wrote for the same object at
the same time; an attempt stopped by ``valid()`` is a single ``skip`` line. Each line is one ``write``
call, so a SIGKILL leaves at most an unfinished ``begin``, never a torn record of a finished one.

Other settings (environment): ``CONFIGMAP_NAMESPACE`` (the namespace to watch; default: the
replica's ``SHARDLEASE_NAMESPACE``, then ``POD_NAMESPACE``, then ``default``); the kube client for the
writes is set up like shardlease's own: in a pod from the service account, else from
``SHARDLEASE_KUBECONFIG`` / ``KUBECONFIG`` / ``~/.kube/config`` and ``SHARDLEASE_CONTEXT``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

if TYPE_CHECKING:
    from shardlease import Shard

log = logging.getLogger("examples.configmap_controller")

ANNOTATION_BY = "shardlease.io/reconciled-by"
ANNOTATION_FENCE = "shardlease.io/fence"
ENV_JOURNAL_DIR = "CONFIGMAP_JOURNAL_DIR"
ENV_NAMESPACE = "CONFIGMAP_NAMESPACE"


def object_key(obj: dict[str, Any]) -> str:
    """How the journal and logs name a ConfigMap: ``namespace/name``."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def format_fence(shard: Shard) -> str:
    """The fence annotation's value: ``<group>/<shard>/<generation>/<token>`` (who wrote it, and when);
    what ``shard.stamp`` writes."""
    return shard.fence_annotation


def parse_fence(value: str) -> tuple[int, int] | None:
    """``(generation, token)`` from a fence annotation; ``None`` if absent or not in that form."""
    parts = value.split("/")
    if len(parts) != 4 or not (parts[2].isdigit() and parts[3].isdigit()):
        return None
    return int(parts[2]), int(parts[3])


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
    """Everything a replica shares between its shards: the API client for writes and the journal."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.api = client.CoreV1Api(_api_client())
        self.namespace = (
            os.environ.get(ENV_NAMESPACE)
            or os.environ.get("SHARDLEASE_NAMESPACE")
            or os.environ.get("POD_NAMESPACE")
            or "default"
        )
        self.journal = Journal(os.environ.get(ENV_JOURNAL_DIR), identity)

    def reconcile(self, shard: Shard, obj: dict[str, Any]) -> bool:
        """Bring one ConfigMap's annotations up to date for this holder of its shard; True if written."""
        fence = format_fence(shard)
        meta = obj["metadata"]
        key = object_key(obj)
        annotations = dict(meta.get("annotations") or {})
        if annotations.get(ANNOTATION_BY) == self.identity and annotations.get(ANNOTATION_FENCE) == fence:
            return False  # already done (typically: the event of our own write)
        seen = parse_fence(annotations.get(ANNOTATION_FENCE, ""))
        if seen is not None and seen > shard.fence:
            # A later holder (of this shard, or of the shard that owns the object under a newer count)
            # has written; we are behind and must not overwrite it.
            log.warning("skip %s: its fence %s is newer than ours (%s)", key, annotations[ANNOTATION_FENCE], fence)
            return False

        annotations[ANNOTATION_BY] = self.identity
        # The whole object as read, resourceVersion included, so the PUT is conditional; stamped with
        # our fence (annotation and labels), which the API server checks when `shardlease fencing
        # install` ran for configmaps (docs/fencing.md).
        body = shard.stamp({**obj, "metadata": {**meta, "annotations": annotations}})
        record = {"key": key, "uid": meta["uid"], "shard": shard.id, "token": shard.token,
                  "generation": shard.generation, "count": shard.count, "identity": self.identity}
        # The span a test checks for overlaps starts *before* the valid() check: from then on this
        # replica acts as the shard's holder, until the answer to its write is in.
        started = time.monotonic()
        if not shard.valid():  # right before the write: the lease may have lapsed while we worked
            self.journal.write(event="skip", at=started, **record)
            return False
        self.journal.write(event="begin", at=started, **record)
        outcome = "error"
        try:
            self.api.replace_namespaced_config_map(meta["name"], meta["namespace"], body, _preload_content=False)
            outcome = "written"
        except ApiException as exc:
            if exc.status == 409:  # changed since we read it; the stream brings the newer version
                outcome = "conflict"
            elif exc.status == 404:  # deleted meanwhile; nothing to reconcile
                outcome = "gone"
            elif exc.status == 403 and "stale shard fence" in str(exc.body):
                # The API server's fencing refused it: another replica holds the shard now (we were
                # paused past our lease). Nothing landed; our handler is about to be stopped.
                log.warning("write of %s refused by the API server's fencing: %s", key, exc.body)
                outcome = "fenced"
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
    """Reconcile the ConfigMaps of ``shard`` until shardlease takes it away.

    An error other than a conflict propagates: shardlease restarts the handler after a back-off, and
    the restarted stream lists the shard's objects afresh, so nothing that failed is forgotten.
    """
    ctl = controller(shard)
    log.info("shard %d/%d (fence %s): reconciling its ConfigMaps in %s",
             shard.id, shard.count, format_fence(shard), ctl.namespace)
    written = 0
    try:
        for event in shard.objects("v1", "configmaps", namespace=ctl.namespace):
            if event.type in ("ADDED", "MODIFIED"):
                written += ctl.reconcile(shard, event.object)
            elif event.type == "SYNCED":
                log.info("shard %d: initial list reconciled (%d writes)", shard.id, written)
    finally:
        log.info("shard %d: stopped after %d writes", shard.id, written)
