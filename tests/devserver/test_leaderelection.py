"""The official Python client's own elector (``kubernetes.leaderelection``) works against the dev-server.

This is the "peer written by others" check: three candidates, each in its own process and each
using ``LeaderElection`` + ``LeaseLock`` unchanged, must elect exactly one leader, and a new one once
the leader stops renewing. It exercises what such a peer needs from the server: a JSON 404 Status
on GET of a missing Lease (the elector creates the lock only if ``json.loads(body)['code'] == 404``),
201 on create and 409 AlreadyExists for the candidates that lose that race, and conditional PUTs
whose resourceVersion bumps on every write (followers treat "the record changed" as "the leader
is alive").

Quirks of the official elector (kubernetes 37.0.2, ``kubernetes/leaderelection/``) that shape the test:

* ``electionconfig.Config`` calls ``sys.exit`` unless ``lease_duration > renew_deadline >
  1.2 * retry_period`` and each is ``>= 1`` second, and ``leaselock`` stores ``int(lease_duration)``,
  so timings are whole seconds: 4 / 2 / 1 is the fastest legal setting.
* A follower does not compare ``renewTime`` with its clock: it takes over once the record it reads
  has not changed for *its own* ``lease_duration`` (``observed_time_milliseconds``), not the
  Lease's ``leaseDurationSeconds``. So all candidates must share one config, and takeover happens
  between ``lease_duration - retry_period`` and ``lease_duration + retry_period`` after the last
  renewal, plus request time.
* The leader has no fast path: each renewal is a GET then a PUT of the object it just read, so
  every renewal is a conditional update and a stale leader gets a 409 rather than overwriting.
* ``onstarted_leading`` runs in a daemon thread and ``run()`` returns (after calling
  ``onstopped_leading``) only when a renewal has failed for ``renew_deadline`` seconds; it uses the
  wall clock (``time.time()``) for that deadline, the test uses ``time.monotonic()``.
* The client serialises ``acquireTime``/``renewTime`` with ``datetime.isoformat()``, which drops the
  fraction when the microsecond is 0; the dev-server, like kube-apiserver, rejects such a MicroTime
  with 400. That makes about one write in a million fail; the elector retries a period later, well
  within ``renew_deadline``, so it cannot affect this test.

Why SIGKILL to stop the leader: it is what a crashed or evicted pod looks like, it stops renewals at
once and for good, and nothing in the candidate can react. SIGSTOP (a paused process, e.g. a long GC
pause or a frozen VM) is covered separately because it adds the interesting second half: the old
leader wakes up, finds that someone else holds the Lease and steps down.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .elector import (
    Entry,
    Journal,
    Spawn,
    assert_all_running,
    candidate_processes,
    wait_for_single_leader,
)

NAMESPACE = "default"
LEASE_DURATION = 4
RENEW_DEADLINE = 2
RETRY_PERIOD = 1
#: Generous: three interpreters importing ``kubernetes`` at once on a 2-core machine take a while.
FIRST_LEADER_TIMEOUT = 30.0
#: A follower needs up to LEASE_DURATION + RETRY_PERIOD after the last renewal; allow for a busy box.
TAKEOVER_MARGIN = 15.0
#: How long to watch for a second (wrong) leader: longer than any follower would wait.
SETTLE = LEASE_DURATION + RETRY_PERIOD + 1.0


@pytest.fixture
def devserver_kubeconfig(tmp_path: Path) -> Iterator[str]:
    """A dev-server in this process (its own thread); the candidates reach it over loopback."""
    from shardlease.devserver import DevServer

    with DevServer(host="127.0.0.1", port=0) as server:
        path = tmp_path / "kubeconfig"
        server.write_kubeconfig(path)
        yield str(path)


@pytest.fixture
def read_holder(devserver_kubeconfig: str) -> Iterator[Callable[[str], str | None]]:
    """Reads the Lease's holderIdentity through the official client (fresh Configuration)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=devserver_kubeconfig, client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    leases = client.CoordinationV1Api(api_client)

    def holder(name: str) -> str | None:
        return leases.read_namespaced_lease(name, NAMESPACE).spec.holder_identity

    try:
        yield holder
    finally:
        api_client.close()


