"""What ``shardlease status`` shows, as a pure function of a group's Leases and a wall-clock "now".

The CLI prints it, ``LocalCluster`` snapshots it, the demo draws it. Built from the Leases alone, so it
works from a laptop against any cluster, without talking to the replicas.

Liveness and expiry here are a *display-only approximation*: a member or shard Lease counts as live
while it is held and ``renewTime + leaseDurationSeconds`` is not in the past by *this machine's* wall
clock. The replicas themselves never judge a peer that way (they time expiry with their own monotonic
clock from when they observed a change, see ``shardlease/core/elector.py``), so a skewed clock here can
make this view call a shard expired that no replica would, or the reverse. Membership, the group's shard
count and generation, the barrier of a switch and the desired holder of each shard come from the
replicas' own rules (``membership``, ``resharding``, ``assignment``).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shardlease.core.elector import Timing
from shardlease.core.loadbalance import LoadSnapshot, bounds, quantise
from shardlease.core.membership import Membership, compute_membership
from shardlease.core.records import (
    ANNOTATION_LOAD,
    ANNOTATION_LOAD_SNAPSHOT,
    ANNOTATION_PROBLEMS,
    ANNOTATION_REBALANCED,
    ANNOTATION_REFUSED,
    ROLE_MEMBER,
    ROLE_SHARD,
    LeaseRecord,
    group_lease_name,
    member_lease_name,
    parse_load,
    parse_problems,
    parse_refused,
)
from shardlease.core.resharding import GroupState, pending_shards

__all__ = ["FLAG_EXPIRED", "FLAG_MISPLACED", "FLAG_UNOWNED", "GroupView", "MemberRow", "ShardRow",
           "membership_at"]

FLAG_UNOWNED = "UNOWNED"
FLAG_EXPIRED = "EXPIRED"
FLAG_MISPLACED = "MISPLACED"


def membership_at(group: str, members: Iterable[LeaseRecord], now: _dt.datetime) -> Membership:
    """The replicas' membership rule applied from outside the group (``status``, ``reshard``): each
    record's ``renewTime`` stands in for the moment a replica would have observed it (see the module
    docstring), on this machine's wall clock."""
    return compute_membership(
        group, ((rec, rec.renew_time.timestamp() if rec.renew_time else float("-inf")) for rec in members),
        now.timestamp(), Timing(), seen_change_after=float("-inf"))


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
    """The count this member was configured with (its vote in a rollout); it runs the group's count."""
    live: bool
    age: float | None
    """Seconds since ``renewTime`` (wall clock of this machine); ``None`` if unknown."""
    eligible: bool = False
    """In the ring the replicas assign shards over: every live member, whatever count it was configured
    with (it follows the group's)."""
    generation: int | None = None
    """The generation this member runs (``0``: not joined one yet); ``None`` when its Lease does not say
    (a version of shardlease from before resharding). Older than the group's during a switch is normal."""
    capacity: float = 1.0
    """Its size relative to the others (docs/load.md)."""
    load: float | None = None
    """The sum of the smoothed loads of the shards it holds, as it last published them (``None``: none)."""
    share: float | None = None
    """That load as a part of the group's reported total (0..1); its fair part is ``fair_share``."""
    fair_share: float | None = None


