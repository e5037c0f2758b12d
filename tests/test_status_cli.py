"""``shardlease status``: the view built from Lease dicts, and the command against a dev-server."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shardlease.commands.status import FLAG_EXPIRED, FLAG_MISPLACED, FLAG_UNOWNED, GroupView
from shardlease.core.assignment import assign
from shardlease.core.records import format_microtime, member_labels, member_lease_name, shard_labels

NOW = _dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=_dt.timezone.utc)
GROUP = "g"


def lease(name: str, labels: dict[str, str], holder: str, renewed_ago: float | None, duration: int = 10,
          annotations: dict[str, str] | None = None, transitions: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"holderIdentity": holder, "leaseDurationSeconds": duration,
                            "leaseTransitions": transitions}
    if renewed_ago is not None:
        spec["renewTime"] = format_microtime(NOW - _dt.timedelta(seconds=renewed_ago))
    return {"metadata": {"name": name, "namespace": "default", "labels": labels,
                         "annotations": annotations or {}}, "spec": spec}


def member(identity: str, renewed_ago: float = 1.0, shards: int = 4) -> dict[str, Any]:
    return lease(member_lease_name(GROUP, identity), member_labels(GROUP), identity, renewed_ago,
                 annotations={"shardlease.io/shards": str(shards)})


def shard(i: int, holder: str, renewed_ago: float | None = 1.0, transitions: int = 1) -> dict[str, Any]:
    return lease(f"{GROUP}-shard-{i}", shard_labels(GROUP, i), holder, renewed_ago,
                 transitions=transitions)


def healthy_objects(members: list[str], shards: int = 4) -> list[dict[str, Any]]:
    desired = assign(GROUP, shards, members)
    return [member(m, shards=shards) for m in members] + [shard(i, desired[i]) for i in range(shards)]


def view_of(objects: list[dict[str, Any]], **kw: Any) -> GroupView:
    return GroupView.from_objects(GROUP, "default", objects, NOW, **kw)


def test_healthy_group_has_no_flags() -> None:
    view = view_of(healthy_objects(["a", "b"]))
    assert view.shards == 4
    assert [m.identity for m in view.members] == ["a", "b"] and all(m.live for m in view.members)
    assert all(not row.flags and row.holder == row.desired for row in view.rows)
    assert view.summary().startswith("OK: 4/4 shards owned, 0 unowned, 0 expired, 0 misplaced")
    text = view.render_text()
    assert "MEMBERS (2)" in text and "DESIRED" in text and "1.0s ago" in text


def test_unowned_expired_and_misplaced_are_flagged() -> None:
    objects = healthy_objects(["a", "b"])
    desired = assign(GROUP, 4, ["a", "b"])
    wrong = "b" if desired[1] == "a" else "a"
    objects = [o for o in objects if o["metadata"]["name"] not in ("g-shard-0", "g-shard-1", "g-shard-2")]
    objects += [
        shard(0, ""),                                # released
        shard(1, wrong),                             # held by the other member
        shard(2, desired[2], renewed_ago=60),        # renewed a minute ago, 10 s lease
    ]
    view = view_of(objects)
    assert view.flagged(FLAG_UNOWNED) == [0]
    assert view.flagged(FLAG_MISPLACED) == [1]
    assert view.flagged(FLAG_EXPIRED) == [2]
    assert view.summary().startswith("ATTENTION: 3/4 shards owned, 1 unowned, 1 expired, 1 misplaced")
    data = view.to_json()
    assert data["summary"]["unowned"] == [0] and data["shard_table"][1]["flags"] == [FLAG_MISPLACED]
    json.dumps(data)  # serialisable


def test_dead_members_do_not_count_for_desired_holders() -> None:
    objects = healthy_objects(["a", "b"])
    objects = [o for o in objects if o["metadata"]["name"] != member_lease_name(GROUP, "b")]
    objects.append(member("b", renewed_ago=30))  # expired member Lease
    view = view_of(objects)
    assert [m.live for m in view.members] == [True, False]
    assert all(row.desired == "a" for row in view.rows)
    assert set(view.flagged(FLAG_MISPLACED)) == {r.shard for r in view.rows if r.holder == "b"}


def test_without_a_group_lease_the_oldest_live_member_defines_the_shard_count() -> None:
    """The rule of versions from before resharding; every live member is in the ring all the same."""
    objects = [member("a", shards=4), member("b", shards=4), member("c", shards=6)]
    objects[2]["metadata"]["creationTimestamp"] = "2026-05-01T11:00:00Z"  # c is the oldest
    objects[0]["metadata"]["creationTimestamp"] = objects[1]["metadata"]["creationTimestamp"] = (
        "2026-05-01T11:30:00Z")
    view = view_of(objects)
    assert view.shards == 6 and view.generation is None
    assert [(m.identity, m.live, m.eligible) for m in view.members] == [
        ("a", True, True), ("b", True, True), ("c", True, True)]
    assert {row.desired for row in view.rows} == {"a", "b", "c"}
    assert any("no group Lease g-group" in n for n in view.notes)
    assert any("follow the group's 6: a (4), b (4)" in n for n in view.notes)
    assert "yes, other count" not in view.render_text() and "takes no shards" not in view.render_text()

    del objects[2]  # without c, a and b agree on 4
    view = view_of(objects)
    assert view.shards == 4 and all(m.eligible for m in view.members)
    assert not any("follow the group's" in n for n in view.notes)
    assert view.flagged(FLAG_UNOWNED) == [0, 1, 2, 3]


def test_without_live_members_the_count_is_what_most_declare() -> None:
    objects = [member("a", 30, shards=4), member("b", 30, shards=4), member("c", 30, shards=6)]
    view = view_of(objects)
    assert view.shards == 4 and not any(m.live for m in view.members)
    assert any("disagree" in n for n in view.notes)


def test_a_member_record_not_held_by_its_identity_is_not_live() -> None:
    released = member("a")
    released["spec"]["holderIdentity"] = ""
    renamed = member("b")
    renamed["spec"]["holderIdentity"] = "someone-else"
    view = view_of([released, renamed, member("c")])
    assert [(m.identity, m.live) for m in view.members] == [("a", False), ("b", False), ("c", True)]


def test_without_members_the_count_comes_from_the_shard_leases() -> None:
    view = view_of([shard(0, "x"), shard(2, "", None)])
    assert view.shards == 3 and view.members == ()
    assert [r.desired for r in view.rows] == [None, None, None]
    assert view.flagged(FLAG_UNOWNED) == [1, 2]


def test_broken_and_foreign_leases_are_tolerated() -> None:
    objects = healthy_objects(["a"]) + [
        {"metadata": {"name": "junk", "labels": {"shardlease.io/group": GROUP,
                                                 "shardlease.io/role": "shard",
                                                 "shardlease.io/shard": "x"}}, "spec": "nonsense"},
        {"metadata": {}},
        {"metadata": {"name": "other-shard-0", "labels": shard_labels("other", 0)}, "spec": {}},
    ]
    view = view_of(objects)
    assert view.shards == 4 and not any(r.flags for r in view.rows)
    assert any("junk" in n for n in view.notes)


# ---------------------------------------------------------------- the command against a dev-server

@pytest.fixture
def devserver(tmp_path: Path) -> Any:
    from shardlease.devserver import DevServer

    with DevServer(port=0) as srv:
        srv.write_kubeconfig(tmp_path / "kubeconfig")
        yield srv


def put_leases(srv: Any, objects: list[dict[str, Any]]) -> None:
    """Create Leases over HTTP (as any other client would), stamped with the current time."""
    import urllib.request

    now = _dt.datetime.now(_dt.timezone.utc)
    for obj in objects:
        obj = json.loads(json.dumps(obj))
        spec = obj["spec"]
        if "renewTime" in spec:  # shift NOW-relative times to the real now
            renewed = _dt.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
            spec["renewTime"] = format_microtime(now - (NOW - renewed))
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **obj}
        request = urllib.request.Request(
            f"{srv.url}/apis/coordination.k8s.io/v1/namespaces/default/leases",
            data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()


def constructed(srv: Any) -> tuple[int, int]:
    """Members a and b; shard 0 released, shard 1 held by the wrong member. Returns (0, 1)."""
    desired = assign(GROUP, 4, ["a", "b"])
    wrong = "b" if desired[1] == "a" else "a"
    put_leases(srv, [member("a"), member("b"), shard(0, ""), shard(1, wrong), shard(2, desired[2]),
                     shard(3, desired[3])])
    return 0, 1


def test_cli_flags_unowned_and_misplaced(devserver: Any, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from shardlease.cli import main

    unowned, misplaced = constructed(devserver)
    kubeconfig = str(tmp_path / "kubeconfig")
    assert main(["status", "--group", GROUP, "--kubeconfig", kubeconfig]) == 0
    text = capsys.readouterr().out
    assert "UNOWNED" in text and "MISPLACED" in text
    assert text.strip().splitlines()[-1] == (
        "ATTENTION: 3/4 shards owned, 1 unowned, 0 expired, 1 misplaced; 2/2 members live")

    assert main(["status", "--group", GROUP, "--kubeconfig", kubeconfig, "--output", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["unowned"] == [unowned] and data["summary"]["misplaced"] == [misplaced]
    assert [m["identity"] for m in data["members"]] == ["a", "b"]


def test_cli_on_a_group_with_no_lease_says_so(devserver: Any, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Not an empty table (which reads like a group whose replicas all died): no such group here."""
    from shardlease.cli import main

    assert main(["status", "--group", "nothing", "--namespace", "default",
                 "--kubeconfig", str(tmp_path / "kubeconfig")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no group 'nothing' in namespace 'default'" in captured.err and "from --namespace" in captured.err
    assert "0/0" not in captured.err


def test_unreachable_cluster_exits_nonzero_naming_what_was_tried(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "shardlease", "status", "--group", "g", "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr and str(kubeconfig) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

    missing = tmp_path / "no-such-kubeconfig"
    result = subprocess.run(
        [sys.executable, "-m", "shardlease", "status", "--group", "g", "--kubeconfig", str(missing)],
        capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode != 0 and str(missing) in result.stderr and "Traceback" not in result.stderr


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def test_watch_redraws_on_changes_and_exits_0_on_ctrl_c(devserver: Any, tmp_path: Path) -> None:
    import queue
    import signal
    import threading

    constructed(devserver)
    # The child gets Python's own SIGINT handler explicitly: a runner started as a background job of a
    # non-interactive shell (as `bash .ci/run &` is) hands its children SIGINT *ignored*, and Python then
    # installs no KeyboardInterrupt handler, so Ctrl-C would never reach `status --watch` (seen in CI).
    restore_sigint = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "sys.argv = ['shardlease', *sys.argv[1:]]; runpy.run_module('shardlease', run_name='__main__')")
    proc = subprocess.Popen(
        [sys.executable, "-c", restore_sigint, "status", "--group", GROUP, "--watch", "--output", "json",
         "--kubeconfig", str(tmp_path / "kubeconfig")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**_env(), "PYTHONFAULTHANDLER": "1"})
    lines: queue.Queue[str] = queue.Queue()
    errors: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    # Drain stderr too: a child whose stderr pipe fills up blocks, and would look like a hang on exit.
    stderr_reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    stderr_reader.start()
    try:
        first = json.loads(lines.get(timeout=30))
        assert first["summary"]["unowned"] == [0]
        # Take shard 0: the watch must bring a redraw showing it owned.
        import urllib.request

        url = f"{devserver.url}/apis/coordination.k8s.io/v1/namespaces/default/leases/{GROUP}-shard-0"
        current = json.loads(urllib.request.urlopen(url, timeout=10).read())
        desired = assign(GROUP, 4, ["a", "b"])[0]
        current["spec"].update(holderIdentity=desired,
                               renewTime=format_microtime(_dt.datetime.now(_dt.timezone.utc)))
        put = urllib.request.Request(url, data=json.dumps(current).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(put, timeout=10).close()
        deadline = time.monotonic() + 30
        while True:
            view = json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            if view["shard_table"][0]["holder"] == desired:
                break
        assert view["summary"]["unowned"] == []
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)                 # generous: a loaded CI machine; it takes ~0.3 s here
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)     # faulthandler writes every thread's stack to stderr
            proc.wait(10)
            stderr_reader.join(5)
            raise AssertionError("status --watch did not exit within 60 s of SIGINT; its threads:\n"
                                 + "".join(errors)) from None
        stderr_reader.join(5)
        assert code == 0, "".join(errors)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_an_api_error_is_reported_as_a_refusal(devserver: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from shardlease.cli import main

    devserver.faults.set_errors(1.0, code=500)
    try:
        assert main(["status", "--group", GROUP, "--kubeconfig", str(tmp_path / "kubeconfig")]) == 1
    finally:
        devserver.faults.clear()
    err = capsys.readouterr().err
    assert f"the Kubernetes API at {devserver.url} refused to list Leases in namespace 'default'" in err
    assert "HTTP 500" in err


def test_kubeconfig_comes_from_the_flag_then_shardlease_kubeconfig_then_kubeconfig(
        devserver: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same order as ``shardlease run``: --kubeconfig > SHARDLEASE_KUBECONFIG > KUBECONFIG."""
    from shardlease.cli import main

    constructed(devserver)
    good, missing = str(tmp_path / "kubeconfig"), str(tmp_path / "no-such-kubeconfig")
    expected = "ATTENTION: 3/4 shards owned, 1 unowned, 0 expired, 1 misplaced; 2/2 members live"
    monkeypatch.delenv("SHARDLEASE_CONTEXT", raising=False)

    # SHARDLEASE_KUBECONFIG alone is enough, and wins over KUBECONFIG
    monkeypatch.setenv("SHARDLEASE_KUBECONFIG", good)
    monkeypatch.setenv("KUBECONFIG", missing)
    assert main(["status", "--group", GROUP]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == expected

    # the flag wins over SHARDLEASE_KUBECONFIG
    monkeypatch.setenv("SHARDLEASE_KUBECONFIG", missing)
    assert main(["status", "--group", GROUP, "--kubeconfig", good]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == expected

    # a bad SHARDLEASE_KUBECONFIG is reported by its path, not silently replaced by KUBECONFIG
    monkeypatch.setenv("KUBECONFIG", good)
    assert main(["status", "--group", GROUP]) == 1
    assert missing in capsys.readouterr().err

    # empty counts as unset: KUBECONFIG is used
    monkeypatch.setenv("SHARDLEASE_KUBECONFIG", "")
    assert main(["status", "--group", GROUP]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == expected


def test_shardlease_context_selects_the_context(devserver: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from shardlease.cli import main

    monkeypatch.setenv("SHARDLEASE_KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("SHARDLEASE_CONTEXT", "no-such-context")
    assert main(["status", "--group", GROUP]) == 1
    assert "no-such-context" in capsys.readouterr().err


def group_lease(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": f"{GROUP}-group", "namespace": "default", "annotations": annotations,
                         "labels": {"shardlease.io/group": GROUP, "shardlease.io/role": "group"}},
            "spec": {"acquireTime": format_microtime(NOW - _dt.timedelta(seconds=30))}}


def test_the_group_lease_sets_the_count_whatever_the_members_are_configured_with() -> None:
    objects = healthy_objects(["a", "b"], shards=4) + [group_lease(
        {"shardlease.io/shards": "4", "shardlease.io/generation": "1", "shardlease.io/changed-by": "initial"})]
    objects[0]["metadata"]["annotations"]["shardlease.io/shards"] = "8"  # a is configured with another count
    view = view_of(objects)
    assert (view.shards, view.generation, view.previous_shards, view.switch_pending) == (4, 1, None, ())
    assert view.summary().startswith("OK: ")  # a member configured with another count is not a problem
    assert "4 shards, generation 1 (changed by initial 30.0s ago)" in view.render_text()
    assert any("follow the group's 4: a (8)" in n for n in view.notes)


def test_an_unreadable_group_lease_falls_back_to_the_members_and_says_so() -> None:
    objects = healthy_objects(["a"], shards=4) + [group_lease({"shardlease.io/shards": "many"})]
    view = view_of(objects)
    assert view.shards == 4 and view.generation is None
    assert any("g-group has no readable shard count or generation" in n for n in view.notes)


def test_an_old_count_mismatch_report_is_not_a_problem() -> None:
    """Versions from before resharding wrote ``count-mismatch``; every member now follows the group."""
    objects = healthy_objects(["a", "b"])
    objects[0]["metadata"]["annotations"]["shardlease.io/problems"] = "count-mismatch=8/4;crashing=2"
    view = view_of(objects)
    assert view.problems == ("member a: handlers of shards 2 keep raising (see its logs and "
                             "shardlease_handler_errors_total)",)


def test_a_member_over_its_write_budget_is_a_problem_naming_the_numbers_and_the_fix() -> None:
    objects = healthy_objects(["a", "b"])
    objects[0]["metadata"]["annotations"]["shardlease.io/problems"] = "write-budget=47.8/20"
    view = view_of(objects)
    (problem,) = view.problems
    assert problem.startswith("member a: its Leases need 47.8 writes/s even at the longest safe renew interval, "
                              "over its --max-write-rate 20")
    assert "raise --max-write-rate" in problem
    assert view.summary().startswith("ATTENTION")


def test_load_columns_the_snapshot_and_a_shard_too_hot_to_help() -> None:
    """With loads reported, status shows capacity, load and share per member, load per shard, the
    snapshot the replicas assign from, and names a shard hotter than any replica's share."""
    from shardlease.core.loadbalance import LoadSnapshot
    from shardlease.core.records import (
        ANNOTATION_CAPACITY,
        ANNOTATION_LOAD,
        ANNOTATION_LOAD_SNAPSHOT,
        ANNOTATION_LOADS,
        ANNOTATION_REBALANCED,
        format_loads,
    )
    from shardlease.core.resharding import GroupState, group_lease_body

    loads = [30.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    base = assign(GROUP, 8, ["a", "b"])
    snap = LoadSnapshot(generation=1, count=8, seq=4, taken_at=NOW - _dt.timedelta(seconds=20),
                        loads=tuple(int(v * 100) for v in loads), owners=tuple(base[i] for i in range(8)),
                        reason="imbalance 1.60 > 1.15", epsilon=0.1, max_moves=8)
    desired = dict(enumerate(snap.assign({"a": 1.0, "b": 2.0}).owners))
    group = group_lease_body(GROUP, "default", GroupState(count=8, generation=1, span=8, basis=None), NOW)
    group["metadata"]["annotations"].update({
        ANNOTATION_LOAD_SNAPSHOT: snap.encode(),
        ANNOTATION_REBALANCED: f"{format_microtime(NOW)} 3 imbalance 1.60 > 1.15"})
    objects: list[dict[str, Any]] = [group]
    for identity, capacity in (("a", 1.0), ("b", 2.0)):
        obj = member(identity, shards=8)
        obj["metadata"]["annotations"].update({
            ANNOTATION_CAPACITY: f"{capacity:g}",
            ANNOTATION_LOADS: format_loads({i: loads[i] for i in range(8) if desired[i] == identity})})
        objects.append(obj)
    for i in range(8):
        obj = shard(i, desired[i])
        obj["metadata"]["annotations"] = {ANNOTATION_LOAD: f"{loads[i]:g}"}
        objects.append(obj)
    view = view_of(objects)
    assert view.load_aware and view.load_snapshot == snap
    assert all(row.holder == row.desired and not row.flags for row in view.rows)  # desired from the snapshot
    rows = {m.identity: m for m in view.members}
    assert rows["b"].capacity == 2.0 and rows["b"].fair_share == pytest.approx(2 / 3)
    assert sum(r.load or 0 for r in rows.values()) == sum(loads)
    assert view.too_hot == (0,) and any("shard 0 carries" in note and "cannot help" in note for note in view.notes)
    text = view.render_text()
    assert "CAPACITY" in text and "SHARE" in text and "LOAD" in text
    assert "assigned by snapshot 4 (imbalance 1.60 > 1.15), taken 20.0s ago" in text
    assert "last rebalance" in text and "3 move(s)" in text
    data = view.to_json()
    assert data["load"]["mode"] == "load" and data["load"]["snapshot"]["seq"] == 4
    assert data["shard_table"][0]["load"] == 30.0 and data["load"]["too_hot"] == [0]
    json.dumps(data)


def test_without_loads_status_shows_no_load_columns() -> None:
    view = view_of(healthy_objects(["a", "b"]))
    assert not view.load_aware
    assert "CAPACITY" not in view.render_text() and view.to_json()["load"]["mode"] == "count"
