"""Handler runners: thread and asyncio, stop/cancel, restart after a crash, drain detection; and the
signature check that refuses a handler which cannot take a Shard."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shardlease.core.clock import FakeClock
from shardlease.errors import ConfigError, HandlerSignatureError
from shardlease.runtime.handlers import HandlerRun, HandlerRunner, Shard, check_handler_signature, is_async_handler

LOG = logging.getLogger("test-handlers")


class Exits:
    def __init__(self) -> None:
        self.runs: list[HandlerRun] = []
        self.event = threading.Event()

    def __call__(self, run: HandlerRun) -> None:
        self.runs.append(run)
        self.event.set()


def runner_for(handler, exits: Exits, **kw) -> HandlerRunner:  # type: ignore[no-untyped-def]
    return HandlerRunner(handler, on_exit=exits, logger=LOG, **kw)


def test_sync_handler_runs_in_its_own_thread_and_stops() -> None:
    seen: list[str] = []

    def handle(shard: Shard) -> None:
        seen.append(threading.current_thread().name)
        shard.stopped.wait()

    exits = Exits()
    runner = runner_for(handle, exits)
    run = runner.start(Shard(3, 8, 5))
    time.sleep(0.05)
    assert not run.done.is_set()
    runner.stop(run)
    assert exits.event.wait(2.0)
    assert run.done.is_set() and exits.runs == [run]
    assert seen and seen[0].endswith("shard-3")


def test_async_handler_is_cancelled_on_stop() -> None:
    cancelled = threading.Event()

    async def handle(shard: Shard) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    exits = Exits()
    runner = runner_for(handle, exits)
    assert runner.is_async
    run = runner.start(Shard(0, 4, 1))
    time.sleep(0.05)
    runner.stop(run)
    assert exits.event.wait(2.0)
    assert cancelled.is_set() and run.shard.stopped.is_set()
    runner.close()


def test_async_handlers_share_one_loop_thread() -> None:
    threads: set[int] = set()

    async def handle(shard: Shard) -> None:
        threads.add(threading.get_ident())
        await asyncio.sleep(3600)

    exits = Exits()
    runner = runner_for(handle, exits)
    runs = [runner.start(Shard(i, 4, 0)) for i in range(4)]
    time.sleep(0.1)
    for run in runs:
        runner.stop(run)
    deadline = time.monotonic() + 2
    while len(exits.runs) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(exits.runs) == 4 and len(threads) == 1
    runner.close()


def test_raising_handler_is_logged_and_restarted_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    def handle(shard: Shard) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ValueError("boom")
        shard.stopped.wait()

    exits = Exits()
    runner = runner_for(handle, exits, restart_backoff=(0.05, 0.2))
    with caplog.at_level(logging.ERROR, logger="test-handlers"):
        run = runner.start(Shard(1, 2, 0))
        deadline = time.monotonic() + 2
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(calls) == 3
    assert calls[2] - calls[1] >= calls[1] - calls[0] - 0.01  # backoff grows
    assert "boom" in caplog.text and "Traceback" in caplog.text
    assert not run.done.is_set()
    runner.stop(run)
    assert exits.event.wait(2.0)


def test_raising_async_handler_is_restarted() -> None:
    calls = []

    async def handle(shard: Shard) -> None:
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError("async boom")
        await asyncio.sleep(3600)

    exits = Exits()
    runner = runner_for(handle, exits, restart_backoff=(0.02, 0.1))
    run = runner.start(Shard(1, 2, 0))
    deadline = time.monotonic() + 2
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) == 2 and not run.done.is_set()
    runner.stop(run)
    assert exits.event.wait(2.0)
    runner.close()


def test_stop_during_restart_backoff_ends_the_run_at_once() -> None:
    def handle(shard: Shard) -> None:
        raise ValueError("always")

    exits = Exits()
    runner = runner_for(handle, exits, restart_backoff=(30.0, 60.0))
    run = runner.start(Shard(0, 1, 0))
    time.sleep(0.05)
    t0 = time.monotonic()
    runner.stop(run)
    assert exits.event.wait(2.0)
    assert time.monotonic() - t0 < 1.0


def test_a_handler_ignoring_stop_is_visible_as_not_done() -> None:
    release = threading.Event()

    def handle(shard: Shard) -> None:
        release.wait()  # ignores shard.stopped: a stuck handler

    exits = Exits()
    clock = FakeClock()
    runner = runner_for(handle, exits, clock=clock)
    run = runner.start(Shard(0, 1, 0))
    runner.stop(run)
    assert run.stop_requested_at == clock.monotonic()
    assert not exits.event.wait(0.2)
    release.set()
    assert exits.event.wait(2.0)


def test_async_handler_swallowing_cancel_is_stuck_until_it_returns() -> None:
    release = threading.Event()

    async def handle(shard: Shard) -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass  # misbehaving: ignores cancellation

    exits = Exits()
    runner = runner_for(handle, exits)
    run = runner.start(Shard(0, 1, 0))
    time.sleep(0.05)
    runner.stop(run)
    assert not exits.event.wait(0.2)
    release.set()
    assert exits.event.wait(2.0)
    runner.close()


def test_async_run_stopped_before_it_started_never_calls_the_handler() -> None:
    calls = []

    async def handle(shard: Shard) -> None:
        calls.append(1)

    exits = Exits()
    runner = runner_for(handle, exits)
    run = runner.start(Shard(0, 1, 0))
    runner.stop(run)
    assert exits.event.wait(2.0)
    assert run.done.is_set()
    runner.close()


def test_shard_valid_tracks_stop_and_deadline() -> None:
    clock = FakeClock()
    shard = Shard(0, 4, 7, clock=clock, valid_until=clock.monotonic() + 10)
    assert shard.valid()
    clock.advance(9.9)
    assert shard.valid()
    clock.advance(0.1)
    assert not shard.valid()
    shard._extend(clock.monotonic() + 10)
    assert shard.valid()
    shard.stopped.set()
    assert not shard.valid()


def test_is_async_handler_detects_callable_objects() -> None:
    class AsyncCallable:
        async def __call__(self, shard: Shard) -> None:
            return None

    def sync(shard: Shard) -> None:
        return None

    assert is_async_handler(AsyncCallable())
    assert not is_async_handler(sync)


# ---- the signature check done before any shard is taken ---------------------------------------------

def _takes_shard(shard: Shard) -> None: ...
def _takes_nothing() -> None: ...
def _takes_two(a: object, b: object) -> None: ...
def _takes_extra_keyword(shard: Shard, *, batch: int) -> None: ...
def _defaults(shard: Shard, batch: int = 10, *rest: object, **options: object) -> None: ...
def _anything(*args: object, **kwargs: object) -> None: ...
async def _async_takes_shard(shard: Shard) -> None: ...
async def _async_takes_nothing() -> None: ...


class _ClassTakingShard:
    def __init__(self, shard: Shard) -> None:
        self.shard = shard


class _ClassTakingNothing:
    def __init__(self) -> None:
        pass


class _CallableObject:
    def __call__(self, shard: Shard) -> None: ...

    def method(self, shard: Shard) -> None: ...


@pytest.mark.parametrize("handler", [
    _takes_shard, _defaults, _anything, _async_takes_shard, _ClassTakingShard, _CallableObject(),
    _CallableObject().method, functools.partial(_takes_two, 1), lambda shard: None,
    print,  # a builtin: accepted whether or not its signature can be inspected
], ids=repr)
def test_handlers_that_can_take_a_shard_pass(handler: Callable[..., Any]) -> None:
    check_handler_signature(handler)


@pytest.mark.parametrize("handler, shown, problem", [
    (_takes_nothing, "_takes_nothing()", "too many positional arguments"),
    (_takes_two, "_takes_two(a, b)", "missing a required argument: 'b'"),
    (_takes_extra_keyword, "_takes_extra_keyword(shard, *, batch)", "missing a required argument: 'batch'"),
    (_ClassTakingNothing, "_ClassTakingNothing()", "too many positional arguments"),
    (_async_takes_nothing, "_async_takes_nothing()", "too many positional arguments"),
    (functools.partial(_takes_shard, 1), "()", "too many positional arguments"),
])
def test_handlers_that_cannot_take_a_shard_are_refused_with_the_fix(
        handler: Callable[..., Any], shown: str, problem: str) -> None:
    with pytest.raises(HandlerSignatureError) as caught:
        check_handler_signature(handler)
    message = str(caught.value)
    assert shown in message and problem in message, message
    fix = "async def handle(shard): ..." if handler is _async_takes_nothing else "def handle(shard): ..."
    assert "a handler takes one argument, the Shard: " + fix in message, message
    assert isinstance(caught.value, ConfigError)  # so `except ShardleaseError` at start-up catches it


def test_the_error_names_the_handler_as_given() -> None:
    with pytest.raises(HandlerSignatureError, match=r"^handler myapp\.worker:handle\(\) cannot be called"):
        check_handler_signature(_takes_nothing, name="myapp.worker:handle")
    with pytest.raises(HandlerSignatureError, match=r"test_handlers:_takes_nothing\(\)"):
        check_handler_signature(_takes_nothing)