@dataclass(frozen=True)
class ShardRow:
    shard: int
    holder: str | None
    """``None`` when the Lease is absent or released."""
    desired: str | None
    age: float | None
    transitions: int | None
    flags: tuple[str, ...]
    token: int | None = None
    """The fencing token its holder works under (the Lease's epoch above its transitions)."""
    load: float | None = None
    """Its smoothed load as its holder last renewed it (``None``: not reported)."""


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
    crash-looping or stuck handlers): each makes the summary say ATTENTION."""
    group_state: GroupState | None = None
    """The group Lease's state (count, generation, what changed it); ``None`` when the group has no
    readable group Lease (no replica of a version with resharding has run it yet)."""
    switch_pending: tuple[int, ...] = ()
    """While a switch to the current generation has not passed its barrier: the shards whose Lease is
    absent or not yet stamped with it. No handler of the generation starts before this is empty."""
    retired: tuple[int, ...] = ()
    """Shards at or past the count, below the span, that still have a Lease: an earlier generation used
    them; the oldest member deletes them once every member runs the current one."""
    changed_age: float | None = None
    """Seconds since the current generation was written (this machine's clock)."""
    load_snapshot: LoadSnapshot | None = None
    """The load snapshot the replicas assign from (``None``: they assign by count; docs/load.md)."""
    snapshot_age: float | None = None
    rebalanced: str | None = None
    """The last load rebalance as the group Lease records it: ``<time> <moves> <reason>``."""
    too_hot: tuple[int, ...] = ()
    """Shards hotter than any replica's bound on their own: moving them cannot help."""

    @property
    def generation(self) -> int | None:
        return self.group_state.generation if self.group_state is not None else None

    @property
    def previous_shards(self) -> int | None:
        return self.group_state.previous if self.group_state is not None else None

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
        from shardlease.core.assignment import assign

        member_records: dict[str, LeaseRecord] = {}
        shard_records: dict[int, LeaseRecord] = {}
        group_record: LeaseRecord | None = None
        notes: list[str] = []
        prefix = member_lease_name(group, "")
        for obj in objects:
            record = LeaseRecord.from_object(obj)
            if record is None or record.group != group:
                continue
            if record.name == group_lease_name(group):
                group_record = record
            elif record.role == ROLE_MEMBER:
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

        membership = membership_at(group, member_records.values(), now)
        live_records = [m.record for m in membership.live]
        state = GroupState.from_record(group_record) if group_record is not None else None
        if group_record is not None and state is None:
            notes.append(f"the group Lease {group_record.name} has no readable shard count or generation (edited "
                         f"by hand?): the replicas keep running the generation they run; fix or delete it")
        elif group_record is None and live_records:
            notes.append(f"no group Lease {group_lease_name(group)}: the count shown is the oldest live member's "
                         f"(the rule before resharding); a replica of a version with resharding creates it")
        if shards is None:
            # The group Lease when there is one; else the rule of the versions from before resharding.
            shards = state.count if state is not None else _shard_count(
                membership.group_count, member_records.values(), shard_records, notes)
        members = tuple(
            MemberRow(identity, rec.declared_shards, rec in live_records, _age(rec, now),
                      eligible=rec in live_records, generation=rec.member_generation)
            for identity, rec in sorted(member_records.items())
        )
        others = [f"{m.identity} ({_text(m.declared_shards)})" for m in members
                  if m.live and m.declared_shards != shards]
        if others:
            notes.append(f"members configured with another count follow the group's {shards}: {', '.join(others)}")
        span = state.span if state is not None else shards
        retired = tuple(sorted(s for s in shard_records if shards <= s < span))
        if retired:
            assert state is not None  # only a group Lease puts the span above the count
            notes.append(f"retired shards {list(retired)}: generation {state.generation} no longer uses them; "
                         f"their Leases are deleted once every member runs it")
        extra = sorted(s for s in shard_records if s >= max(span, shards))
        if extra:
            notes.append(f"shard Leases beyond the shard count {shards}: {extra}")
        pending = tuple(pending_shards(state, shard_records.get)) if state is not None else ()

        problems = _member_problems(member_records, live_records, now)
        ring = [m.identity for m in members if m.eligible]
        capacities = {m: member_records[m].capacity for m in ring}
        snapshot = LoadSnapshot.decode(group_record.annotations.get(ANNOTATION_LOAD_SNAPSHOT)) \
            if group_record is not None else None
        if snapshot is not None and (state is None or snapshot.generation != state.generation
                                     or snapshot.count != shards):
            snapshot = None  # another generation's: the replicas assign by count until the next one
        if shards and ring:
            desired = dict(enumerate(snapshot.assign(capacities).owners)) if snapshot is not None \
                else assign(group, shards, ring, load_factor)
        else:
            desired = {}
        members, too_hot = _with_loads(members, member_records, shards, desired, capacities, notes,
                                       snapshot.epsilon if snapshot is not None else 0.1)
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
                token=rec.token if rec is not None else None,
                load=parse_load(rec.annotations.get(ANNOTATION_LOAD)) if rec is not None else None,
            ))
        changed_age = (now - state.changed_at).total_seconds() if state is not None and state.changed_at else None
        return cls(group, namespace, shards, members, tuple(rows), tuple(notes), tuple(problems),
                   group_state=state, switch_pending=pending, retired=retired, changed_age=changed_age,
                   load_snapshot=snapshot,
                   snapshot_age=(now - snapshot.taken_at).total_seconds() if snapshot is not None else None,
                   rebalanced=group_record.annotations.get(ANNOTATION_REBALANCED) if group_record is not None else None,
                   too_hot=too_hot)

    @property
    def load_aware(self) -> bool:
        """Loads or capacities are in play: ``status`` then shows them."""
        return (self.load_snapshot is not None or any(m.load is not None or m.capacity != 1.0 for m in self.members)
                or any(r.load is not None for r in self.rows))

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
        if self.switch_pending:
            text += f"; switch to generation {self.generation} waiting for {len(self.switch_pending)} shards"
        healthy = (self.shards > 0 and not any(row.flags for row in self.rows) and not self.problems
                   and not self.switch_pending)
        return ("OK: " if healthy else "ATTENTION: ") + text

    # ---------------------------------------------------------------- output

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "namespace": self.namespace,
            "shards": self.shards,
            "generation": self.generation,
            "previous_shards": self.previous_shards,
            "changed_by": self.group_state.changed_by if self.group_state is not None else None,
            "changed_at": (self.group_state.changed_at.isoformat()
                           if self.group_state is not None and self.group_state.changed_at else None),
            "switch_pending": list(self.switch_pending),
            "retired": list(self.retired),
            "members": [{**asdict(m), "configured": m.declared_shards} for m in self.members],
            "shard_table": [
                {"shard": r.shard, "holder": r.holder, "desired": r.desired, "age": r.age,
                 "transitions": r.transitions, "token": r.token, "load": r.load, "flags": list(r.flags)}
                for r in self.rows
            ],
            "load": {
                "mode": "load" if self.load_snapshot is not None else "count",
                "snapshot": None if self.load_snapshot is None else {
                    "seq": self.load_snapshot.seq, "age": self.snapshot_age, "reason": self.load_snapshot.reason,
                    "epsilon": self.load_snapshot.epsilon, "max_moves": self.load_snapshot.max_moves},
                "last_rebalance": self.rebalanced,
                "too_hot": list(self.too_hot),
            },
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
        lines = [f"group {self.group!r} in namespace {self.namespace!r}: {self.shards} shards{self._generation_text()}"]
        if self.switch_pending:
            lines.append(f"switch in progress: waiting for shards {list(self.switch_pending)} (their Leases are "
                         f"stamped with generation {self.generation} once their old handlers have stopped)")
        lines.append("")
        lines.append(f"MEMBERS ({len(self.members)})")
        loads = self.load_aware
        lines.extend(_table(
            ("IDENTITY", "CONFIGURED", "GENERATION", "LIVE", "RENEWED")
            + (("CAPACITY", "LOAD", "SHARE", "FAIR") if loads else ()),
            [(m.identity, _text(m.declared_shards), _text(m.generation), "yes" if m.live else "NO", _ago(m.age))
             + ((f"{m.capacity:g}", _number(m.load), _percent(m.share), _percent(m.fair_share)) if loads else ())
             for m in self.members],
        ) if self.members else ["  (none)"])
        if loads:
            lines.append(self._load_text())
        lines.append("")
        lines.append("SHARDS")
        lines.extend(_table(
            ("SHARD", "HOLDER", "DESIRED", "RENEWED", "TRANSITIONS") + (("LOAD",) if loads else ()) + ("FLAGS",),
            [(str(r.shard), r.holder or "-", r.desired or "-", _ago(r.age), _text(r.transitions))
             + ((_number(r.load),) if loads else ()) + (",".join(r.flags),) for r in self.rows],
        ) if self.rows else ["  (no shard count known: no member declares one and no shard Lease exists)"])
        lines.append("")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"PROBLEM: {problem}" for problem in self.problems)
        lines.append(self.summary())
        return "\n".join(lines)

    def _load_text(self) -> str:
        """``load: by snapshot 3 (imbalance 1.31 > 1.15), taken 12s ago; last rebalance ...``."""
        snap = self.load_snapshot
        if snap is None:
            text = "load: assigned by count (no load snapshot for this generation yet)"
        else:
            text = (f"load: assigned by snapshot {snap.seq} ({snap.reason}), taken {_ago(self.snapshot_age)}; "
                    f"bound {1 + snap.epsilon:g} x fair share, at most {snap.max_moves} moves per snapshot")
        if self.rebalanced:
            when, _, rest = self.rebalanced.partition(" ")
            moves, _, reason = rest.partition(" ")
            text += f"; last rebalance {when}: {moves} move(s), {reason}"
        return text

    def _generation_text(self) -> str:
        """``, generation 3 (was 8; changed by reshard 12.0s ago)``; empty without a group Lease."""
        state = self.group_state
        if state is None:
            return ""
        history = [f"was {state.previous}"] if state.previous is not None else []
        if state.changed_by:
            history.append(f"changed by {state.changed_by}" + (f" {_ago(self.changed_age)}"
                                                                if self.changed_age is not None else ""))
        return f", generation {state.generation}" + (f" ({'; '.join(history)})" if history else "")

    def stable_key(self) -> tuple[Any, ...]:
        """Everything shown except the ages, to redraw only when something meaningful changed."""
        return (self.shards, self.group_state, self.switch_pending,
                tuple((m.identity, m.declared_shards, m.generation, m.live) for m in self.members),
                tuple((r.holder, r.desired, r.transitions, r.flags) for r in self.rows), self.notes,
                self.problems, self.load_snapshot)


