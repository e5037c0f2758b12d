"""``shardlease demo``: the README's first command must show rebalancing, handoff and failover,
and must leave no process behind."""

from __future__ import annotations

import datetime as _dt
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from shardlease.commands.demo import DemoState, Step, parse_script, render
from shardlease.commands.status import GroupView
from shardlease.core.records import format_microtime, member_labels, member_lease_name, shard_labels
from shardlease.harness.localcluster import Snapshot, child_processes


def _demo(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardlease", "demo", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def test_scripted_demo_shows_rebalance_handoff_failover_and_a_reshard() -> None:
    result = _demo("--replicas", "2", "--shards", "8", "--lease-duration", "2",
                   "--renew-deadline", "1.2", "--retry-period", "0.3",
                   "--script", "settle; add; settle; term; settle; kill; settle; reshard 12; settle")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.count("settled:") == 5 and "not settled" not in out, out
    assert "reshard: 8 -> 12 shards (generation 2)" in out, out
    assert "settled: 3 replicas" in out and "settled: 1 replicas" in out, out
    handoff = re.search(r"SIGTERM replica-\d: its \d+ shards re-held by others ([\d.]+) s", out)
    failover = re.search(r"SIGKILL replica-\d: its \d+ shards re-held by others ([\d.]+) s", out)
    assert handoff and failover, out
    # Graceful handoff does not wait for the lease; a crash cannot be noticed before it expires
    # (the killed replica renewed at most one retry period before the signal).
    assert float(handoff.group(1)) < 2.0, out
    assert 2.0 - 0.3 <= float(failover.group(1)) < 2.0 + 10, out
    assert "no shard (and no key, across counts) ever ran in two replicas at once" in out, out


def test_demo_stops_every_process_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "shardlease", "demo", "--replicas", "2", "--shards", "4",
         "--script", "wait 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(child_processes(process.pid)) < 2:
            time.sleep(0.1)
        replicas = child_processes(process.pid)
        assert len(replicas) >= 2, "the demo did not start its replicas"
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for pid in replicas:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z", \
            f"replica process {pid} outlived the demo"


def test_script_parsing_names_the_bad_step() -> None:
    assert parse_script("settle; add, wait 1.5; term replica-1; kill") == [
        Step("settle"), Step("add"), Step("wait", "1.5"), Step("term", "replica-1"), Step("kill")]
    with pytest.raises(ValueError, match=r"cannot read step 'explode'.*'add'"):
        parse_script("add; explode")
    with pytest.raises(ValueError, match="'wait' needs seconds"):
        parse_script("wait soon")
    assert parse_script("reshard 12") == [Step("reshard", "12")]
    with pytest.raises(ValueError, match="'reshard' needs a shard count"):
        parse_script("reshard many")


def test_bad_script_fails_before_starting_anything() -> None:
    result = _demo("--script", "add; jump", timeout=30)
    assert result.returncode == 2
    assert "cannot read step 'jump'" in result.stderr


def _snapshot() -> Snapshot:
    """Two members, four shards (one free), as the demo would read them from the API server."""
    now = _dt.datetime.now(_dt.timezone.utc)
    renewed = format_microtime(now)

    def lease(name: str, labels: dict[str, str], holder: str, annotations: dict[str, str] | None = None
              ) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "default", "labels": labels,
                             "annotations": annotations or {}},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 4, "renewTime": renewed}}

    objects = [lease(member_lease_name("demo", r), member_labels("demo"), r, {"shardlease.io/shards": "4"})
               for r in ("replica-0", "replica-1")]
    objects += [lease(f"demo-shard-{i}", shard_labels("demo", i), h)
                for i, h in enumerate(["replica-0", "replica-1", "replica-0", ""])]
    return Snapshot(time.monotonic(), GroupView.from_objects("demo", "default", objects, now))


@pytest.mark.parametrize("colour", [True, False])
def test_interactive_screen_keeps_the_kubectl_hint(colour: bool) -> None:
    state = DemoState(kubectl_hint="KUBECONFIG=/tmp/x/kubeconfig kubectl get leases")
    for i in range(30):  # more than the log keeps: the hint must not scroll away with it
        state.note(f"event {i}", None)
    screen = render(_snapshot(), state, colour=colour)
    assert "KUBECONFIG=/tmp/x/kubeconfig kubectl get leases" in screen, screen
    assert "event 0" not in screen and "event 29" in screen
    assert "unowned: [3]" in screen and "[q] quit" in screen


def test_interactive_demo_shows_the_kubectl_hint_on_a_terminal() -> None:
    """The real command on a pseudo-terminal: the screen shows the hint, and q quits cleanly."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # child: the demo, on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "shardlease", "demo", "--replicas", "1",
                                  "--shards", "2", "--no-color"])
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"kubectl get leases" not in seen.split(b"\x1b[2J")[-1]:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
        screen = seen.split(b"\x1b[2J")[-1].decode(errors="replace")
        assert re.search(r"try in another terminal: KUBECONFIG=\S+kubeconfig kubectl get leases", screen), screen
        os.write(fd, b"q")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            select.select([fd], [], [], 0.2)
            try:
                os.read(fd, 65536)  # keep the terminal drained so the demo never blocks on output
            except OSError:
                pass
        else:
            raise AssertionError("the demo did not quit on 'q'")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    from shardlease.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "a live view of which replica holds" in text and "q quits" in text
    assert "``" not in text and ":class:" not in text, text
