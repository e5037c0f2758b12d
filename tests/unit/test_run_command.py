"""``shardlease run``: handler import errors and configuration errors exit 2 with a clear message."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest

from shardlease.cli import main
from shardlease.commands.run import HandlerImportError, load_handler


@pytest.fixture()
def handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "slhandlers_demo.py").write_text(textwrap.dedent("""
        def handle(shard):
            shard.stopped.wait()

        class Box:
            @staticmethod
            def inner(shard):
                return None

        NOT_CALLABLE = 3
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield "slhandlers_demo"
    sys.modules.pop("slhandlers_demo", None)
    root = logging.getLogger()
    for handler in list(root.handlers):  # `run` configures logging; do not leak it into other tests
        if handler.get_name() == "shardlease":
            root.removeHandler(handler)


def test_load_handler_from_the_current_directory(handler_module: str) -> None:
    assert callable(load_handler(f"{handler_module}:handle"))
    assert callable(load_handler(f"{handler_module}:Box.inner"))


@pytest.mark.parametrize("target, message", [
    ("no_colon", "MODULE:FUNC"),
    ("slhandlers_demo:missing", "has no attribute 'missing'"),
    ("slhandlers_demo:NOT_CALLABLE", "is not callable"),
    ("surely_not_a_module_xyz:handle", "no module named 'surely_not_a_module_xyz'"),
])
def test_load_handler_errors(handler_module: str, target: str, message: str) -> None:
    with pytest.raises(HandlerImportError, match=message):
        load_handler(target)


def test_config_error_exits_2_with_formatted_message(handler_module: str, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDLEASE_SHARDS", raising=False)
    code = main(["run", f"{handler_module}:handle", "--group", "g", "--shards", "zero"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("shardlease run: ") and "shards" in err and "--shards" in err


def test_environment_fills_what_flags_do_not_give(handler_module: str, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDLEASE_RETRY_PERIOD", "nonsense")
    code = main(["run", f"{handler_module}:handle", "--group", "g", "--shards", "4"])
    assert code == 2
    assert "retry_period" in capsys.readouterr().err
    # and a flag wins over the environment
    monkeypatch.setenv("SHARDLEASE_SHARDS", "nonsense")
    monkeypatch.setenv("SHARDLEASE_RETRY_PERIOD", "2")
    code = main(["run", f"{handler_module}:missing", "--group", "g", "--shards", "4"])
    assert code == 2
    assert "has no attribute" in capsys.readouterr().err


def test_missing_kubeconfig_exits_2(handler_module: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["run", f"{handler_module}:handle", "--group", "g", "--shards", "2",
                 "--kubeconfig", str(tmp_path / "nope")])
    assert code == 2
    assert "kubeconfig" in capsys.readouterr().err
