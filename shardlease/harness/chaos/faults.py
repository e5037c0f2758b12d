"""Applying a fault plan: the dev-server's knobs or the real server's relay, and the replica processes.

:class:`FaultInjector` applies each planned fault at its time -- through the dev-server's knobs, or
on the real server through :class:`~shardlease.harness.chaos.proxy.ProxyFaults` -- and writes what it
did to the fault log (``faults.jsonl``).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shardlease.harness.chaos.handlers import LOADS_FILE, write_loads
from shardlease.harness.chaos.plan import REAL_END_KINDS, Fault
from shardlease.harness.chaos.state import RunState
from shardlease.harness.localcluster import Replica

#: Longest the runner waits for a process it is about to SIGTERM to catch the signal (a replica started
#: a moment ago has not installed its handler yet; on a loaded 2-core machine that took up to 10 s).
SIGTERM_READY_TIMEOUT = 20.0


def _wait_catching_sigterm(pid: int, timeout: float = 3.0) -> float:
    """Wait until process ``pid`` catches SIGTERM (``SigCgt`` in ``/proc``), at most ``timeout``;
    returns the seconds waited. A replica started a moment ago has not installed its handler yet
    and would die of the signal: no runtime can shut down gracefully before it runs."""
    started = time.monotonic()
    bit = 1 << (signal.SIGTERM - 1)
    while time.monotonic() - started < timeout:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break  # gone, or not Linux: nothing to wait for
        caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), None)
        if caught is None or int(caught, 16) & bit:
            break
        time.sleep(0.01)
    return time.monotonic() - started


class FaultInjector(RunState):
    """Applies each planned fault to the running group and logs it; ends every fault at the end of
    the window."""

    def _network_fault(self, kind: str, on: bool) -> None:
        if on:
            self._network_faults_on.add(kind)
        else:
            self._network_faults_on.discard(kind)
            self._network_quiet_since = time.monotonic()

    def _apply(self, fault: Fault) -> None:
        if self.proxy_faults is None:
            self._apply_fault(fault)
            return
        from shardlease.controlplane import ControlPlaneError

        try:
            self._apply_fault(fault)
        except ControlPlaneError as exc:  # the relay or the control plane, not the runtime under test
            self.infrastructure.append(f"{fault.describe()}: {exc}")
            self._log_fault(fault.kind, fault.target, fault.params, fault.at, f"failed: {exc}")

    def _apply_fault(self, fault: Fault) -> None:
        cluster = self.cluster
        assert cluster is not None
        faults = self.faults
        kind, target, params = fault.kind, fault.target, fault.params
        note = ""
        if kind in ("kill", "terminate", "pause", "resume"):
            replica = self._process(target or "")
            if not replica.running:
                note = f"skipped: {target} had already exited ({replica.returncode})"
            elif kind == "kill":
                faults.heal(target)
                replica.kill()
            elif kind == "terminate":
                # A partition stays on: the graceful exit must then finish without the API (the
                # manager gives up on releases at the renew deadline). A restart heals it first.
                # A frozen process is continued first: one frozen while still starting (a late
                # schedule fires a scale-up and a pause back to back) never gets to catch SIGTERM.
                if replica.paused:
                    replica.resume()
                    note = "resumed first; "
                waited = _wait_catching_sigterm(replica.pid, timeout=SIGTERM_READY_TIMEOUT)
                if waited > 0.01:
                    note += f"waited {waited:.2f} s for the new process to catch SIGTERM; "
                replica.terminate()
            elif kind == "pause":
                replica.pause()
            elif kind == "resume":
                replica.resume()
        elif kind in ("restart", "scale_up"):
            if kind == "restart":
                old = self._process(target or "")
                if old.running:
                    # Never two live processes with one identity (pod names are unique): wait for the
                    # terminated one to finish its graceful exit, within the runtime's own bound plus
                    # the time a process SIGTERMed while still starting needs to get to its handler
                    # (13 s seen under a load average of 19, when a late schedule fired a scale-up and
                    # its terminate back to back).
                    limit = float(self.config.timings.drain_timeout or 30.0) \
                        + self.config.timings.renew_deadline + 5.0 + SIGTERM_READY_TIMEOUT
                    waited = time.monotonic()
                    if old.wait(limit) is None:
                        self.failures.append(
                            f"EXIT: {target} (pid {old.pid}) was still running {limit:g} s after SIGTERM; "
                            f"restart skipped\n--- log tail ---\n{old.log_tail(40)}")
                        self._log_fault(kind, target, params, fault.at, "skipped: old process alive")
                        return
                    note = f"waited {time.monotonic() - waited:.2f} s for the old process to exit; "
            faults.heal(target)  # a new process must not inherit its predecessor's partition
            replica = self._add_replica(target or "")
            note += f"pid {replica.pid}"
        elif kind == "duplicate":
            # A second process with a live replica's identity (a pod name reused by mistake, or two
            # Deployments with one name): it must refuse, and never work beside the original.
            duplicate = self._add_replica(target or "")
            self._duplicates[target or ""] = duplicate
            self._duplicate_pids.add(duplicate.pid)
            note = f"pid {duplicate.pid} beside pid {self._process(target or '').pid}"
        elif kind == "duplicate_end":
            # In a thread: on a loaded machine the second process may still be starting (seen: 10 s
            # under a load average of 20), and a SIGTERM before it catches the signal kills it; the
            # faults planned after this one must not wait for that.
            duplicate = self._duplicates[target or ""]
            ender = threading.Thread(target=self._terminate_when_ready, args=(duplicate,),
                                     name="chaos-duplicate-end", daemon=True)
            ender.start()
            self._enders.append(ender)
            note = f"pid {duplicate.pid}"
        elif kind in ("delete_lease", "overwrite_lease"):
            # In a thread of its own, like an operator's kubectl beside the faults.
            threading.Thread(target=self._operator, args=(fault,), name=f"chaos-{kind}", daemon=True).start()
            note = "started"
        elif kind == "latency":
            faults.set_latency(float(params["seconds"]), float(params.get("jitter", 0.0)))
            worst = float(params["seconds"]) + float(params.get("jitter", 0.0))
            self._latency = (worst, self._latency[1], self._latency[2])
        elif kind == "latency_end":
            faults.set_latency(0.0)
            worst = self._latency[0]
            if worst >= self.config.timings.renew_deadline / 2:
                self._latency = (0.0, time.monotonic(), worst)
            else:
                self._latency = (0.0, self._latency[1], self._latency[2])
        elif kind == "errors":
            faults.set_errors(float(params["fraction"]), int(params["code"]),
                              int(params.get("retry_after", 1)))
        elif kind == "errors_end":
            faults.set_errors(0.0)
        elif kind == "cut_watches":
            faults.cut_watches(graceful=bool(params.get("graceful")))
        elif kind == "freeze_watches":
            faults.freeze_watches()
        elif kind == "unfreeze_watches":
            faults.unfreeze_watches()
        elif kind == "partition":
            faults.partition(target, str(params.get("mode", "error")))
        elif kind == "heal":
            faults.heal(target)
        elif kind == "reshard":
            # In a thread of its own: an operator's command does not hold up the faults planned
            # after it, whatever the API does to its requests meanwhile.
            threading.Thread(target=self._reshard, args=(int(params["shards"]), fault.at),
                             name="chaos-reshard", daemon=True).start()
            note = "started"
        elif kind == "load_shift":
            hot = {int(i) for i in params["hot"]}
            factor = float(params["factor"])
            # Twice the configured count covers every count a reshard of the run can reach.
            write_loads(self.work_dir / LOADS_FILE, [factor if i in hot else 1.0
                                                     for i in range(2 * self.config.shards)])
        elif kind in ("resets", "timeouts", "outage", "apiserver_restart", "apiserver_kill") \
                or kind in REAL_END_KINDS:
            note = self._apply_real(kind, params)
        else:  # pragma: no cover - the planner only emits the kinds above
            raise ValueError(f"unknown fault {kind!r}")
        self._log_fault(kind, target, params, fault.at, note)

    def _reshard(self, shards: int, at: float) -> None:
        """Change the group's count as an operator would (``shardlease reshard``), through the
        observer's client, which faults do not partition; injected errors are retried a few times.
        The outcome goes into the fault log as a ``reshard_done`` record."""
        from shardlease.client.leases import LeaseClient
        from shardlease.errors import ApiError
        from shardlease.runtime.reshard import reshard_on

        cluster = self.cluster
        assert cluster is not None
        store = LeaseClient(cluster.api_client(), cluster.namespace)
        note = "failed"
        if self.config.fencing:  # as docs/fencing.md says: bindings for the new count before the change
            from shardlease.runtime.fencing import install_fencing

            for _attempt in range(8):
                try:
                    install_fencing(cluster.group, "v1/configmaps", shards=shards, namespace=cluster.namespace,
                                    api_client=cluster.api_client())
                    break
                except ApiError:
                    time.sleep(0.25)
        for attempt in range(8):
            try:
                result = reshard_on(store, cluster.group, shards, namespace=cluster.namespace)
            except ApiError as exc:
                note = f"failed: {exc}"
                if attempt < 7:
                    time.sleep(0.25)
                continue
            self._reshards += 1
            note = (f"generation {result.before.generation} -> {result.state.generation}, "
                    f"{result.before.count} -> {result.state.count} shards")
            break
        self._log_fault("reshard_done", None, {"shards": shards}, at, note)

    def _operator(self, fault: Fault) -> None:
        """An operator's hand on one shard Lease, through the observer's client (as ``kubectl`` would,
        unconditionally): ``delete_lease`` deletes it; ``overwrite_lease`` writes another holder into
        it (``stranger``: a name no replica has; ``peer``: another running replica's identity). The
        shard index is taken modulo the group's count at that moment. The outcome goes into the fault
        log as ``<kind>_done``, with the monotonic times the request was sent and answered, which the
        per-object check uses (:func:`~shardlease.harness.objectjournal.classify_write_overlaps`)."""
        from kubernetes.client import CoordinationV1Api
        from kubernetes.client.exceptions import ApiException

        cluster = self.cluster
        assert cluster is not None
        api: Any = CoordinationV1Api(cluster.api_client())
        note = "failed"
        params: dict[str, Any] = dict(fault.params)
        for attempt in range(8):
            sent: float | None = None
            try:
                state = cluster.group_state()
                count = state.count if state is not None else self.config.shards
                shard = int(fault.params["shard"]) % count
                name = f"{cluster.group}-shard-{shard}"
                params.update({"shard": shard, "lease": name})
                lease = api.read_namespaced_lease(name, cluster.namespace, _request_timeout=5)
                before = (lease.spec.holder_identity or "", lease.spec.lease_transitions)
                sent = time.monotonic()
                if fault.kind == "delete_lease":
                    api.delete_namespaced_lease(name, cluster.namespace, _request_timeout=5)
                    what = "deleted"
                else:
                    holder = "operator-edit"
                    if fault.params.get("holder") == "peer":
                        peers = sorted(set(cluster.running_identities()) - {before[0]})
                        holder = peers[0] if peers else holder
                    lease.spec.holder_identity = holder
                    api.replace_namespaced_lease(name, cluster.namespace, lease, _request_timeout=5)
                    what = f"holder set to {holder!r}"
                answered = time.monotonic()
                self.operator_acts[shard].append((sent, answered))
                params["acts"] = [[round(sent, 4), round(answered, 4)]]
                note = f"{what} (was held by {before[0]!r}, leaseTransitions {before[1]})"
                break
            except ApiException as exc:
                note = f"failed: HTTP {exc.status} {exc.reason}"
                if exc.status == 404:
                    note = "skipped: the Lease was absent"
                    break
            except Exception as exc:  # injected errors and latency reach the operator too
                note = f"failed: {exc!r}"
                if sent is not None:  # no answer: it may have happened all the same
                    act = (sent, time.monotonic())
                    self.operator_acts[int(params["shard"])].append(act)
                    params.setdefault("acts", []).append([round(act[0], 4), round(act[1], 4)])
            if attempt < 7:
                time.sleep(0.25)
        self._log_fault(f"{fault.kind}_done", None, params, fault.at, note)

    def _apply_real(self, kind: str, params: Mapping[str, Any]) -> str:
        """A real-server fault (:class:`ProxyFaults`); returns a note for the fault log."""
        faults = self.proxy_faults
        if faults is None:
            raise ValueError(f"{kind} is a real-server fault; this run uses the dev-server")
        family = kind.removesuffix("_end")
        if kind == "resets":
            faults.resets(float(params["fraction"]))
        elif kind == "timeouts":
            faults.timeouts(int(params["close_after_ms"]))
        elif kind in ("resets_end", "timeouts_end"):
            faults.end(family)
        elif kind in ("outage", "outage_end"):
            faults.outage(kind == "outage")
        elif kind == "apiserver_restart":
            self._network_fault(kind, True)
            took = faults.restart_apiserver()
            self._network_fault(kind, False)
            return f"ready again after {took:.2f} s"
        elif kind == "apiserver_kill":
            faults.kill_apiserver()
            family = "apiserver_kill"
        elif kind == "apiserver_start":
            took = faults.start_apiserver()
            self._network_fault("apiserver_kill", False)
            return f"ready after {took:.2f} s"
        self._network_fault(family, not kind.endswith("_end"))
        return ""

    def _quiesce(self) -> None:
        """End every fault: clear the dev-server's (or the relay's) knobs, then SIGCONT every frozen
        replica."""
        cluster = self.cluster
        assert cluster is not None
        self.faults.clear()
        if self._network_faults_on:
            self._network_faults_on.clear()
            self._network_quiet_since = time.monotonic()
        self._log_fault("clear", None, {}, self.config.duration)
        for replica in cluster.running():
            if replica.paused:
                replica.resume()
                self._log_fault("resume", replica.identity, {}, self.config.duration, "end of window")

    def _terminate_when_ready(self, replica: Replica) -> None:
        if replica.running:
            _wait_catching_sigterm(replica.pid, timeout=SIGTERM_READY_TIMEOUT)
            replica.terminate()

    def _end_duplicates(self) -> None:
        """Every duplicate process gone (its ``duplicate_end`` sent SIGTERM once it could take it)
        before recovery is judged: the group's identities are then its replicas' again."""
        for ender in self._enders:
            ender.join(SIGTERM_READY_TIMEOUT + 1.0)
        for duplicate in self._duplicates.values():
            if duplicate.running and "SIGTERM" not in [name for _, name in duplicate.signals]:
                self._terminate_when_ready(duplicate)
            duplicate.wait(15.0)
