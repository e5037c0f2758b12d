"""The examples, run the way their README says: real ``shardlease run`` processes against a dev-server.

Timings are scaled down (lease 2 s, renew deadline 1.2 s, retry 0.3 s) so moves happen within seconds;
the bounds on waits are generous because the machine is small and shared.

* The logging handlers (sync and async) must log ``took shard``/``gave up shard`` in step with the
  Leases, through start, a rebalance (a third replica joins) and a graceful stop (SIGTERM).
* The ConfigMap controller (on ``shard.objects``, with and without server-side filtering) must, across a
  rebalance, a SIGKILL of one of four replicas and churn, leave every ConfigMap
  annotated by a live replica with its shard's current fencing token, never have two replicas writing
  for one shard at the same time, never let an object's token go backwards, and send only the
  ConfigMap verbs its Role in ``deploy/overlays/example`` grants (and use all of them).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shardlease import shard_for_object
from shardlease.harness.localcluster import LocalCluster, Timings, child_processes

REPO = Path(__file__).resolve().parents[2]
FAST = Timings(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3)
SETTLE = 45.0  # seconds; typical is 2-6 s, but CI machines here are small and shared

TOOK = re.compile(r"took shard (\d+)/(\d+) \(token (\d+)\)")
GAVE_UP = re.compile(r"gave up shard (\d+)/(\d+) \(token (\d+)\)")

pytestmark = pytest.mark.timeout(180)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{detail()}")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------------
# minimal.py and async_handler.py: the log tells the same story as the Leases


def logged_holdings(log: str) -> dict[int, int]:
    """Shard -> token of every shard the log says is held now (taken and not yet given up)."""
    held: dict[int, int] = {}
    for line in log.splitlines():
        if m := TOOK.search(line):
            held[int(m[1])] = int(m[3])
        elif m := GAVE_UP.search(line):
            held.pop(int(m[1]), None)
    return held


def logs_match_leases(cluster: LocalCluster) -> Callable[[], bool]:
    """Each running replica's log names exactly the shards (and tokens) its Leases say it holds."""

    def check() -> bool:
        snap = cluster.snapshot()
        if not snap.all_held(cluster.running_identities()):
            return False
        tokens = snap.tokens()
        for replica in cluster.running():
            expected = {shard: tokens[shard] for shard in snap.held_by(replica.identity)}
            if logged_holdings(replica.log_text()) != expected:
                return False
        return True

    return check


@pytest.mark.parametrize("module", ["minimal", "async_handler"])
def test_logging_handler_follows_its_shards(module: str, tmp_path: Path) -> None:
    shards = 8
    with LocalCluster(
        handler=f"examples.{module}:handle", group=f"ex-{module.replace('_', '-')}", shards=shards,
        timings=FAST, work_dir=tmp_path, cwd=str(REPO),
    ) as cluster:
        cluster.start(replicas=2)
        cluster.wait_settled(SETTLE)
        wait_until(logs_match_leases(cluster), SETTLE, "logs to match the Leases", cluster.diagnostics)

        # Rebalance: a third replica joins. Most moved shards go to it (bounded-load hashing may also
        # shift a few between the others); every moved shard must be given up by its old owner.
        before = cluster.snapshot().holders()
        joiner = cluster.add_replica()
        after = cluster.wait_settled(SETTLE).holders()
        moved = [s for s in range(shards) if after[s] != before[s]]
        assert joiner.identity in after.values(), (before, after)
        wait_until(logs_match_leases(cluster), SETTLE, "logs to match after the rebalance",
                   cluster.diagnostics)
        for shard in moved:
            assert re.search(rf"gave up shard {shard}/{shards} ", cluster.replica(before[shard]).log_text())

        # Graceful stop: the leaver's handlers all return (for the async one: after cancellation).
        leaver = cluster.replicas[0]
        leaver.terminate()
        assert leaver.wait(30) == 0, cluster.diagnostics()
        log = leaver.log_text()
        assert len(TOOK.findall(log)) == len(GAVE_UP.findall(log)) > 0, log[-3000:]
        assert logged_holdings(log) == {}
        cluster.wait_settled(SETTLE)
        wait_until(logs_match_leases(cluster), SETTLE, "logs to match after the stop", cluster.diagnostics)
        assert "Traceback" not in "".join(r.log_text() for r in cluster.replicas), cluster.diagnostics()
    assert_no_replica_left(cluster)


