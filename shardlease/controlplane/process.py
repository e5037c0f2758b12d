"""One control-plane binary as a child process that can never outlive us.

Each child runs in its own session (so a signal to its process group reaches anything it spawns, and
a Ctrl-C in the terminal reaches only us, who then stop it in order) and asks the kernel to SIGKILL it
when its parent dies (``PR_SET_PDEATHSIG``, Linux), which covers a test process that is itself
SIGKILLed. The request is made by a tiny Python trampoline that then ``exec``s the binary in place
(same PID; the setting survives ``execve``), rather than in a ``preexec_fn``, which is unsafe in a
process with threads. As with :mod:`shardlease.harness.localcluster`, the kernel fires the hook when the
*thread* that started the child exits, so start control planes from a long-lived thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# argv: parent pid, binary, args...  Exit code 70 if the parent is already gone.
_TRAMPOLINE = """\
import os, signal, sys
parent = int(sys.argv[1])
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != parent:
    os._exit(70)
os.execv(sys.argv[2], sys.argv[2:])
"""


class Child:
    """A started binary: its process (``.process.pid``), its log file, and an orderly stop."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab", buffering=0) as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), *self.argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=dict(env) if env is not None else None,
            )

    @property
    def running(self) -> bool:
        """Until the binary exits (then it is reaped, so its PID is free)."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, grace: float, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process group, wait up to ``grace`` s, then SIGKILL the group; returns
        once the process is reaped. Safe to call again."""
        if self.running:
            self._signal_group(sig)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may hold something the binary spawned even after the binary exited.
        self._signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