@pytest.fixture
def candidates(devserver_kubeconfig: str, tmp_path: Path) -> Iterator[Spawn]:
    """Starts candidate processes; every one of them is killed and reaped at teardown, pass or fail."""
    with candidate_processes(devserver_kubeconfig, NAMESPACE, tmp_path, LEASE_DURATION, RENEW_DEADLINE,
                             RETRY_PERIOD) as spawn:
        yield spawn


def elect_first_leader(journal: Journal, procs: dict[str, subprocess.Popen[bytes]], lock: str,
                       read_holder: Callable[[str], str | None], tmp_path: Path) -> Entry:
    """The first leader, as soon as there is one (and only one), with no settling period.

    That a leader, once elected and renewing, stays the only one for longer than any follower would
    wait is checked by ``tests/conformance/test_leaderelection.py::test_one_leader_among_two[dev]``
    (same elector, same timings, same server, a full settle). Here the journal is checked again at
    the end, after a full SETTLE: it must hold exactly the leaders the scenario expects, so a second
    leader at any time during the scenario, the start included, still fails the test.
    """
    return wait_for_single_leader(journal, procs, lock, read_holder, tmp_path, FIRST_LEADER_TIMEOUT, settle=0.0)


@pytest.mark.slow
def test_official_elector_elects_one_leader_and_fails_over_after_sigkill(
    candidates: Spawn,
    read_holder: Callable[[str], str | None],
    tmp_path: Path,
) -> None:
    lock = "official-elector-kill"
    journal, procs = candidates(lock, ["cand-a", "cand-b", "cand-c"])

    first = elect_first_leader(journal, procs, lock, read_holder, tmp_path)

    killed_at = time.monotonic()
    procs[first.identity].kill()
    procs[first.identity].wait(timeout=10)
    journal.wait_for(lambda: len(journal.leaders()) >= 2, LEASE_DURATION + TAKEOVER_MARGIN,
                     "a new leader after SIGKILL")
    time.sleep(SETTLE)

    assert_all_running(procs, tmp_path, but=first.identity)
    leaders = journal.leaders()
    assert len(leaders) == 2, f"expected exactly one new leader, journal:\n{journal.dump()}"
    second = leaders[1]
    assert second.identity != first.identity
    assert read_holder(lock) == second.identity
    # The followers waited for the lease to run out rather than grabbing it early: the last renewal
    # was at most one retry period before the kill, and they wait a full lease duration after it.
    assert second.at - killed_at >= LEASE_DURATION - RETRY_PERIOD - 0.5, journal.dump()


@pytest.mark.slow
def test_official_elector_paused_leader_steps_down_after_takeover(
    candidates: Spawn,
    read_holder: Callable[[str], str | None],
    tmp_path: Path,
) -> None:
    lock = "official-elector-pause"
    journal, procs = candidates(lock, ["paus-a", "paus-b", "paus-c"])

    first = elect_first_leader(journal, procs, lock, read_holder, tmp_path)

    procs[first.identity].send_signal(signal.SIGSTOP)
    journal.wait_for(lambda: len(journal.leaders()) >= 2, LEASE_DURATION + TAKEOVER_MARGIN,
                     "a new leader while the old one is paused")
    second = journal.leaders()[1]
    assert second.identity != first.identity
    assert read_holder(lock) == second.identity

    # On waking up, the old leader's next GET shows another holder whose lease is fresh (or its
    # in-flight PUT carries a stale resourceVersion and gets 409), so it fails to renew for
    # renew_deadline seconds, calls onstopped_leading and returns from run().
    procs[first.identity].send_signal(signal.SIGCONT)
    journal.wait_for(
        lambda: any(e.identity == first.identity for e in journal.entries("stopped")),
        RENEW_DEADLINE + TAKEOVER_MARGIN, "the paused leader to step down",
    )
    time.sleep(SETTLE)
    assert [e.identity for e in journal.leaders()] == [first.identity, second.identity], journal.dump()
    assert read_holder(lock) == second.identity
    assert procs[first.identity].wait(timeout=10) == 0
