"""The real-server mode's fault knobs: toxics on the relay in front of kube-apiserver, and its processes."""

from __future__ import annotations

import time
from typing import Any


class ProxyFaults:
    """The real-server mode's fault knobs: toxics on the toxiproxy relay between the replicas and
    kube-apiserver, and the control plane's own processes. Method names follow the dev-server's
    (``set_latency``, ``heal``, ``clear``) where they mean the same thing, so the runner applies
    either. There is one relay for every replica, so there are no per-client partitions: ``heal`` is
    a no-op and an ``outage`` cuts everyone.

    Toxics are kept as a desired state and never changed on a disabled relay: toxiproxy 2.12 can hang
    an API call that removes a toxic while the proxy is disabled (seen here: the DELETE never
    answered). So an outage takes the toxics off, disables, and puts the wanted ones back on enable.
    """

    def __init__(self, proxy: Any, plane: Any, extra: Any = None) -> None:
        self.proxy = proxy    # shardlease.controlplane.Proxy
        self.plane = plane    # shardlease.controlplane.RealControlPlane
        self.extra = extra    # shardlease.controlplane.ExtraApiServer (apiservers=2) or None
        self.disabled = False
        self._wanted: dict[str, tuple[str, dict[str, float]]] = {}

    def _set(self, name: str, toxic: tuple[str, dict[str, float]] | None) -> None:
        if toxic is None:
            self._wanted.pop(name, None)
        else:
            self._wanted[name] = toxic
        if self.disabled:
            return  # applied when the relay comes back
        self.proxy.remove_toxic(name)
        if toxic is not None:
            self._add(name, toxic)

    def _add(self, name: str, toxic: tuple[str, dict[str, float]]) -> None:
        kind, attributes = toxic
        attrs = dict(attributes)
        toxicity = attrs.pop("toxicity", 1.0)
        self.proxy.add_toxic(name, kind, toxicity=toxicity, **attrs)

    def heal(self, target: str | None = None) -> None:
        """Nothing to heal: partitions are per client, and this mode has none."""

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Each answer delayed by ``seconds`` plus up to ``jitter`` (toxiproxy's jitter is +-, so the
        latency is centred): what the dev-server's latency knob does, on the wire."""
        on = seconds > 0 or jitter > 0
        self._set("latency", ("latency", {"latency": round(1000 * (seconds + jitter / 2)),
                                          "jitter": round(1000 * jitter / 2)}) if on else None)

    def resets(self, fraction: float) -> None:
        """That fraction of connections (new ones and those open) reset by peer as data arrives."""
        self._set("resets", ("reset_peer", {"timeout": 0, "toxicity": fraction}))

    def timeouts(self, close_after_ms: int) -> None:
        """Every connection black-holed (nothing gets through) and closed after ``close_after_ms``."""
        self._set("timeouts", ("timeout", {"timeout": close_after_ms}))

    def end(self, toxic: str) -> None:
        self._set(toxic, None)

    def outage(self, on: bool) -> None:
        """The relay disabled (every connection closed, new ones refused) or enabled again."""
        if on and not self.disabled:
            for name in self._wanted:
                self.proxy.remove_toxic(name)
            self.proxy.disable()
            self.disabled = True
        elif not on and self.disabled:
            self.proxy.enable()
            self.disabled = False
            for name, toxic in self._wanted.items():
                self._add(name, toxic)

    def restart_apiserver(self) -> float:
        """kube-apiserver SIGKILLed and started again (etcd kept); seconds until it was ready."""
        began = time.monotonic()
        self.plane.restart_apiserver()
        return time.monotonic() - began

    def kill_apiserver(self) -> None:
        if self.extra is None:
            raise ValueError("apiserver_kill needs a second kube-apiserver (apiservers=2)")
        self.extra.kill()

    def start_apiserver(self) -> float:
        began = time.monotonic()
        if self.extra is not None and not self.extra.running:
            self.extra.start()
        return time.monotonic() - began

    def clear(self) -> None:
        """Normal service: no toxic, relay enabled, every kube-apiserver running."""
        self._wanted.clear()
        self.outage(False)
        self.proxy.clear()
        self.start_apiserver()
