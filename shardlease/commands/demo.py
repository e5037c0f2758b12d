"""``shardlease demo``: a whole group on this machine, with a live view of who holds which shard.

It starts the embedded API server and N replica processes of ``shardlease run`` (through
:class:`~shardlease.harness.localcluster.LocalCluster`), then lets a newcomer add a replica, SIGTERM one or
SIGKILL one and watch the shard map rebalance, hand off and fail over, with the measured timings.

Keys (on a terminal): ``a`` add a replica, ``t`` SIGTERM one, ``k`` SIGKILL one, ``q`` quit.
Without a terminal, or with ``--script``, it plays a script of the same actions and exits, printing
a plain log: that is how the README's first command and the tests run it.

Timings default to a scaled-down lease (4 s) so that crash failover is visible without a long wait;
the ratios between lease, renew deadline and retry period are those of client-go's defaults.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from shardlease.commands.cluster import NAMESPACE_HELP, namespace_of

if TYPE_CHECKING:  # pragma: no cover
    from shardlease.harness.localcluster import LocalCluster, Snapshot

DEFAULT_SCRIPT = "settle; add; settle; term; settle; kill; settle; reshard 24; settle"

#: 256-colour ANSI background per replica index (distinct, readable with black text).
_COLOURS = (45, 214, 120, 207, 228, 141, 81, 210, 156, 183, 223, 117)


@dataclass(frozen=True)
class Step:
    """One action of a demo script."""

    action: str  # add | term | kill | wait | settle | reshard
    argument: str | None = None


def parse_script(text: str) -> list[Step]:
    """Parse ``"settle; add; wait 3; term replica-1; kill"`` into steps.

    Raises ``ValueError`` naming the bad step and listing the valid ones, so a typo in ``--script``
    fails before any process starts.
    """
    steps: list[Step] = []
    for raw in text.replace(",", ";").split(";"):
        words = raw.split()
        if not words:
            continue
        action, rest = words[0].lower(), words[1:]
        if action in ("add", "settle") and not rest:
            steps.append(Step(action))
        elif action in ("term", "kill") and len(rest) <= 1:
            steps.append(Step(action, rest[0] if rest else None))
        elif action == "reshard" and len(rest) == 1:
            if not rest[0].isdigit() or not 1 <= int(rest[0]) <= 4096:
                raise ValueError(f"--script: 'reshard' needs a shard count between 1 and 4096, got {rest[0]!r}")
            steps.append(Step(action, rest[0]))
        elif action == "wait" and len(rest) == 1:
            try:
                seconds = float(rest[0])
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds <= 3600:
                raise ValueError(f"--script: 'wait' needs seconds between 0 and 3600, got {rest[0]!r}")
            steps.append(Step(action, rest[0]))
        else:
            raise ValueError(
                f"--script: cannot read step {raw.strip()!r}; steps are 'add', 'term [IDENTITY]', "
                "'kill [IDENTITY]', 'reshard SHARDS', 'wait SECONDS' and 'settle', separated by ';'")
    return steps


@dataclass
class Event:
    """A disruption whose recovery is being timed: every shard of ``victim`` re-held elsewhere."""

    what: str
    victim: str
    sent: float
    shards: frozenset[int]


@dataclass
class DemoState:
    """What the view shows; updated from snapshots, rendered by :func:`render`."""

    holders: dict[int, str | None] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    pending: list[Event] = field(default_factory=list)
    colours: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    kubectl_hint: str | None = None
    """A ``KUBECONFIG=... kubectl get leases`` line to paste; kept on the screen (the log scrolls)."""

    def colour(self, identity: str) -> int:
        if identity not in self.colours:
            self.colours[identity] = _COLOURS[len(self.colours) % len(_COLOURS)]
        return self.colours[identity]

    def note(self, message: str, out: TextIO | None) -> None:
        stamped = f"[{time.monotonic() - self.started:6.2f}s] {message}"
        self.log.append(stamped)
        if out is not None:
            print(stamped, file=out, flush=True)

    def observe(self, snap: Snapshot, out: TextIO | None) -> None:
        """Log every change of holder and close the timings of disruptions that have recovered."""
        holders = snap.holders()
        for shard, holder in sorted(holders.items()):
            before = self.holders.get(shard)
            if shard in self.holders and holder != before:
                self.note(f"shard {shard:>3}: {before or '(free)'} -> {holder or '(free)'}", out)
        self.holders = holders
        for event in list(self.pending):
            if all(holders.get(s) and holders.get(s) != event.victim for s in event.shards):
                took = snap.taken - event.sent
                self.note(f"{event.what} {event.victim}: its {len(event.shards)} shards re-held "
                          f"by others {took:.2f} s after the signal", out)
                self.pending.remove(event)


def render(snap: Snapshot, state: DemoState, *, colour: bool, width: int = 8) -> str:
    """The full-screen view: shard map coloured by holder, members, recent handoffs, keys."""
    lines = [f"shardlease demo: group {snap.view.group!r}, {snap.shards} shards"]
    cells = []
    for shard, holder in sorted(snap.holders().items()):
        label = f"{shard:>3} {(holder or '-')[-10:]:<10}"
        if colour and holder:
            label = f"\x1b[30;48;5;{state.colour(holder)}m{label}\x1b[0m"
        elif colour:
            label = f"\x1b[2m{label}\x1b[0m"
        cells.append(label)
    for start in range(0, len(cells), width):
        lines.append(" ".join(cells[start:start + width]))
    lines.append("")
    load = snap.load()
    for member in snap.view.members:
        tag = f"{member.identity:<14}"
        if colour:
            tag = f"\x1b[30;48;5;{state.colour(member.identity)}m{tag}\x1b[0m"
        status = "live" if member.live else "expired"
        lines.append(f"{tag} {status:<8} {load.get(member.identity, 0):>4} shards")
    unowned = snap.unowned()
    lines.append(f"unowned: {unowned if unowned else 'none'}")
    lines.append("")
    lines.extend(state.log)
    lines.append("")
    if state.kubectl_hint:
        lines.append(f"try in another terminal: {state.kubectl_hint}")
    lines.append("keys: [a] add a replica  [t] SIGTERM one  [k] SIGKILL one  [r] reshard (x2 / back)  [q] quit")
    return "\n".join(lines)


@contextmanager
def _cbreak(stream: TextIO) -> Iterator[None]:
    """Single-key input without echo, restored on exit whatever happens."""
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Demo:
    """Drives a :class:`LocalCluster` from keys or a script and keeps :class:`DemoState` current."""

    def __init__(self, cluster: LocalCluster, out: TextIO, *, interactive: bool, colour: bool) -> None:
        self.cluster = cluster
        self.out = out
        self.interactive = interactive
        self.colour = colour
        self.state = DemoState()
        self.last: Snapshot | None = None
        self.resharded = False

    # -- observing
    def refresh(self) -> None:
        try:
            snap = self.cluster.snapshot()
        except Exception as exc:  # the view must survive a slow or restarting API server
            self.state.note(f"could not read the Leases: {exc}", None if self.interactive else self.out)
            return
        self.last = snap
        self.state.observe(snap, None if self.interactive else self.out)
        if self.interactive:
            self.out.write("\x1b[H\x1b[2J" + render(snap, self.state, colour=self.colour) + "\n")
            self.out.flush()

    def settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Recomputed every time: a replica that was just sent SIGTERM is still running for a
            # moment, and the expected membership changes when it exits.
            members = sorted(self.cluster.running_identities())
            desired = self.cluster.desired(members)
            self.refresh()
            if (self.last is not None and sorted(self.last.live_members()) == members
                    and self.last.holders() == desired and not self.state.pending):
                self.state.note(f"settled: {len(members)} replicas, every shard held by its "
                                "desired owner", None if self.interactive else self.out)
                return
            time.sleep(0.1)
        self.state.note(f"not settled after {timeout:.0f} s", None if self.interactive else self.out)

    # -- actions
    def add(self) -> None:
        replica = self.cluster.add_replica(self._next_identity())
        self.state.note(f"started {replica.identity} (pid {replica.pid})",
                        None if self.interactive else self.out)

    def signal(self, what: str, identity: str | None) -> None:
        running = [r for r in self.cluster.running() if not r.paused]
        if identity is not None:
            running = [r for r in running if r.identity == identity]
        if len(running) == 0 or (identity is None and len(running) < 2):
            self.state.note(f"{what}: no replica to stop (keeping at least one)",
                            None if self.interactive else self.out)
            return
        victim = running[0]
        held = frozenset(self.last.held_by(victim.identity)) if self.last else frozenset()
        sent = victim.terminate() if what == "SIGTERM" else victim.kill()
        self.state.pending.append(Event(what, victim.identity, sent, held))
        self.state.note(f"{what} {victim.identity} (held {len(held)} shards)",
                        None if self.interactive else self.out)

    def reshard(self, shards: int | None) -> None:
        """Change the group's count as ``shardlease reshard`` does (``None``: double it, or halve it
        back when it was doubled)."""
        from shardlease.client.leases import LeaseClient
        from shardlease.runtime.reshard import reshard_on

        store = LeaseClient(self.cluster.api_client(), self.cluster.namespace)
        if shards is None:
            current = self.last.shards if self.last is not None else self.cluster.shard_count
            shards = current // 2 if current > self.cluster.shard_count else current * 2
        try:
            result = reshard_on(store, self.cluster.group, shards, namespace=self.cluster.namespace)
        except Exception as exc:  # shown, not fatal: the demo goes on
            self.state.note(f"reshard to {shards} failed: {exc}", None if self.interactive else self.out)
            return
        self.resharded = True
        self.state.note(f"reshard: {result.before.count} -> {result.state.count} shards (generation "
                        f"{result.state.generation}); no handler of the new count starts before every old "
                        "one has stopped", None if self.interactive else self.out)

    def _next_identity(self) -> str:
        taken = {r.identity for r in self.cluster.replicas}
        index = 0
        while f"replica-{index}" in taken:
            index += 1
        return f"replica-{index}"

    # -- modes
    def play(self, steps: Sequence[Step], settle_timeout: float) -> None:
        for step in steps:
            if step.action == "add":
                self.add()
            elif step.action == "term":
                self.signal("SIGTERM", step.argument)
            elif step.action == "kill":
                self.signal("SIGKILL", step.argument)
            elif step.action == "wait":
                deadline = time.monotonic() + float(step.argument or 0)
                while time.monotonic() < deadline:
                    self.refresh()
                    time.sleep(0.1)
            elif step.action == "settle":
                self.settle(settle_timeout)
            elif step.action == "reshard":
                self.reshard(int(step.argument or 0))

    def interact(self, keys: TextIO) -> None:
        actions: dict[str, Callable[[], None]] = {
            "a": self.add,
            "t": lambda: self.signal("SIGTERM", None),
            "k": lambda: self.signal("SIGKILL", None),
            "r": lambda: self.reshard(None),
        }
        with _cbreak(keys):
            while True:
                self.refresh()
                ready, _, _ = select.select([keys], [], [], 0.2)
                if not ready:
                    continue
                key = os.read(keys.fileno(), 1).decode(errors="replace").lower()
                if key == "q":
                    return
                if key in actions:
                    actions[key]()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from shardlease.controlplane import ControlPlaneError
    from shardlease.harness.journal import find_key_overlaps, find_overlaps
    from shardlease.harness.localcluster import LocalCluster, Timings

    try:
        steps = parse_script(args.script) if args.script is not None else None
    except ValueError as exc:
        print(f"shardlease demo: {exc}", file=sys.stderr)
        return 2
    if args.replicas < 1 or args.shards < 1:
        print("shardlease demo: --replicas and --shards must be at least 1", file=sys.stderr)
        return 2
    interactive = steps is None and sys.stdin.isatty() and sys.stdout.isatty()
    if steps is None and not interactive:
        steps = parse_script(DEFAULT_SCRIPT)

    from shardlease.errors import ConfigError

    try:
        namespace = namespace_of(args).name
    except ConfigError as exc:
        print(f"shardlease demo: {exc}", file=sys.stderr)
        return 2

    # SIGTERM to the demo itself must clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    timings = Timings(lease_duration=args.lease_duration, renew_deadline=args.renew_deadline,
                      retry_period=args.retry_period)
    server: dict[str, Any] = {"devserver": "real", "assets": args.kube_assets} if args.kube_assets else {}
    cluster = LocalCluster(group="demo", shards=args.shards, timings=timings, namespace=namespace,
                           work_dir=args.work_dir, faults=False, **server)
    demo = Demo(cluster, sys.stdout, interactive=interactive, colour=interactive and not args.no_color)
    out = None if interactive else sys.stdout
    try:
        with cluster:
            try:
                cluster.start(replicas=0)
            except ControlPlaneError as exc:
                print(f"shardlease demo: {exc}", file=sys.stderr)
                return 1
            in_namespace = "" if namespace == "default" else f" -n {namespace}"
            demo.state.kubectl_hint = f"KUBECONFIG={cluster.kubeconfig} kubectl get leases{in_namespace}"
            demo.state.note(f"API server at {cluster.url}; kubeconfig {cluster.kubeconfig} "
                            f"(try: {demo.state.kubectl_hint})", out)
            for _ in range(args.replicas):
                demo.add()
            if interactive:
                demo.interact(sys.stdin)
            else:
                assert steps is not None
                demo.play(steps, settle_timeout=max(30.0, 4 * args.lease_duration))
            journal = cluster.journal()
            work = [e for e in journal if e.kind == "work"]
            overlaps: list[Any] = list(find_overlaps(journal))
            if demo.resharded:  # shard ids of two counts share keys: check the keys themselves
                overlaps += find_key_overlaps(journal, [f"key-{i}" for i in range(200)])
    except KeyboardInterrupt:
        print("\nstopping: every replica gets SIGTERM and releases its shards", file=sys.stderr)
        return 130
    finally:
        cluster.stop()
    what = "no shard (and no key, across counts) ever ran" if demo.resharded else "no shard ever ran"
    print(f"checked {len(work)} units of work: "
          + (f"{what} in two replicas at once" if not overlaps
             else f"{len(overlaps)} OVERLAPS: {overlaps[:3]}"))
    print(f"logs and journal: {cluster.work_dir}")
    return 0 if not overlaps else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a local group (API server + replicas) with a live shard map",
        description=(
            "Run a whole shard group on this machine (an embedded Kubernetes API server and replica "
            "processes of `shardlease run`) with a live view of which replica holds which shard. On a "
            "terminal, keys: a adds a replica, t sends SIGTERM to one, k sends SIGKILL to one, r doubles "
            "the shard count (or halves it back) while the group runs, q quits. "
            "Without a terminal, or with --script, it plays a script of the same steps and exits."),
    )
    parser.add_argument("--replicas", type=int, default=3, help="replicas to start (default 3)")
    parser.add_argument("--namespace", default=None, metavar="NS", help=NAMESPACE_HELP)
    parser.add_argument("--shards", type=int, default=16, help="shard count (default 16)")
    parser.add_argument(
        "--script", default=None,
        help=f"play these steps and exit instead of reading keys, e.g. {DEFAULT_SCRIPT!r} "
             "(the default when stdin is not a terminal)")
    parser.add_argument("--lease-duration", type=float, default=4.0, help="seconds (default 4)")
    parser.add_argument("--renew-deadline", type=float, default=2.5, help="seconds (default 2.5)")
    parser.add_argument("--retry-period", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--work-dir", default=None, help="where logs and the journal go (default: a temp dir)")
    parser.add_argument("--no-color", action="store_true", help="plain text view")
    parser.add_argument("--kube-assets", metavar="DIR", default=None,
                        help="run the demo on a real etcd + kube-apiserver built into DIR by "
                             "scripts/build-kube-assets (default: the embedded dev-server)")
    parser.set_defaults(func=_run)
