"""The Lease objects shardlease writes, as pure functions of (record, who we are, timing, wall time).

client-go keeps the conversion between its ``LeaderElectionRecord`` and a ``LeaseSpec`` apart from the
elector; so do we. Every body is a whole Lease: for an update, the object as last seen with only the
spec (and our labels and annotations) changed, carrying the resourceVersion that makes the PUT
conditional. Kept free of I/O and clocks so the exact bytes of an acquisition, a renewal or a release
can be tested on their own, and so the renewal path builds its body with no more work than needed.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shardlease.core.records import (
    ANNOTATION_CAPACITY,
    ANNOTATION_EPOCH,
    ANNOTATION_GENERATION,
    ANNOTATION_INCARNATION,
    ANNOTATION_LOAD,
    ANNOTATION_LOADS,
    ANNOTATION_PROBLEMS,
    ANNOTATION_SHARDS,
    LEASE_API_VERSION,
    LeaseRecord,
    epoch_millis,
    fencing_token,
    format_load,
    format_microtime,
    member_labels,
    member_lease_name,
    shard_labels,
    shard_lease_name,
)

__all__ = ["Writer", "new_epoch", "put_body"]


def new_epoch(wall: _dt.datetime, floor: int) -> int:
    """The epoch of a shard Lease created at ``wall``: its time in milliseconds, but above ``floor``
    (the highest epoch seen for the shard), so a creator whose clock is behind still goes up."""
    return max(epoch_millis(wall), floor + 1)


def put_body(record: LeaseRecord, spec_update: Mapping[str, Any], labels: Mapping[str, str],
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The whole object as last seen with only the spec changed (and ``labels``/``annotations`` ensured),
    like client-go's LeaseLock: the resourceVersion it carries makes the PUT conditional."""
    obj = dict(record.raw)
    meta = dict(obj.get("metadata") or {})
    meta_labels = meta.get("labels")
    meta["labels"] = {**(meta_labels if isinstance(meta_labels, dict) else {}), **labels}
    if annotations:
        meta_ann = meta.get("annotations")
        meta["annotations"] = {**(meta_ann if isinstance(meta_ann, dict) else {}), **annotations}
    meta["name"] = record.name
    meta["resourceVersion"] = record.resource_version
    spec = obj.get("spec")
    new_spec = dict(spec) if isinstance(spec, dict) else {}
    new_spec.update(spec_update)
    obj["metadata"] = meta
    obj["spec"] = new_spec
    obj["apiVersion"] = LEASE_API_VERSION
    obj["kind"] = "Lease"
    return obj


