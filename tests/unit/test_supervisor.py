"""The task supervisor: restart after an error with back-off, count and log it, never restart a task that ended."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path

import pytest

from agent.supervisor import Supervisor


async def test_a_task_that_fails_is_restarted_with_backoff_counted_and_logged_once_per_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.supervisor")
    errors: list[str] = []
    sup = Supervisor(on_error=errors.append, backoff_min_s=0.05, backoff_max_s=0.2, stable_s=0.3)
    bad = tmp_path / "segment"
    bad.mkdir()  # reading a directory is a real OSError, like the EMFILE a spool read met
    starts: list[float] = []
    done = asyncio.Event()

    async def drain() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 4:
            await asyncio.to_thread(bad.read_bytes)
        done.set()
        await asyncio.sleep(3600)

    task = sup.start("drain-store", drain)
    await asyncio.wait_for(done.wait(), 5)
    health = sup.tasks["drain-store"]
    assert errors == ["drain-store"] * 4 and health.restarts == 4
    assert "IsADirectoryError" in health.last_error
    assert sup.failing() == [health]  # restarted, not yet well for stable_s
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2 and gaps[3] >= 0.2  # doubling, capped
    assert gaps[3] < 1.0
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1  # the same error again is one line, without its traceback
    assert len([r for r in caplog.records if "failed again" in r.getMessage()]) == 3
    await asyncio.sleep(0.4)
    assert sup.failing() == []
    assert any("running again after 4 restarts" in r.getMessage() for r in caplog.records)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert health.done and health.restarts == 4


async def test_each_distinct_error_logs_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="agent.supervisor")
    sup = Supervisor(backoff_min_s=0.01, backoff_max_s=0.01)
    failures = [OSError(24, "Too many open files"), ValueError("bad"), OSError(24, "Too many open files")]

    async def job() -> None:
        if failures:
            raise failures.pop(0)

    await asyncio.wait_for(sup.start("job", job), 5)
    assert len([r for r in caplog.records if r.exc_info is not None]) == 2
    assert sup.tasks["job"].restarts == 3


async def test_a_task_that_returns_or_is_cancelled_is_not_restarted() -> None:
    sup = Supervisor(backoff_min_s=0.01)
    runs = {"returns": 0, "cancelled": 0}

    async def returns() -> None:
        runs["returns"] += 1

    async def forever() -> None:
        runs["cancelled"] += 1
        await asyncio.sleep(3600)

    t1 = sup.start("returns", returns)
    t2 = sup.start("cancelled", forever)
    await asyncio.wait_for(t1, 5)
    await asyncio.sleep(0.05)
    t2.cancel()
    await asyncio.gather(t2, return_exceptions=True)
    await asyncio.sleep(0.05)
    assert runs == {"returns": 1, "cancelled": 1}
    assert sup.tasks["returns"].done and sup.tasks["cancelled"].done
    assert sup.failing() == []
    assert sup.tasks["returns"].restarts == sup.tasks["cancelled"].restarts == 0
