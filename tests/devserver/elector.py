"""The official Python client's elector (``kubernetes.leaderelection``) run as candidate processes,
and the journal they report to. Shared by test_leaderelection.py (dev-server only: kills and pauses)
and tests/conformance/test_leaderelection.py (both servers: one leader among two)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CANDIDATE_SCRIPT = """
import sys, time
from kubernetes import config
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

kubeconfig, namespace, lock_name, identity, journal = sys.argv[1:6]
lease_duration, renew_deadline, retry_period = (int(v) for v in sys.argv[6:9])

# LeaseLock builds CoordinationV1Api() on the default configuration: load the kubeconfig into it.
config.load_kube_config(config_file=kubeconfig)


def note(event):
    # One short O_APPEND write per line: lines from the candidates never interleave.
    with open(journal, "a") as f:
        f.write("%s %s %.6f\\n" % (event, identity, time.monotonic()))


note("candidate")
lock = LeaseLock(lock_name, namespace, identity)
leaderelection.LeaderElection(electionconfig.Config(
    lock,
    lease_duration=lease_duration,
    renew_deadline=renew_deadline,
    retry_period=retry_period,
    onstarted_leading=lambda: note("started"),
    onstopped_leading=lambda: note("stopped"),
)).run()
note("exited")
"""


@dataclass(frozen=True)
class Entry:
    event: str
    identity: str
    at: float  # time.monotonic() in the candidate; CLOCK_MONOTONIC is system-wide on Linux


class Journal:
    """The shared append-only file the candidates write their transitions to."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self, event: str | None = None) -> list[Entry]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and (event is None or parts[0] == event):
                out.append(Entry(parts[0], parts[1], float(parts[2])))
        return out

    def leaders(self) -> list[Entry]:
        return self.entries("started")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}; journal:\n{self.dump()}")
            time.sleep(0.05)

    def dump(self) -> str:
        return self.path.read_text() if self.path.exists() else "(empty)"



Spawn = Callable[[str, list[str]], tuple[Journal, dict[str, "subprocess.Popen[bytes]"]]]


@contextmanager
def candidate_processes(kubeconfig: str, namespace: str, tmp_path: Path, lease_duration: int,
                        renew_deadline: int, retry_period: int) -> Iterator[Spawn]:
    """Starts candidate processes; every one of them is killed and reaped on exit, pass or fail."""
    script = tmp_path / "candidate.py"
    script.write_text(CANDIDATE_SCRIPT)
    started: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)

    def spawn(lock_name: str, identities: list[str]) -> tuple[Journal, dict[str, subprocess.Popen[bytes]]]:
        journal = Journal(tmp_path / f"{lock_name}.journal")
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for identity in identities:
            log = (tmp_path / f"{identity}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, str(script), kubeconfig, namespace, lock_name, identity,
                 str(journal.path), str(lease_duration), str(renew_deadline), str(retry_period)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
            log.close()
            started.append(proc)
            procs[identity] = proc
        return journal, procs

    try:
        yield spawn
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # harmless if running; lets a paused one die cleanly
                proc.kill()
            proc.wait(timeout=30)


def candidate_logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))


def assert_all_running(procs: dict[str, subprocess.Popen[bytes]], tmp_path: Path, but: str | None = None) -> None:
    for identity, proc in procs.items():
        if identity != but and proc.poll() is not None:
            pytest.fail(f"candidate {identity} exited with {proc.returncode}\n{candidate_logs(tmp_path)}")


def wait_for_single_leader(journal: Journal, procs: dict[str, subprocess.Popen[bytes]], lock: str,
                           read_holder: Callable[[str], str | None], tmp_path: Path, timeout: float,
                           settle: float) -> Entry:
    """Waits for the first leader, then ``settle`` seconds to be sure no second one appears."""
    journal.wait_for(lambda: bool(journal.leaders()), timeout, "a first leader")
    time.sleep(settle)
    assert_all_running(procs, tmp_path)
    leaders = journal.leaders()
    assert len(leaders) == 1, f"expected exactly one leader, journal:\n{journal.dump()}"
    assert read_holder(lock) == leaders[0].identity
    return leaders[0]
