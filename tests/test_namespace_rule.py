"""One namespace rule for every command: ``run``, ``status``, ``reshard`` and ``demo`` look for a group's
Leases in the same namespace (``--namespace``, then ``SHARDLEASE_NAMESPACE``, then ``POD_NAMESPACE``, then
the in-cluster namespace file, then ``default``), and ``status`` says when a group has no Lease there.

The group is started as a user starts it, with ``SHARDLEASE_NAMESPACE=team-a shardlease run ...``, on the
dev-server and on a real kube-apiserver 1.36; ``status`` and ``reshard`` must then find it through each
source of the rule, and say where it is when they look elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import shardlease.config as config_module
from shardlease.cli import main

NAMESPACE = "team-a"
ROOT = Path(__file__).resolve().parent.parent
HANDLER = "def handle(shard):\n    shard.stopped.wait()\n"
FAST = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.4")


@pytest.fixture(autouse=True)
def no_namespace_in_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sets the sources it is about; none leaks in from the developer's shell or a pod."""
    for name in ("SHARDLEASE_NAMESPACE", "POD_NAMESPACE", "SHARDLEASE_KUBECONFIG", "SHARDLEASE_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "no-service-account")


# ---------------------------------------------------------------- the rule itself

def test_the_rule_takes_the_flag_then_each_source_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shardlease.config import find_namespace

    assert (find_namespace().name, find_namespace().source) == ("default", "default")
    mounted = tmp_path / "namespace"
    mounted.write_text("from-file\n")
    monkeypatch.setattr(config_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", mounted)
    assert (find_namespace().name, find_namespace().source) == ("from-file", str(mounted))
    monkeypatch.setenv("POD_NAMESPACE", "from-pod")
    assert (find_namespace().name, find_namespace().source) == ("from-pod", "POD_NAMESPACE")
    monkeypatch.setenv("SHARDLEASE_NAMESPACE", "from-shardlease")
    assert (find_namespace().name, find_namespace().source) == ("from-shardlease", "SHARDLEASE_NAMESPACE")
    assert (find_namespace("flag").name, find_namespace("flag").source) == ("flag", "--namespace")


@pytest.mark.parametrize("command", [["status"], ["reshard", "--shards", "4"], ["demo", "--script", "settle"]])
def test_a_bad_namespace_is_refused_naming_where_it_came_from(
        command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "Team_A")
    extra = [] if command[0] == "demo" else ["--group", "g", "--kubeconfig", "/nonexistent"]
    assert main([*command, *extra]) == 2
    err = capsys.readouterr().err
    assert "namespace: must be a valid namespace name" in err and "'Team_A'" in err, err
    assert "(from POD_NAMESPACE)" in err and "--namespace or SHARDLEASE_NAMESPACE" in err, err


# ---------------------------------------------------------------- a group in team-a, on both servers

@dataclass
class Server:
    kind: str
    kubeconfig: str


@pytest.fixture(params=["devserver", "real"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "real":
        yield Server("real", request.getfixturevalue("kube_apiserver_kubeconfig"))
        return
    from shardlease.devserver import DevServer

    with DevServer(port=0) as srv:
        yield Server("devserver", str(srv.write_kubeconfig(tmp_path / "kubeconfig")))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHARDLEASE_NAMESPACE", "POD_NAMESPACE", "SHARDLEASE_KUBECONFIG", "SHARDLEASE_CONTEXT")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**env, **extra}


def _ensure_namespace(kubeconfig: str, name: str) -> None:
    """kube-apiserver refuses writes into a namespace that does not exist; create it on both servers."""
    from kubernetes.client import CoreV1Api, V1Namespace, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    from shardlease.client.connect import load_api_client

    api = load_api_client(kubeconfig=kubeconfig)
    try:
        CoreV1Api(api).create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise
    finally:
        api.close()


@pytest.fixture
def group_in_team_a(server: Server, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """One replica started with ``SHARDLEASE_NAMESPACE=team-a`` (and no --namespace), holding 4 shards."""
    _ensure_namespace(server.kubeconfig, NAMESPACE)
    group = f"nsdemo-{uuid.uuid4().hex[:6]}"  # the real server is shared by the session
    (tmp_path / "nshandler.py").write_text(HANDLER)
    log = (tmp_path / "replica.log").open("w")
    replica = subprocess.Popen(
        [sys.executable, "-m", "shardlease", "run", "nshandler:handle", "--group", group, "--shards", "4",
         "--identity", "a", "--kubeconfig", server.kubeconfig, *FAST],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=_env(SHARDLEASE_NAMESPACE=NAMESPACE))
    try:
        yield server, group
    finally:
        replica.terminate()
        try:
            replica.wait(30)
        except subprocess.TimeoutExpired:
            replica.kill()
            replica.wait()
        log.close()


def _status(capsys: pytest.CaptureFixture[str], group: str, kubeconfig: str, *args: str) -> tuple[int, str, str]:
    code = main(["status", "--group", group, "--kubeconfig", kubeconfig, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _wait_owned(capsys: pytest.CaptureFixture[str], group: str, kubeconfig: str, shards: int,
                timeout: float = 60) -> dict[str, Any]:
    """``status --output json`` (namespace given by the flag) until the group runs ``shards`` shards, all
    held."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        code, out, err = _status(capsys, group, kubeconfig, "--namespace", NAMESPACE, "--output", "json")
        last = out + err
        if code == 0:
            view: dict[str, Any] = json.loads(out)
            if view["shards"] == shards and view["summary"]["owned"] == shards and not view["summary"]["unowned"]:
                return view
        time.sleep(0.3)
    raise AssertionError(f"the replica in {NAMESPACE} never held {shards} shards; last status: {last}")


@pytest.mark.parametrize("source", ["SHARDLEASE_NAMESPACE", "POD_NAMESPACE", "file"])
def test_status_and_reshard_find_the_group_where_run_put_it(
        group_in_team_a: tuple[Server, str], source: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server, group = group_in_team_a
    _wait_owned(capsys, group, server.kubeconfig, 4)
    if source == "file":  # the in-cluster service account mount
        mounted = tmp_path / "namespace"
        mounted.write_text(NAMESPACE + "\n")
        monkeypatch.setattr(config_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", mounted)
    else:
        monkeypatch.setenv(source, NAMESPACE)

    code, out, err = _status(capsys, group, server.kubeconfig)
    assert code == 0, err
    assert f"group {group!r} in namespace {NAMESPACE!r}: 4 shards" in out, out
    assert out.strip().splitlines()[-1].startswith("OK: 4/4 shards owned"), out

    code = main(["reshard", "--group", group, "--shards", "6", "--wait", "60", "--kubeconfig", server.kubeconfig])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"group {group!r}: 4 -> 6 shards" in captured.out and "complete" in captured.out, captured.out
    _wait_owned(capsys, group, server.kubeconfig, 6)


def test_looking_in_the_default_namespace_says_there_is_no_such_group_and_where_it_is(
        group_in_team_a: tuple[Server, str], capsys: pytest.CaptureFixture[str]) -> None:
    server, group = group_in_team_a
    _wait_owned(capsys, group, server.kubeconfig, 4)

    for output in ("text", "json"):
        code, out, err = _status(capsys, group, server.kubeconfig, "--output", output)
        assert code == 1 and out == "", (code, out)  # no empty table, no JSON of a group that is not there
        assert f"no group {group!r} in namespace 'default'" in err, err
        assert "the fallback namespace" in err, err
        assert f"the group has Leases in namespace {NAMESPACE!r}: pass --namespace {NAMESPACE}" in err, err
        assert "0/0" not in out + err

    code = main(["reshard", "--group", group, "--shards", "6", "--kubeconfig", server.kubeconfig])
    err = capsys.readouterr().err
    assert code == 2 and f"no group {group!r} in namespace 'default'" in err, err
    assert f"--namespace {NAMESPACE}" in err, err


def test_status_of_a_group_that_never_ran_names_the_namespace_and_exits_1(
        server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "kube-system")
    code, out, err = _status(capsys, "never-ran", server.kubeconfig)
    assert (code, out) == (1, "")
    assert "no group 'never-ran' in namespace 'kube-system'" in err and "namespace from POD_NAMESPACE" in err, err


def test_watch_waits_for_a_group_that_is_not_there_yet_and_draws_it_once_it_is(
        server: Server, tmp_path: Path) -> None:
    """``--watch`` is how one watches a group come up: it says the group is not there (naming the
    namespace), keeps watching, and shows the group when its replicas start."""
    import queue
    import threading

    _ensure_namespace(server.kubeconfig, NAMESPACE)
    group = f"later-{uuid.uuid4().hex[:6]}"
    watcher = subprocess.Popen(
        [sys.executable, "-m", "shardlease", "status", "--group", group, "--watch", "--output", "json",
         "--kubeconfig", server.kubeconfig],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(POD_NAMESPACE=NAMESPACE))
    (tmp_path / "nshandler.py").write_text(HANDLER)
    replica: subprocess.Popen[bytes] | None = None
    lines: queue.Queue[str] = queue.Queue()
    errors: queue.Queue[str] = queue.Queue()
    assert watcher.stdout is not None and watcher.stderr is not None

    def pump(source: Any, into: queue.Queue[str]) -> None:
        for line in source:
            into.put(line)

    threading.Thread(target=pump, args=(watcher.stdout, lines), daemon=True).start()
    threading.Thread(target=pump, args=(watcher.stderr, errors), daemon=True).start()
    try:
        said = errors.get(timeout=30)
        assert f"no group {group!r} in namespace {NAMESPACE!r}" in said and "waiting for its Leases" in said, said
        assert lines.empty()  # stdout carries only views of a group that exists
        replica = subprocess.Popen(
            [sys.executable, "-m", "shardlease", "run", "nshandler:handle", "--group", group, "--shards", "2",
             "--identity", "a", "--kubeconfig", server.kubeconfig, *FAST],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(POD_NAMESPACE=NAMESPACE))
        deadline = time.monotonic() + 60
        while True:
            view = json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            assert view["group"] == group and view["namespace"] == NAMESPACE, view
            if view["summary"]["owned"] == 2:
                break
    finally:
        for process in (replica, watcher):
            if process is not None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_demo_runs_its_group_in_the_namespace_of_the_rule(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shardlease", "demo", "--replicas", "1", "--shards", "2", "--lease-duration", "2",
         "--renew-deadline", "1.2", "--retry-period", "0.3", "--script", "settle", "--work-dir", str(tmp_path / "w")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=150,
        env=_env(SHARDLEASE_NAMESPACE=NAMESPACE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kubectl get leases -n team-a" in result.stdout, result.stdout
    # The demo settles by reading its group's Leases in that namespace: the replicas wrote them there.
    assert "settled: 1 replicas" in result.stdout, result.stdout


def test_the_python_reshard_call_follows_the_rule_too(group_in_team_a: tuple[Server, str],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``shardlease.reshard`` called from inside a replica's pod (POD_NAMESPACE set by the downward API)
    reaches that pod's group without being told the namespace."""
    from shardlease.client.connect import load_api_client
    from shardlease.runtime.reshard import reshard

    server, group = group_in_team_a
    _wait_owned(capsys, group, server.kubeconfig, 4)
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    api = load_api_client(kubeconfig=server.kubeconfig)
    try:
        result = reshard(group, 5, api_client=api, wait=60)
    finally:
        api.close()
    assert (result.before.count, result.state.count, result.pending) == (4, 5, ())
    _wait_owned(capsys, group, server.kubeconfig, 5)
