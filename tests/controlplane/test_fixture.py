"""The ``kube_apiserver`` fixture without binaries, as a user's suite meets it: a skip that says how
to build them, except under ``CI=true``, where the same test fails (a CI run must not pass by
skipping the real server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

USER_TEST = '''
def test_needs_the_real_server(kube_apiserver_kubeconfig):
    assert kube_apiserver_kubeconfig
'''


@pytest.mark.parametrize(("ci", "code", "outcome"), [("", 0, "1 skipped"), ("true", 1, "1 error")])
def test_missing_assets_skip_locally_and_fail_in_ci(tmp_path: Path, ci: str, code: int,
                                                    outcome: str) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBEBUILDER_ASSETS", "CI")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "empty-cache"), PYTHONPATH=str(REPO), CI=ci)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "shardlease.testing",
         "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stdout + done.stderr
    assert outcome in done.stdout, done.stdout
    assert "scripts/build-kube-assets" in done.stdout and "KUBEBUILDER_ASSETS" in done.stdout
