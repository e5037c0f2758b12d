"""The contract with the cluster: Lease names, labels, and a tolerant reading of Lease objects.

Everything another tool (kubectl users, ``shardlease status``, dashboards) may rely on is spelled out
here once. Lease objects are handled as plain JSON dicts, not as the ``kubernetes`` client's models:
model (de)serialisation costs far more than the JSON itself and sits on the renew hot path.

Reading is deliberately forgiving. A Lease of the group may have been written by another tool or by
hand; a malformed field is read as "unknown" (``None``) rather than raising, so a broken record can
never crash a replica. Decisions then treat unknown values conservatively.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shardlease.errors import InvalidArgument

LABEL_GROUP = "shardlease.io/group"
LABEL_ROLE = "shardlease.io/role"
LABEL_SHARD = "shardlease.io/shard"
ANNOTATION_SHARDS = "shardlease.io/shards"
#: A random id per process, written on the member Lease and on every shard Lease that process writes.
#: Two processes started with one identity (a copied manifest, a laptop's hostname) differ here, so
#: neither mistakes the other's Lease for its own.
ANNOTATION_INCARNATION = "shardlease.io/incarnation"
#: Set on the live member Lease by a second process that was refused for using the same identity:
#: ``"<its incarnation> <RFC 3339 time>"``. ``shardlease status`` reports it while it is recent.
ANNOTATION_REFUSED = "shardlease.io/refused-duplicate"
#: A member's own health summary, renewed with its member Lease: ``;``-separated ``key=value`` pairs
#: (``crashing=3,5`` for handlers that keep raising, ``stuck=2`` for handlers past the drain timeout).
ANNOTATION_PROBLEMS = "shardlease.io/problems"
#: The generation a Lease was last written under (docs/resharding.md). On a shard Lease: the
#: group generation of the write that acquired, converted, released or retired it (absent: 1, the
#: generation of every Lease written before resharding existed). On a member Lease: the generation
#: that member runs (``0``: it has not joined one yet). On the group Lease: the current generation.
ANNOTATION_GENERATION = "shardlease.io/generation"
#: On a shard Lease: when this Lease object was created, in milliseconds since the Unix epoch, and at
#: least one above any epoch its creator had seen for the shard (absent: 0, a Lease created before
#: epochs existed). ``leaseTransitions`` starts again at 0 when a Lease is deleted and created anew (by
#: an operator, a namespace re-created, an API server that lost its state); the epoch is what keeps the
#: fencing token (:func:`fencing_token`) growing across such a re-creation. See docs/guarantees.md.
ANNOTATION_EPOCH = "shardlease.io/epoch"
#: A fencing token is ``epoch * 2**TOKEN_EPOCH_SHIFT + leaseTransitions``. A Lease that lived for
#: ``d`` milliseconds would need more than ``d * 2**20`` transitions (about a million a millisecond) to
#: reach the tokens of a Lease created after it, so the order holds whatever the transitions count.
TOKEN_EPOCH_SHIFT = 20
#: On the group Lease: one past the highest shard index any generation may still hold a Lease for.
ANNOTATION_SPAN = "shardlease.io/span"
#: On the group Lease: the count most members were configured with when the group last changed.
ANNOTATION_BASIS = "shardlease.io/basis"
#: On the group Lease: the count of the generation before, and what made the last change.
ANNOTATION_PREVIOUS = "shardlease.io/previous-shards"
ANNOTATION_CHANGED_BY = "shardlease.io/changed-by"

#: On a member Lease: that replica's capacity, a number > 0 (absent or unreadable: 1). docs/load.md.
ANNOTATION_CAPACITY = "shardlease.io/capacity"
#: On a member Lease: the smoothed loads of the shards it holds that reported one, ``3=12.5,7=0.25``
#: (:func:`format_loads`). The oldest member reads every shard's load here, from the member Leases every
#: replica watches anyway, rather than watching every shard Lease.
ANNOTATION_LOADS = "shardlease.io/loads"
#: On a shard Lease: its smoothed load as its holder last renewed it (absent: no report).
ANNOTATION_LOAD = "shardlease.io/load"
#: On the group Lease: the load snapshot every replica assigns from (core.loadbalance.LoadSnapshot).
ANNOTATION_LOAD_SNAPSHOT = "shardlease.io/load-snapshot"
#: On the group Lease: the last load rebalance, ``<RFC 3339 time> <moves> <reason>``.
ANNOTATION_REBALANCED = "shardlease.io/rebalanced"

ROLE_SHARD = "shard"
ROLE_MEMBER = "member"
ROLE_GROUP = "group"

LEASE_API_VERSION = "coordination.k8s.io/v1"


def shard_lease_name(group: str, shard: int) -> str:
    return f"{group}-shard-{shard}"


def member_lease_name(group: str, identity: str) -> str:
    return f"{group}-member-{identity}"


def group_lease_name(group: str) -> str:
    """The one Lease that holds the group's shard count and generation (docs/resharding.md)."""
    return f"{group}-group"


