"""What ``shardlease status`` shows, as a pure function of a group's Leases and a wall-clock "now".

The CLI prints it, ``LocalCluster`` snapshots it, the demo draws it. Built from the Leases alone, so it
works from a laptop against any cluster, without talking to the replicas.

Liveness and expiry here are a *display-only approximation*: a member or shard Lease counts as live
while it is held and ``renewTime + leaseDurationSeconds`` is not in the past by *this machine's* wall
clock. The replicas themselves never judge a peer that way (they time expiry with their own monotonic
clock from when they observed a change, see ``shardlease/core/elector.py``), so a skewed clock here can
make this view call a shard expired that no replica would, or the reverse. Membership, the group's shard
count and the desired holder of each shard come from the replicas' own rules (``membership``,
``assignment``).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shardlease.core.elector import Timing
from shardlease.core.membership import compute_membership
from shardlease.core.records import (
    ANNOTATION_PROBLEMS,
    ANNOTATION_REFUSED,
    ROLE_MEMBER,
    ROLE_SHARD,
    LeaseRecord,
    member_lease_name,
    parse_problems,
    parse_refused,
)

__all__ = ["FLAG_EXPIRED", "FLAG_MISPLACED", "FLAG_UNOWNED", "GroupView", "MemberRow", "ShardRow"]

FLAG_UNOWNED = "UNOWNED"
FLAG_EXPIRED = "EXPIRED"
FLAG_MISPLACED = "MISPLACED"




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
        from shardlease.core.assignment import assign

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
        # The replicas' own rule (shardlease.core.membership), with each record's renewTime standing in for
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
            elif key == "count-mismatch":
                configured, _, group_count = value.partition("/")
                found.append(f"member {identity}: configured for {configured} shards, the group uses "
                             f"{group_count}; it takes no shards until every replica runs one count")
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


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _ago(age: float | None) -> str:
    return "-" if age is None else f"{age:.1f}s ago"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
            for line in (header, *rows)]
