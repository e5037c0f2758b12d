"""The pure core: every rule of shardlease, with no I/O, no threads and an injected clock.

``keys`` (shard_for_key), ``assignment`` (the bounded-load ring), ``records`` (the Lease contract),
``clock``, ``cache`` (the local picture of a group's Leases), ``elector`` (per-shard decisions),
``membership`` (who is in the group), ``bodies`` (the Lease objects we write) and ``reactor`` (the
replica's state machine: events in, commands out). Table-tested without a server and without sleeping;
import-linter keeps it from importing the client, runtime, harness or CLI layers.
"""
