"""The one exception this package raises for anything a user can fix."""

from __future__ import annotations


class ControlPlaneError(RuntimeError):
    """The real control plane cannot start or stopped working; the message names the binary, its
    log file and the fix."""
