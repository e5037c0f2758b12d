"""Run the dev-server in this process for the benchmark, optionally under a per-thread cProfile.

``bench/devserver.py`` normally starts ``python -m shardlease dev-server``; it uses this script when
the CLI does not dispatch (yet) and for the profiling pass. Why per-thread profiling: ``cProfile``
only sees the thread that enabled it, while the dev-server answers requests on its own background
thread(s). Wrapping ``threading.Thread.run`` before the server is imported gives every thread its
own profiler; the profiles are merged when the server has stopped and its threads have ended.

Usage: ``python bench/_serve.py [--profile OUT.txt] [--profile-data OUT.prof]``. Prints the URL on
the first stdout line, serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

_profiles: list[cProfile.Profile] = []
_profiles_lock = threading.Lock()


def install_thread_profiling() -> None:
    """Give every thread started from now on its own profiler, kept after the thread ends."""
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            original_run(self)
        finally:
            profiler.disable()
            with _profiles_lock:
                _profiles.append(profiler)

    threading.Thread.run = profiled_run  # type: ignore[method-assign]


def write_profile(text_path: Path, data_path: Path | None, top: int = 30) -> None:
    with _profiles_lock:
        profiles = list(_profiles)
    if not profiles:
        text_path.write_text("no thread finished under the profiler\n")
        return
    stats = pstats.Stats(profiles[0])
    for profiler in profiles[1:]:
        stats.add(profiler)
    if data_path is not None:
        stats.dump_stats(str(data_path))
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    out.write("\n\n==== by cumulative time ====\n")
    stats.sort_stats("cumulative").print_stats(top)
    text_path.write_text(out.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", type=Path)
    parser.add_argument("--profile", type=Path, help="write a text profile here at exit")
    parser.add_argument("--profile-data", type=Path, help="also write raw pstats data here")
    args = parser.parse_args()
    if args.profile:
        install_thread_profiling()
    from shardlease.devserver import DevServer  # after the patch, so its threads are profiled

    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with DevServer(host=args.host, port=args.port) as server:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        print(server.url, flush=True)
        while not stop.wait(0.2):
            pass
    if args.profile:
        # Connection threads finish on their own once their sockets close; give them a moment.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and threading.active_count() > 1:
            time.sleep(0.05)
        write_profile(args.profile, args.profile_data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
