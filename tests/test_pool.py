"""pool.ordered_map: results in job order on worker processes, set up by the initializer,
and workers stopped when the consumer stops early."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from ecgscan_cli.errors import EcgscanFailure
from ecgscan_cli.pool import ordered_map
from ecgscan_cli.threads import set_threads


def test_results_come_in_job_order_from_worker_processes():
    jobs = list(range(-40, 0))
    assert list(ordered_map(abs, jobs, 2, batch=3)) == [abs(j) for j in jobs]
    assert list(ordered_map(abs, iter(jobs), 1)) == [abs(j) for j in jobs]   # in process, same answer
    assert list(ordered_map(abs, [], 2)) == []


def test_the_initializer_sets_up_each_worker_and_not_the_caller():
    before = os.environ.get("OMP_NUM_THREADS")
    got = list(ordered_map(os.getenv, ["OMP_NUM_THREADS"] * 8, 2, batch=1, initializer=set_threads, initargs=(1,)))
    assert got == ["1"] * 8
    assert os.environ.get("OMP_NUM_THREADS") == before


def test_a_consumer_that_stops_early_stops_the_workers():
    others = set(multiprocessing.active_children())
    results = ordered_map(abs, range(10_000), 2, batch=1)
    assert next(results) == 0
    workers = set(multiprocessing.active_children()) - others
    assert workers
    results.close()
    # the pool's own manager thread may be reaping a worker that has exited at this moment
    deadline = time.monotonic() + 2.0
    while any(p.is_alive() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p.pid for p in workers if p.is_alive()]


def test_a_dead_worker_is_one_clear_failure():
    with pytest.raises(EcgscanFailure, match="the worker died"):
        list(ordered_map(os._exit, [0, 1], 2, batch=1, broken="the worker died"))
