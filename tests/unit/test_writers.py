"""``WriterPool``: every write carried out, as few threads as keep up, more when writes wait."""

from __future__ import annotations

import threading
import time

from support import poll as wait_until

from shardlease.runtime.writers import WriterPool


def test_every_item_is_carried_out_once() -> None:
    done: list[int] = []
    lock = threading.Lock()

    def work(item: int) -> None:
        with lock:
            done.append(item)

    pool: WriterPool[int] = WriterPool(work, max_threads=4, name="t")
    for i in range(500):
        assert pool.submit(i)
    assert wait_until(lambda: len(done) == 500)
    assert sorted(done) == list(range(500))
    pool.close()


def test_fast_writes_in_bursts_use_one_thread() -> None:
    threads: set[str] = set()

    def work(_item: int) -> None:
        threads.add(threading.current_thread().name)

    pool: WriterPool[int] = WriterPool(work, max_threads=8, name="t", max_wait=0.5)
    for _burst in range(20):
        for i in range(20):  # 20 at once, as the control loop submits the renewals that fall due together
            pool.submit(i)
        time.sleep(0.01)
    assert wait_until(lambda: pool.threads == 1 and len(threads) == 1)
    assert len(threads) == 1
    pool.close()


def test_writes_that_wait_add_threads_up_to_the_maximum_and_idle_ones_retire() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow(_item: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)  # a slow API server
        with lock:
            running -= 1

    pool: WriterPool[int] = WriterPool(slow, max_threads=4, name="t", max_wait=0.02, idle_timeout=0.3)
    for i in range(40):
        pool.submit(i)
    assert wait_until(lambda: pool.threads == 4)
    assert wait_until(lambda: running == 0 and pool.threads == 1, timeout=15.0)  # back to one once idle
    assert peak == 4  # never more than max_threads


def test_a_stuck_thread_does_not_hold_up_the_queue_once_poked() -> None:
    release = threading.Event()
    done: list[int] = []

    def work(item: int) -> None:
        if item == 0:
            release.wait(10)  # stuck in a request that will time out much later
        done.append(item)

    pool: WriterPool[int] = WriterPool(work, max_threads=4, name="t", max_wait=0.05)
    pool.submit(0)
    time.sleep(0.05)
    pool.submit(1)  # queued behind the stuck one; nothing else is submitted
    time.sleep(0.1)
    pool.poke()  # the control loop pokes on every pass
    assert wait_until(lambda: done == [1], timeout=5.0)
    release.set()
    assert wait_until(lambda: sorted(done) == [0, 1])
    pool.close()


def test_after_close_nothing_is_taken_and_queued_writes_are_dropped() -> None:
    gate = threading.Event()
    done: list[int] = []

    def work(item: int) -> None:
        gate.wait(5)
        done.append(item)

    pool: WriterPool[int] = WriterPool(work, max_threads=1, name="t")
    for i in range(5):
        pool.submit(i)
    time.sleep(0.05)
    pool.close()
    assert not pool.submit(99)
    gate.set()
    assert wait_until(lambda: pool.threads == 0)
    assert done == [0]  # the running write finished; the queued ones were dropped


def test_an_exception_in_work_does_not_kill_the_thread() -> None:
    done: list[int] = []

    def work(item: int) -> None:
        if item % 2:
            raise RuntimeError("boom")
        done.append(item)

    pool: WriterPool[int] = WriterPool(work, max_threads=1, name="t")
    for i in range(10):
        pool.submit(i)
    assert wait_until(lambda: len(done) == 5)
    assert pool.threads == 1
    pool.close()
