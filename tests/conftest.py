"""One seed for every randomised test of a session, printed, so any failure can be repeated exactly.

The property tests (hypothesis) draw their examples from this seed: ``$SHARDLEASE_TEST_SEED`` if set,
else ``--hypothesis-seed`` if given, else a fresh random one. It is shown in the header and again in
the summary, and a failing property test also prints the ``@reproduce_failure`` blob. Repeat a run with
``SHARDLEASE_TEST_SEED=<seed> python -m pytest ...``. (The chaos suite prints its own seed, see
tests/chaos/conftest.py; seeded ``random.Random(n)`` uses in tests are fixed and need none.)
"""

from __future__ import annotations

import os
import random

import pytest

ENV_TEST_SEED = "SHARDLEASE_TEST_SEED"
_SEED: list[int] = []


def _session_seed(config: pytest.Config) -> int:
    raw = os.environ.get(ENV_TEST_SEED) or config.getoption("--hypothesis-seed", default=None)
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise pytest.UsageError(f"{ENV_TEST_SEED} / --hypothesis-seed must be a whole number, got {raw!r}") \
                from None
    return random.SystemRandom().randrange(2**31)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import core, settings

    seed = _session_seed(config)
    _SEED.append(seed)
    core.global_force_seed = seed  # what --hypothesis-seed does; set here so the seed is always known
    settings.register_profile("shardlease", print_blob=True)
    settings.load_profile("shardlease")


def pytest_report_header(config: pytest.Config) -> str:
    return f"test seed {_SEED[0]} (repeat with {ENV_TEST_SEED}={_SEED[0]})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SEED:
        terminalreporter.write_line(f"test seed {_SEED[0]} -- repeat with: {ENV_TEST_SEED}={_SEED[0]} python -m pytest")