def _member_problems(members: Mapping[str, LeaseRecord], live: Iterable[LeaseRecord],
                     now: _dt.datetime) -> list[str]:
    """Problems the replicas wrote on their member Leases, worded with the fix.

    A refused duplicate re-marks the live member Lease once per lease duration while it keeps trying,
    so a mark older than three lease durations is history, not a present problem.
    """
    live_set = {id(rec) for rec in live}
    found: list[str] = []
    for identity, rec in sorted(members.items()):
        refused = parse_refused(rec.annotations.get(ANNOTATION_REFUSED, ""))
        duration = rec.lease_duration_seconds or 15
        if refused is not None and (now - refused[1]).total_seconds() <= 3 * duration:
            found.append(f"identity {identity}: a second process with this identity (incarnation {refused[0]}) "
                         f"was refused and takes no shards; give every replica a unique --identity / POD_NAME")
        if id(rec) not in live_set:
            continue
        for key, value in parse_problems(rec.annotations.get(ANNOTATION_PROBLEMS, "")):
            if key == "crashing":
                found.append(f"member {identity}: handlers of shards {value} keep raising (see its logs and "
                             f"shardlease_handler_errors_total)")
            elif key == "stuck":
                found.append(f"member {identity}: handlers of shards {value} did not return within the drain "
                             f"timeout; their Leases stay held")
            elif key == "write-budget":
                needed, _, rate = value.partition("/")
                found.append(f"member {identity}: its Leases need {needed} writes/s even at the longest safe renew "
                             f"interval, over its --max-write-rate {rate}; raise --max-write-rate, run more "
                             f"replicas, or raise --renew-deadline and --lease-duration")
            elif key == "count-mismatch":
                # Written by versions from before resharding. Every member now follows the group's
                # count, so a configured count of its own is not a problem (the members table shows it).
                continue
            else:
                found.append(f"member {identity}: {key}" + (f"={value}" if value else ""))
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