def assert_no_replica_left(cluster: LocalCluster) -> None:
    left = {r.pid for r in cluster.replicas} & set(child_processes())
    assert not left, f"replica processes still running after the cluster stopped: {sorted(left)}"


# --------------------------------------------------------------------------------------------------
# configmap_controller.py


@dataclass
class Attempt:
    """One write attempt from the controller's journal: [start, end] in ``time.monotonic()``."""

    identity: str
    key: str
    uid: str
    shard: int
    token: int
    start: float
    end: float | None
    outcome: str | None
    #: The shard's generation when written (a count change starts a new one, and shard ids with it).
    generation: int = 0


def load_attempts(journal_dir: Path) -> list[Attempt]:
    """Pair each file's ``begin``/``end`` lines; an unmatched ``begin`` is an attempt cut short."""
    attempts: list[Attempt] = []
    for path in sorted(journal_dir.glob("*.jsonl")):
        lines = path.read_text().splitlines()
        open_: dict[tuple[str, int], Attempt] = {}
        for number, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                assert number == len(lines) - 1, f"{path}:{number + 1} is not JSON: {line!r}"
                continue  # a torn last line from a SIGKILL
            ident = (rec["key"], rec["token"])
            if rec["event"] == "skip":  # stopped by valid(): nothing was sent
                continue
            if rec["event"] == "begin":
                assert ident not in open_, f"{path}: two open attempts for {ident}"
                attempt = Attempt(rec["identity"], rec["key"], rec["uid"], rec["shard"], rec["token"], rec["at"],
                                  None, None, rec.get("generation", 0))
                open_[ident] = attempt
                attempts.append(attempt)
            else:
                attempt = open_.pop(ident)
                attempt.end, attempt.outcome = rec["at"], rec["outcome"]
    return attempts


def latest_writes(attempts: list[Attempt]) -> dict[str, Attempt]:
    """Key -> the last successful write (by end time)."""
    latest: dict[str, Attempt] = {}
    for a in sorted((a for a in attempts if a.outcome == "written"), key=lambda a: a.end or 0.0):
        latest[a.key] = a
    return latest


def request_counts(cluster: LocalCluster) -> dict[tuple[str, str], int]:
    return dict(cluster.server.request_counts())