def group_selector(group: str) -> str:
    """Label selector matching every Lease (shards and members) of one group."""
    return f"{LABEL_GROUP}={group}"


def member_selector(group: str) -> str:
    """Label selector matching the member Leases of one group."""
    return f"{LABEL_GROUP}={group},{LABEL_ROLE}={ROLE_MEMBER}"


def members_and_group_selector(group: str) -> str:
    """Label selector matching the member Leases and the group Lease: what every replica watches whole."""
    return f"{LABEL_GROUP}={group},{LABEL_ROLE} in ({ROLE_GROUP},{ROLE_MEMBER})"


def shard_selector(group: str, shards: Iterable[int] | None = None) -> str:
    """Label selector matching the shard Leases of one group, or only those of ``shards``."""
    base = f"{LABEL_GROUP}={group},{LABEL_ROLE}={ROLE_SHARD}"
    if shards is None:
        return base
    return f"{base},{LABEL_SHARD} in ({','.join(str(i) for i in sorted(shards))})"


def shard_labels(group: str, shard: int) -> dict[str, str]:
    return {LABEL_GROUP: group, LABEL_ROLE: ROLE_SHARD, LABEL_SHARD: str(shard)}


def member_labels(group: str) -> dict[str, str]:
    return {LABEL_GROUP: group, LABEL_ROLE: ROLE_MEMBER}


def group_labels(group: str) -> dict[str, str]:
    return {LABEL_GROUP: group, LABEL_ROLE: ROLE_GROUP}


def format_microtime(moment: _dt.datetime) -> str:
    """Format as Kubernetes MicroTime: UTC with exactly six fractional digits.

    ``datetime.isoformat()`` drops the fraction when it is zero, which kube-apiserver rejects.
    """
    if moment.tzinfo is None:
        raise InvalidArgument("MicroTime needs an aware datetime")
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_microtime(value: Any) -> _dt.datetime | None:
    """Parse a MicroTime (or RFC 3339) string; ``None`` for anything unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed


def fencing_token(epoch: int, transitions: int) -> int:
    """The token a tenure is fenced with: the Lease's epoch above its ``leaseTransitions`` (see
    :data:`TOKEN_EPOCH_SHIFT`). Equal to ``leaseTransitions`` on a Lease without an epoch, so tokens
    handed out before epochs existed keep their order against the ones handed out after."""
    return (epoch << TOKEN_EPOCH_SHIFT) + transitions


def epoch_millis(wall: _dt.datetime) -> int:
    """``wall`` in whole milliseconds since the Unix epoch: what a new shard Lease's epoch starts from."""
    return int(wall.timestamp() * 1000)


def _int_or_none(value: Any) -> int | None:
    # bool is an int subclass; a JSON true is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def format_problems(*, crashing: Iterable[int] = (), stuck: Iterable[int] = (),
                    write_budget: tuple[float, float] | None = None) -> str:
    """The ``shardlease.io/problems`` value: ``crashing=3,5;stuck=2;write-budget=12.5/10``, ``""`` when all
    is well. ``write_budget`` is (writes/s needed at the longest safe renew interval, ``max_write_rate``)
    while the budget cannot be met. (Versions before resharding also wrote ``count-mismatch=8/16``;
    :func:`parse_problems` still reads it.)"""
    parts = []
    for key, shards in (("crashing", sorted(crashing)), ("stuck", sorted(stuck))):
        if shards:
            parts.append(f"{key}=" + ",".join(map(str, shards)))
    if write_budget is not None:
        parts.append(f"write-budget={write_budget[0]:.3g}/{write_budget[1]:g}")
    return ";".join(parts)


def parse_problems(value: str) -> list[tuple[str, str]]:
    """``(key, value)`` pairs of a ``shardlease.io/problems`` value, in order; unknown keys are kept."""
    return [(key, rest) for key, _, rest in (item.partition("=") for item in value.split(";") if item)]


def format_load(value: float) -> str:
    """A load as annotations carry it: 4 significant digits (``12.5``, ``0.003``, ``1.235e+04``)."""
    return f"{value:.4g}"


def parse_load(value: str | None) -> float | None:
    """A load annotation; ``None`` when absent or not a finite number >= 0."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 and number != float("inf") else None


def format_loads(loads: Mapping[int, float]) -> str:
    """The ``shardlease.io/loads`` value: ``3=12.5,7=0.25`` in shard order, ``""`` for none."""
    return ",".join(f"{shard}={format_load(loads[shard])}" for shard in sorted(loads))


def parse_loads(value: str | None) -> dict[int, float]:
    """Shard -> load of a ``shardlease.io/loads`` value; unreadable items are skipped."""
    result: dict[int, float] = {}
    for item in (value or "").split(","):
        key, _, text = item.partition("=")
        load = parse_load(text)
        if key.isdigit() and load is not None:
            result[int(key)] = load
    return result


def format_refused(incarnation: str, when: _dt.datetime) -> str:
    """The ``shardlease.io/refused-duplicate`` value: the refused process's incarnation and when."""
    return f"{incarnation} {format_microtime(when)}"


