"""``shardlease run``: handler import errors, handlers that cannot take a Shard and configuration errors
exit 2 with a clear message; handler code's own log lines carry the replica's context."""

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

        def handle_no_args():
            return None

        def handle_two(a, b):
            return None

        class NoArgs:
            def __init__(self):
                pass
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


def test_max_write_rate_flag_reaches_the_config_check(handler_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", f"{handler_module}:handle", "--group", "g", "--shards", "4", "--max-write-rate", "0.3"])
    assert code == 2
    assert "max_write_rate: must leave room for shard renewals" in capsys.readouterr().err


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


def test_misspelled_function_gets_did_you_mean(handler_module: str) -> None:
    with pytest.raises(HandlerImportError) as caught:
        load_handler(f"{handler_module}:handel")
    message = str(caught.value)
    assert "has no attribute 'handel'" in message and "did you mean 'handle'" in message, message
    with pytest.raises(HandlerImportError, match=r"'slhandlers_demo.Box' has no attribute 'iner'.*'inner'"):
        load_handler(f"{handler_module}:Box.iner")


def test_missing_module_names_it_and_how_to_make_it_importable(handler_module: str) -> None:
    with pytest.raises(HandlerImportError) as caught:
        load_handler("slhandlers_dmeo:handle")
    message = str(caught.value)
    assert "no module named 'slhandlers_dmeo'" in message and "did you mean 'slhandlers_demo'" in message
    assert "sys.path" in message and "PYTHONPATH" in message, message


def test_not_callable_says_what_it_is(handler_module: str) -> None:
    with pytest.raises(HandlerImportError, match=r"NOT_CALLABLE is not callable: it is 3 of type int"):
        load_handler(f"{handler_module}:NOT_CALLABLE")


@pytest.mark.parametrize("func, signature", [
    ("handle_no_args", "handle_no_args()"),
    ("handle_two", "handle_two(a, b)"),
    ("NoArgs", "NoArgs()"),
])
def test_handler_that_cannot_take_a_shard_exits_2_at_start(
        handler_module: str, func: str, signature: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The kubeconfig does not exist: the handler must be refused before any cluster is needed.
    code = main(["run", f"{handler_module}:{func}", "--group", "g", "--shards", "2",
                 "--kubeconfig", "/nonexistent/kubeconfig"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"handler {handler_module}:{signature} cannot be called with one argument" in err, err
    assert "a handler takes one argument, the Shard: def handle(shard): ..." in err, err


def test_handler_log_lines_carry_identity_group_and_shard(kubeconfig: str, tmp_path: Path) -> None:
    """The real command, against the dev-server: what the handler logs through its own logger
    carries the replica's identity, the group and the shard, in both formats."""
    import json
    import os
    import queue
    import signal
    import subprocess
    import threading
    import time

    (tmp_path / "sllogging_app.py").write_text(textwrap.dedent("""
        import logging

        def handle(shard):
            logging.getLogger("myapp").info("hello from my handler")
            shard.stopped.wait()
    """))
    for fmt in ("text", "json"):
        group = f"logs-{fmt}"
        process = subprocess.Popen(
            [sys.executable, "-m", "shardlease", "run", "sllogging_app:handle", "--group", group,
             "--shards", "2", "--identity", "pod-a", "--kubeconfig", kubeconfig, "--log-format", fmt,
             "--lease-duration", "2", "--renew-deadline", "1.2", "--retry-period", "0.3"],
            cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert process.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda stream=process.stderr, lines=lines: [lines.put(x) for x in stream],
                         daemon=True).start()
        mine: list[str] = []
        deadline = time.monotonic() + 30
        try:
            while len(mine) < 2 and time.monotonic() < deadline and process.poll() is None:
                try:
                    line = lines.get(timeout=0.5)
                except queue.Empty:
                    continue
                if "hello from my handler" in line:
                    mine.append(line)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert len(mine) == 2, f"{fmt}: the handler's lines did not appear"
        if fmt == "text":
            shards = sorted(line.split(" shard=")[1].split()[0] for line in mine)
            assert all(f"myapp identity=pod-a group={group} shard=" in line for line in mine), mine
        else:
            docs = [json.loads(line) for line in mine]
            assert all((d["logger"], d["identity"], d["group"]) == ("myapp", "pod-a", group) for d in docs)
            shards = sorted(str(d["shard"]) for d in docs)
        assert shards == ["0", "1"], mine


def test_help_gives_the_identity_default_in_the_order_used(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: $POD_NAME, else the hostname)" in text, text