def reset_request_counts(cluster: LocalCluster) -> None:
    """Zero the dev-server's counters (admin endpoint, present when faults are enabled)."""
    req = urllib.request.Request(cluster.url + "/_shardlease/requests", method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    assert not request_counts(cluster)


def overlay_configmap_verbs() -> set[str]:
    role = yaml.safe_load((REPO / "deploy/overlays/example/configmap-role.yaml").read_text())
    return {v for rule in role["rules"] if "configmaps" in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("gate", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["server-filtered", "client-filtered"])
def test_configmap_controller_survives_rebalance_sigkill_and_churn(tmp_path: Path, gate: bool) -> None:
    """Three replicas, a fourth joins (rebalance), one is SIGKILLed (failover), then users strip the
    annotations of some ConfigMaps (churn): every object ends stamped by its shard's holder, and the
    journal shows no two replicas writing for one shard (so for one object) at once."""
    from kubernetes.client import CoreV1Api

    shards, count, namespace = 16, 200, "default"
    journal_dir = tmp_path / "cm-journal"
    with LocalCluster(
        handler="examples.configmap_controller:handle", group="cmctl", shards=shards, namespace=namespace,
        timings=FAST, work_dir=tmp_path / "cluster", cwd=str(REPO),
        env={"CONFIGMAP_JOURNAL_DIR": str(journal_dir), "CONFIGMAP_NAMESPACE": namespace},
        feature_gates={"ShardedListAndWatch": True} if gate else None,
    ) as cluster:
        cluster.start()
        core = CoreV1Api(cluster.api_client())
        keys = set()
        for i in range(count):
            name = f"cm-{i:03d}"
            core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": {"n": str(i)}},
                                              _preload_content=False)
            keys.add(f"{namespace}/{name}")
        # From here on only the replicas touch ConfigMaps (progress is read from the journal), so the
        # dev-server's ConfigMap counters are exactly the controller's requests.
        reset_request_counts(cluster)

        def report() -> str:
            attempts = load_attempts(journal_dir) if journal_dir.exists() else []
            return f"{len(attempts)} attempts in the journal\n{cluster.diagnostics()}"

        def all_written_by(identities: set[str]) -> Callable[[], bool]:
            def check() -> bool:
                latest = latest_writes(load_attempts(journal_dir)) if journal_dir.exists() else {}
                return set(latest) == keys and {a.identity for a in latest.values()} <= identities
            return check

        cluster.start(replicas=3)
        wait_until(all_written_by({r.identity for r in cluster.replicas}), SETTLE, "every ConfigMap reconciled",
                   report)
        cluster.wait_settled(SETTLE)
        # A fourth replica joins: the shards it takes are listed afresh there and re-stamped with its tokens.
        cluster.start(replicas=1)
        everyone = {r.identity for r in cluster.replicas}
        cluster.wait_settled(SETTLE)
        newcomer = cluster.replicas[-1].identity
        wait_until(lambda: newcomer in {a.identity for a in latest_writes(load_attempts(journal_dir)).values()},
                   SETTLE, "the newcomer to reconcile the ConfigMaps of its shards", report)

        victim = cluster.replicas[0]
        assert cluster.snapshot().held_by(victim.identity), "the victim holds no shards: a vacuous kill"
        killed_at = victim.kill()
        assert victim.wait(10) is not None
        survivors = everyone - {victim.identity}
        wait_until(all_written_by(survivors), SETTLE, "the victim's ConfigMaps reconciled again", report)
        cluster.wait_settled(SETTLE)

        # Read before check_final_state lists ConfigMaps itself.
        controller_counts = {v for (v, r) in request_counts(cluster) if r == "configmaps"}
        # Churn: annotations stripped from 20 ConfigMaps; their holders see the change and stamp again.
        stripped = sorted(keys)[::10]
        before = len([a for a in load_attempts(journal_dir) if a.outcome == "written"])
        for key in stripped:
            core.patch_namespaced_config_map(key.split("/")[1], namespace, {"metadata": {"annotations": {
                "shardlease.io/reconciled-by": None, "shardlease.io/fence": None}}})
        wait_until(lambda: len([a for a in load_attempts(journal_dir) if a.outcome == "written"])
                   >= before + len(stripped), SETTLE, "the stripped ConfigMaps stamped again", report)
        check_final_state(core, namespace, keys, shards, survivors, cluster)

    assert_no_replica_left(cluster)
    # Read after the graceful stop of the survivors, so the only unfinished attempts are the victim's.
    attempts = load_attempts(journal_dir)

    # ---- the journal: mutual exclusion per shard, tokens only grow ----
    assert sum(1 for a in attempts if a.outcome == "written") >= count
    # The victim's ConfigMaps were taken over: rewritten by a survivor with a larger token.
    latest = latest_writes(attempts)
    victim_tokens: dict[str, int] = {}
    for a in attempts:
        if a.identity == victim.identity and a.outcome == "written":
            victim_tokens[a.key] = max(a.token, victim_tokens.get(a.key, -1))
    assert victim_tokens, "the victim wrote nothing before the kill; the failover proves nothing"
    for key, token in victim_tokens.items():
        assert latest[key].identity in survivors and latest[key].token > token, (key, token, latest[key])
    for a in attempts:
        assert a.shard == shard_for_object({"metadata": {"uid": a.uid}}, shards), \
            f"{a.key} written under the wrong shard {a.shard}"
        if a.end is None:
            assert a.identity == victim.identity, f"unfinished attempt from a live replica: {a}"
            a.end = killed_at  # cut short by the SIGKILL: it lasted at most until then
    assert not find_overlaps(attempts), "\n".join(find_overlaps(attempts)[:20])
    assert not token_regressions(attempts), "\n".join(token_regressions(attempts)[:20])

    # ---- RBAC: the overlay's ConfigMap Role grants exactly what the controller sent ----
    granted = overlay_configmap_verbs()
    assert controller_counts <= granted, f"controller sent {controller_counts - granted} not in the Role"
    assert granted <= controller_counts, f"Role grants {granted - controller_counts}, never used"


def find_overlaps(attempts: list[Attempt]) -> list[str]:
    """Pairs of attempts on one shard by different replicas whose [start, end] spans intersect.

    Sweeps each shard's attempts by start time, remembering the latest end seen per replica, so a long
    attempt is compared with every later one, not just with its neighbour.
    """
    problems: list[str] = []
    by_shard: dict[int, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_shard[a.shard].append(a)
    for shard, items in sorted(by_shard.items()):
        latest_end: dict[str, Attempt] = {}
        for a in sorted(items, key=lambda a: a.start):
            assert a.end is not None, f"unfinished attempt left in the check: {a}"
            for identity, prior in latest_end.items():
                if identity != a.identity and prior.end is not None and prior.end > a.start:
                    problems.append(f"shard {shard}: {identity} wrote {prior.key} until {prior.end:.4f}, "
                                    f"{a.identity} began {a.key} at {a.start:.4f}")
            kept = latest_end.get(a.identity)
            if kept is None or (kept.end or 0.0) < a.end:
                latest_end[a.identity] = a
    return problems


def token_regressions(attempts: list[Attempt]) -> list[str]:
    """Objects whose successful writes, in completion order, carry a smaller token than an earlier one."""
    by_key: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        if a.outcome == "written":
            by_key[a.key].append(a)
    problems = []
    for key, writes in sorted(by_key.items()):
        tokens = [a.token for a in sorted(writes, key=lambda a: a.end or 0.0)]
        if tokens != sorted(tokens):
            problems.append(f"{key}: fencing token went backwards: {tokens}")
    return problems


def test_journal_checks_catch_overlaps_and_token_regressions() -> None:
    """The checkers above are what makes the SIGKILL test meaningful, so prove they can fail."""
    def at(identity: str, start: float, end: float, token: int, key: str = "ns/a") -> Attempt:
        return Attempt(identity, key, "uid-" + key, 3, token, start, end, "written")

    clean = [at("a", 0.0, 1.0, 1), at("a", 1.5, 2.0, 1), at("b", 2.5, 3.0, 2)]
    assert not find_overlaps(clean) and not token_regressions(clean)
    # A long attempt by "a" overlaps "b" even though another attempt of "a" sits in between.
    assert find_overlaps([at("a", 0.0, 5.0, 1), at("a", 1.0, 2.0, 1), at("b", 3.0, 4.0, 2)])
    assert token_regressions([at("a", 0.0, 1.0, 2), at("b", 2.0, 3.0, 1)])
    # Same replica, same shard, back to back: not an overlap between replicas.
    assert not find_overlaps([at("a", 0.0, 2.0, 1), at("a", 1.0, 3.0, 1)])


def check_final_state(core: Any, namespace: str, keys: set[str], shards: int, survivors: set[str],
                      cluster: LocalCluster) -> None:
    """Every ConfigMap ends up carrying its shard's current holder (a survivor) and fencing token.

    Polled: the survivors may still be moving shards between themselves when the victim's last
    ConfigMap was re-stamped.
    """
    wrong: list[str] = []

    def stamped_right() -> bool:
        snap = cluster.snapshot()
        holders, tokens, generation = snap.holders(), snap.tokens(), snap.view.generation or 1
        listing = json.loads(core.list_namespaced_config_map(namespace, _preload_content=False).data)
        assert {f"{namespace}/{i['metadata']['name']}" for i in listing["items"]} == keys
        wrong.clear()
        for item in listing["items"]:
            key = f"{namespace}/{item['metadata']['name']}"
            annotations = item["metadata"].get("annotations") or {}
            shard = shard_for_object(item, shards)
            by, fence = annotations.get("shardlease.io/reconciled-by"), annotations.get("shardlease.io/fence")
            expected = f"{cluster.group}/{shard}/{generation}/{tokens[shard]}"
            if by != holders[shard] or fence != expected or by not in survivors:
                wrong.append(f"{key} (shard {shard}): by={by} fence={fence}; "
                             f"lease: {holders[shard]} fence {expected}")
        return not wrong

    wait_until(stamped_right, SETTLE, "every ConfigMap stamped with its shard's holder and fence",
               lambda: "\n".join(wrong[:20]) + "\n" + cluster.diagnostics())
