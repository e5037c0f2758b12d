"""Set-up for the chaos suite: the seed (printed, overridable with ``SHARDLEASE_CHAOS_SEED``) and a
terminal-summary section that shows it, pass or fail, so every run can be repeated exactly."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from typing import Any

import pytest

from shardlease.harness.chaos import ENV_SEED, seed_from_env
from shardlease.harness.localcluster import child_processes

#: Lines for the terminal summary ("shardlease chaos").
SUMMARY: list[str] = []


def missing_runtime() -> str | None:
    """Why replica processes cannot run yet (the chaos run needs ``shardlease run``), or ``None``."""
    for module in ("shardlease.commands.run", "shardlease.runtime.manager", "shardlease.devserver"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not available yet"
    from shardlease.cli import COMMAND_MODULES

    if "shardlease.commands.run" not in COMMAND_MODULES:
        return "`shardlease run` is not registered in shardlease.cli.COMMAND_MODULES"
    return None


@pytest.fixture(scope="session")
def chaos_seed() -> int:
    """One seed per session: ``$SHARDLEASE_CHAOS_SEED`` or a fresh random one."""
    seed = seed_from_env()
    print(f"chaos seed {seed} (repeat with {ENV_SEED}={seed})")
    SUMMARY.append(f"seed {seed} -- repeat with: {ENV_SEED}={seed} pytest tests/chaos")
    return seed


@pytest.fixture(scope="module", autouse=True)
def no_child_processes_left() -> Iterator[None]:
    """Whatever a chaos test starts, nothing of it may outlive the module."""
    before = set(child_processes())
    yield
    left = set(child_processes()) - before
    assert not left, f"chaos tests left child processes running: {sorted(left)}"


def assert_work_was_measured(figures: dict[str, Any]) -> None:
    """Not vacuous. Object workload: every object was written at least once, the user's changes went
    through, and the final reconcile was measured. Key workload: its work coverage was measured, or
    (coverage being defined for one shard count only) the run resharded, and then the report's own
    liveness check, every shard of the final generation worked on, is what ``report.ok`` includes."""
    if "writes" in figures:
        assert figures["units"] >= figures["objects"] > 0, figures
        assert figures["user_changes"] > 2 * figures["objects"], figures
        assert "objects_reconciled_after_s" in figures, figures
        return
    if figures.get("generations", 1) == 1:
        assert not math.isnan(figures.get("coverage", math.nan)), figures
    else:
        assert figures["reshards"] >= 1, figures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SUMMARY:
        return
    terminalreporter.section("shardlease chaos")
    for line in SUMMARY:
        terminalreporter.write_line(line)