def _with_loads(members: tuple[MemberRow, ...], records: Mapping[str, LeaseRecord], shards: int,
                desired: Mapping[int, str], capacities: Mapping[str, float], notes: list[str],
                epsilon: float) -> tuple[tuple[MemberRow, ...], tuple[int, ...]]:
    """The member rows with their capacity, load and share, and the shards too hot to be helped (each
    with a note), from the loads the live members publish."""
    from dataclasses import replace

    from shardlease.core.loadplan import live_loads

    live = {m.identity: records[m.identity] for m in members if m.eligible}
    reported = {m: {s: v for s, v in records[m].loads.items() if s < shards} for m in live}
    total = sum(sum(v.values()) for v in reported.values())
    capacity_total = sum(capacities.values()) or 1.0
    rows = tuple(replace(
        m, capacity=records[m.identity].capacity,
        load=sum(reported[m.identity].values()) if reported.get(m.identity) else None,
        share=(sum(reported[m.identity].values()) / total) if m.identity in reported and total > 0 else None,
        fair_share=capacities[m.identity] / capacity_total if m.identity in capacities else None,
    ) for m in members)
    if not shards or not live or total <= 0:
        return rows, ()
    loads = live_loads(shards, live, desired)
    quantised = quantise(loads)
    owners = [desired.get(i) for i in range(shards)]
    hot = tuple(sorted(bounds(capacities, owners, quantised, epsilon).hot))
    for shard in hot:
        notes.append(f"shard {shard} carries {quantised[shard] / sum(quantised):.0%} of the load, more than any "
                     f"replica's share: moving it cannot help; give its replica nothing else, raise that "
                     f"replica's capacity, or split the work into more shards")
    return rows, hot


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _ago(age: float | None) -> str:
    return "-" if age is None else f"{age:.1f}s ago"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
            for line in (header, *rows)]
