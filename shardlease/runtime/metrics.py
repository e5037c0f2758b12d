"""Prometheus metrics for one manager, in its own ``CollectorRegistry``.

A registry per manager (rather than the process-global default) lets several managers share a process,
which tests and multi-group programs do; ``/metrics`` serves the manager's registry.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ManagerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HANDOFF_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ManagerMetrics:
    def __init__(self, group: str, identity: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        labels = ("group", "identity")
        r = self.registry
        self._lv = (group, identity)
        self.shards_held = Gauge("shardlease_shards_held", "Shards this replica holds", labels, registry=r).labels(*self._lv)
        self.shards_watched = Gauge("shardlease_shards_watched",
                                    "Shard Leases this replica needs to watch: held, assigned, or inherited if one "
                                    "peer failed (past half the group it watches them all)", labels, registry=r).labels(*self._lv)
        self.shards_desired = Gauge("shardlease_shards_desired", "Shards the assignment gives this replica",
                                    labels, registry=r).labels(*self._lv)
        self.members = Gauge("shardlease_members", "Live members of the group (the ring shards are assigned over)",
                             labels, registry=r).labels(*self._lv)
        self.acquisitions = Counter("shardlease_acquisitions", "Shard Leases acquired", labels, registry=r).labels(*self._lv)
        self.releases = Counter("shardlease_releases", "Shard Leases released", labels, registry=r).labels(*self._lv)
        self.losses = Counter("shardlease_losses", "Shards lost (renew deadline passed or overwritten)",
                              labels, registry=r).labels(*self._lv)
        self.handler_errors = Counter("shardlease_handler_errors", "Handler runs that raised", labels,
                                      registry=r).labels(*self._lv)
        self.identity_conflict = Gauge(
            "shardlease_identity_conflict",
            "1 while another live process holds this replica's identity (this one takes no shards)",
            labels, registry=r).labels(*self._lv)
        self.count_mismatch = Gauge(
            "shardlease_shard_count_mismatch",
            "1 while this replica's configured shard count differs from the group's (it runs the group's; "
            "normal during a rolling update that changes the count)",
            labels, registry=r).labels(*self._lv)
        # Resharding (docs/resharding.md).
        self.generation = Gauge("shardlease_generation", "The group generation this replica runs",
                                labels, registry=r).labels(*self._lv)
        self.shard_count = Gauge("shardlease_shard_count", "The shard count of the generation this replica runs",
                                 labels, registry=r).labels(*self._lv)
        self.reshards = Counter("shardlease_reshards", "Switches to a new generation (count change) this "
                                "replica went through", labels, registry=r).labels(*self._lv)
        self.reshard_pause = Histogram(
            "shardlease_reshard_pause_seconds", "From seeing a new generation until its handlers may start "
            "(every shard Lease stamped with it): the pause of a switch as this replica saw it",
            labels, buckets=_HANDOFF_BUCKETS, registry=r).labels(*self._lv)
        # Load-aware assignment (docs/load.md).
        self.load_imbalance = Gauge(
            "shardlease_load_imbalance", "The busiest replica's load over its fair share, from the member "
            "Leases as this replica last read them (0: no load reported)", labels, registry=r).labels(*self._lv)
        self.load_rebalances = Counter("shardlease_load_rebalances", "Load snapshots this replica published "
                                       "(as the oldest member)", labels, registry=r).labels(*self._lv)
        self.load_moves = Counter("shardlease_load_moves", "Shards the load snapshots moved, as this replica "
                                  "computed them", labels, registry=r).labels(*self._lv)
        self.capacity = Gauge("shardlease_capacity", "This replica's capacity", labels, registry=r).labels(*self._lv)
        self.load = Gauge("shardlease_load", "Sum of the smoothed loads of the shards this replica holds",
                          labels, registry=r).labels(*self._lv)
        self.stuck_handlers = Gauge("shardlease_stuck_handlers", "Handlers that did not return within drain_timeout",
                                    labels, registry=r).labels(*self._lv)
        self.handoff_seconds = Histogram("shardlease_handoff_duration_seconds",
                                         "From deciding to give a shard away until its Lease was released",
                                         labels, buckets=_HANDOFF_BUCKETS, registry=r).labels(*self._lv)
        self.renew_seconds = Histogram("shardlease_renew_latency_seconds", "Latency of successful renewals",
                                       labels, buckets=_LATENCY_BUCKETS, registry=r).labels(*self._lv)
        self.credentials_rejected = Counter(
            "shardlease_credentials_rejected", "Requests the API server answered 401 Unauthorized (or that "
            "went unsent because no credentials could be read): the service account token or kubeconfig "
            "user is not accepted", labels, registry=r).labels(*self._lv)
        self._api_errors = Counter("shardlease_api_errors", "Failed API requests by kind",
                                   labels + ("kind",), registry=r)
        # The write budget (max_write_rate, core/writebudget.py); unset without one.
        self.write_budget = Gauge("shardlease_write_budget", "max_write_rate: Lease writes per second this replica "
                                  "may make", labels, registry=r).labels(*self._lv)
        self.writes_asked = Gauge("shardlease_writes_asked", "Lease writes per second the held Leases (shards + "
                                  "member) would make at the plain renew interval", labels, registry=r).labels(*self._lv)
        self.writes_planned = Gauge("shardlease_writes_planned", "Lease writes per second the held Leases make with "
                                    "renewals spaced for the write budget", labels, registry=r).labels(*self._lv)
        self.budget_renew_interval = Gauge("shardlease_write_budget_renew_interval_seconds",
                                           "Seconds between renewals of one held shard Lease under the write budget",
                                           labels, registry=r).labels(*self._lv)
        self.write_budget_exceeded = Gauge(
            "shardlease_write_budget_exceeded", "1 while the held Leases need more writes per second than "
            "max_write_rate even at the longest safe renew interval (renew_deadline - retry_period)",
            labels, registry=r).labels(*self._lv)
        self.write_budget_forced = Counter(
            "shardlease_write_budget_forced", "Renewals sent at the bound (renew_deadline - retry_period after the "
            "last one) without waiting for a slot of the write budget", labels, registry=r).labels(*self._lv)
        self.oldest_renewal = Gauge("shardlease_oldest_renewal_age_seconds",
                                    "Seconds since the start of the oldest last-successful renewal among held shards",
                                    labels, registry=r).labels(*self._lv)

        # shard.objects(): per resource ("configmaps", "apps/v1 deployments" ...), see runtime/objects.py.
        self._object_events = Counter(
            "shardlease_object_events", "Watch and list items received for shard.objects(), by outcome: "
            "delivered to a held shard's handler, or filtered out on the client (server-side filtering off)",
            labels + ("resource", "outcome"), registry=r)
        self._object_lists = Counter("shardlease_object_lists", "Lists made for shard.objects() (start, "
                                     "re-target after the held shards changed, relist after 410)",
                                     labels + ("resource",), registry=r)
        self._object_server_filtered = Gauge(
            "shardlease_object_server_filtering",
            "1 if the API server applied the shard selector on the last list (KEP-5866 gate on), else 0",
            labels + ("resource",), registry=r)

    def object_events(self, resource: str, outcome: str, n: int = 1) -> None:
        self._object_events.labels(*self._lv, resource, outcome).inc(n)

    def object_list(self, resource: str, server_filtered: bool) -> None:
        self._object_lists.labels(*self._lv, resource).inc()
        self._object_server_filtered.labels(*self._lv, resource).set(1 if server_filtered else 0)

    def api_error(self, kind: str) -> None:
        self._api_errors.labels(*self._lv, kind).inc()

    def set_oldest_renewal_source(self, fn: Callable[[], float]) -> None:
        self.oldest_renewal.set_function(fn)
