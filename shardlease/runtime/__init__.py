"""The runtime: the threaded shell around the core reactor and everything that runs in a replica.

``manager`` (``ShardManager``: threads, a ``LeaseStore``, the watch, signals), ``handlers`` (``Shard``
and the thread/task runners), ``health`` (``/healthz``, ``/readyz``, ``/health``, ``/metrics``),
``metrics``, ``logs`` and ``signals``. It depends on the core and the client layers, never on the test
harness or the CLI.
"""