def parse_refused(value: str) -> tuple[str, _dt.datetime] | None:
    """``(incarnation, when)`` of a ``shardlease.io/refused-duplicate`` value; ``None`` if unreadable."""
    incarnation, _, stamp = value.partition(" ")
    when = parse_microtime(stamp) if stamp else None
    return (incarnation, when) if incarnation and when is not None else None


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One Lease as last seen, reduced to what shardlease decides on.

    ``holder`` is ``""`` for a released Lease and ``None`` when the field is absent or not a string.
    ``raw`` keeps the whole object so a conditional PUT can send it back with only the spec changed.
    """

    name: str
    namespace: str
    resource_version: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    holder: str | None
    lease_duration_seconds: int | None
    acquire_time: _dt.datetime | None
    renew_time: _dt.datetime | None
    transitions: int | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def role(self) -> str | None:
        return self.labels.get(LABEL_ROLE)

    @property
    def group(self) -> str | None:
        return self.labels.get(LABEL_GROUP)

    @property
    def shard(self) -> int | None:
        """The shard index from the label, or ``None`` if it is missing or not a decimal number."""
        value = self.labels.get(LABEL_SHARD)
        if value is None or not value.isdigit():
            return None
        return int(value)

    @property
    def is_held(self) -> bool:
        return bool(self.holder)

    @property
    def declared_shards(self) -> int | None:
        """A member's shard count from its annotation, ``None`` if missing or unreadable."""
        value = self.annotations.get(ANNOTATION_SHARDS)
        if value is None or not value.isdigit():
            return None
        return int(value)

    @property
    def generation(self) -> int:
        """The generation this Lease was written under; 1 when absent or unreadable (a Lease written
        before resharding existed belongs to the first generation)."""
        value = self.annotations.get(ANNOTATION_GENERATION)
        return int(value) if value is not None and value.isdigit() and int(value) > 0 else 1

    @property
    def member_generation(self) -> int | None:
        """On a member Lease: the generation that member runs (``0``: none yet); ``None`` when the
        annotation is absent, i.e. the member runs a version that does not know generations."""
        value = self.annotations.get(ANNOTATION_GENERATION)
        return int(value) if value is not None and value.isdigit() else None

    @property
    def epoch(self) -> int:
        """On a shard Lease: its creation epoch (:data:`ANNOTATION_EPOCH`); 0 when absent or unreadable."""
        value = self.annotations.get(ANNOTATION_EPOCH)
        return int(value) if value is not None and value.isdigit() else 0

    @property
    def token(self) -> int:
        """The fencing token of the current tenure: epoch and ``leaseTransitions`` (see :func:`fencing_token`)."""
        return fencing_token(self.epoch, self.transitions or 0)

    @property
    def capacity(self) -> float:
        """On a member Lease: its capacity; 1.0 when absent or not a finite number > 0."""
        value = parse_load(self.annotations.get(ANNOTATION_CAPACITY))
        return value if value is not None and value > 0 else 1.0

    @property
    def loads(self) -> dict[int, float]:
        """On a member Lease: the smoothed loads of the shards it holds (:data:`ANNOTATION_LOADS`)."""
        return parse_loads(self.annotations.get(ANNOTATION_LOADS))

    @property
    def incarnation(self) -> str | None:
        """The writing process's incarnation id, ``None`` when absent (older versions, other tools)."""
        return self.annotations.get(ANNOTATION_INCARNATION) or None

    @property
    def spec_key(self) -> tuple[object, ...]:
        """What client-go compares to notice that a record changed (it compares the spec bytes)."""
        spec = self.raw.get("spec")
        return tuple(sorted(spec.items())) if isinstance(spec, dict) else ()

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> LeaseRecord | None:
        """Read a Lease dict as the API returns it; ``None`` if it lacks a name (not a usable Lease)."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            return None
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            return None
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            spec = {}
        labels = meta.get("labels")
        annotations = meta.get("annotations")
        holder = spec.get("holderIdentity")
        return cls(
            name=name,
            namespace=str(meta.get("namespace") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            annotations=(
                {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {}
            ),
            holder=holder if isinstance(holder, str) else None,
            lease_duration_seconds=_int_or_none(spec.get("leaseDurationSeconds")),
            acquire_time=parse_microtime(spec.get("acquireTime")),
            renew_time=parse_microtime(spec.get("renewTime")),
            transitions=_int_or_none(spec.get("leaseTransitions")),
            raw=obj,
        )