@dataclass(frozen=True, slots=True)
class Writer:
    """Who writes: one replica process of one group. Builds its bodies; holds no state that changes."""

    group: str
    namespace: str
    identity: str
    incarnation: str
    lease_duration_seconds: int
    shards: int
    #: This replica's capacity, published on its member Lease (docs/load.md).
    capacity: float = 1.0

    def _stamp(self, generation: int | None = None, epoch: int | None = None) -> dict[str, str]:
        stamp = {ANNOTATION_INCARNATION: self.incarnation}
        if generation is not None:
            stamp[ANNOTATION_GENERATION] = str(generation)
        if epoch is not None:
            stamp[ANNOTATION_EPOCH] = str(epoch)
        return stamp

    def acquire(self, shard: int, record: LeaseRecord | None, wall: _dt.datetime,
                generation: int = 1, epoch_floor: int = 0) -> tuple[dict[str, Any], int]:
        """A new tenure of ``shard`` under ``generation`` and its fencing token: a create when absent,
        else a conditional PUT with ``leaseTransitions`` one higher (even when the record already names
        us: every tenure gets a larger token).

        ``epoch_floor`` is the highest epoch the caller has seen for this shard. A create starts the
        Lease's epoch above it (and at the wall clock), so its tokens start above every token the
        deleted Lease handed out; an update puts it back if the Lease lost its epoch annotation."""
        now = format_microtime(wall)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": now, "renewTime": now}
        if record is None:
            epoch = new_epoch(wall, epoch_floor)
            return self._created(shard, generation, epoch, {**spec, "leaseTransitions": 0}), fencing_token(epoch, 0)
        transitions = (record.transitions or 0) + 1
        epoch = max(record.epoch, epoch_floor)
        return put_body(record, {**spec, "leaseTransitions": transitions}, shard_labels(self.group, shard),
                        self._stamp(generation, epoch if epoch != record.epoch else None)), \
            fencing_token(epoch, transitions)

    def _created(self, shard: int, generation: int, epoch: int, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": LEASE_API_VERSION, "kind": "Lease",
                "metadata": {"name": shard_lease_name(self.group, shard), "namespace": self.namespace,
                             "labels": shard_labels(self.group, shard),
                             "annotations": self._stamp(generation, epoch)},
                "spec": spec}

    def retire(self, shard: int, record: LeaseRecord | None, wall: _dt.datetime, generation: int,
               epoch_floor: int = 0) -> dict[str, Any]:
        """Stamp a shard Lease nobody holds any more with ``generation`` (released, transitions kept), so
        no replica of an older generation can take it again: a create when absent (with a new epoch, as
        in :meth:`acquire`)."""
        now = format_microtime(wall)
        spec: dict[str, Any] = {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now}
        if record is None:
            return self._created(shard, generation, new_epoch(wall, epoch_floor), {**spec, "leaseTransitions": 0})
        if record.transitions is not None:
            spec["leaseTransitions"] = record.transitions
        epoch = max(record.epoch, epoch_floor)
        return put_body(record, spec, shard_labels(self.group, shard),
                        self._stamp(generation, epoch if epoch != record.epoch else None))

    def renew(self, shard: int, record: LeaseRecord, wall: _dt.datetime, epoch: int | None = None,
              load: float | None = None) -> dict[str, Any]:
        """Extend our tenure. ``epoch``: put the tenure's epoch back on a Lease that lost it (an operator
        replaced the object), so the next holder's token still starts above ours. ``load``: the shard's
        smoothed load, carried by the renewal that is sent anyway (no write of its own)."""
        stamp = self._stamp(epoch=epoch)
        if load is not None:
            stamp[ANNOTATION_LOAD] = format_load(load)
        return put_body(record, {
            "holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration_seconds,
            "renewTime": format_microtime(wall)}, shard_labels(self.group, shard), stamp)

    def release(self, shard: int, record: LeaseRecord, wall: _dt.datetime, generation: int = 1,
                epoch_floor: int = 0) -> dict[str, Any]:
        """Hand the shard back as client-go does: no holder, ``leaseDurationSeconds: 1``, transitions
        kept, so the next owner takes it at once and its token is still larger than ours. Stamped with
        the generation we run: a release during a switch is what lets the new generation start."""
        return self.retire(shard, record, wall, generation, epoch_floor)

    def member(self, record: LeaseRecord | None, wall: _dt.datetime, *, held: bool,
               problems: str = "", generation: int = 0, loads: str = "") -> dict[str, Any]:
        """Create or renew our member Lease: our configured count, the generation we run (``0``: none
        yet), our problems, our capacity and the loads of our shards (``records.format_loads``).
        ``held``: our last write of it succeeded, so this is a renewal that keeps ``acquireTime`` and
        ``leaseTransitions``; otherwise it is a (re)acquisition."""
        now = format_microtime(wall)
        annotations = {ANNOTATION_SHARDS: str(self.shards), **self._stamp(generation), ANNOTATION_PROBLEMS: problems,
                       ANNOTATION_CAPACITY: format_load(self.capacity), ANNOTATION_LOADS: loads}
        common = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration_seconds,
                  "renewTime": now}
        if record is None:
            return {"apiVersion": LEASE_API_VERSION, "kind": "Lease",
                    "metadata": {"name": member_lease_name(self.group, self.identity), "namespace": self.namespace,
                                 "labels": member_labels(self.group), "annotations": annotations},
                    "spec": {**common, "acquireTime": now, "leaseTransitions": 0}}
        spec: dict[str, Any] = {}
        if held:
            spec["acquireTime"] = format_microtime(record.acquire_time) if record.acquire_time else now
            spec["leaseTransitions"] = record.transitions or 0
        else:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (record.transitions or 0) + (0 if record.holder == self.identity else 1)
        spec.update(common)
        return put_body(record, spec, member_labels(self.group), annotations)

    def mark(self, record: LeaseRecord, annotations: Mapping[str, str]) -> dict[str, Any]:
        """The same Lease with only annotations added (no spec change)."""
        return put_body(record, {}, dict(record.labels), annotations)
