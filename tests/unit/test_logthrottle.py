"""The repeated-line throttle on a real handler: a burst passes, the rest is one counted line, distinct lines pass."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.logthrottle import RepeatThrottle

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, RepeatThrottle, Clock]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    clock = Clock()
    throttle = RepeatThrottle(handler, burst=3, window_s=60, clock=clock)
    handler.addFilter(throttle)
    logger = logging.getLogger("test.logthrottle")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    yield logger, out, throttle, clock
    logger.handlers.clear()
    logger.propagate = True


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_burst_passes_then_one_line_counts_the_rest(
        logged: tuple[logging.Logger, io.StringIO, RepeatThrottle, Clock]) -> None:
    logger, out, _, clock = logged
    for _ in range(1000):
        logger.error("accept failed: %s", "Too many open files")
        clock.now += 0.01
    assert lines(out) == ["ERROR test.logthrottle: accept failed: Too many open files"] * 3
    clock.now += 60
    logger.error("accept failed: %s", "Too many open files")
    assert lines(out)[3:] == [
        "ERROR test.logthrottle: accept failed: Too many open files (… repeated 997 more times in 70 s)",
        "ERROR test.logthrottle: accept failed: Too many open files",
    ]


def test_distinct_lines_all_pass_and_levels_count_apart(
        logged: tuple[logging.Logger, io.StringIO, RepeatThrottle, Clock]) -> None:
    logger, out, _, _ = logged
    for i in range(500):
        logger.warning("svc-%d is down: %s", i, "refused")
    for _ in range(5):
        logger.info("same")
        logger.warning("same")
    assert len(lines(out)) == 500 + 3 + 3


def test_the_count_comes_with_the_next_line_or_at_flush(
        logged: tuple[logging.Logger, io.StringIO, RepeatThrottle, Clock]) -> None:
    logger, out, throttle, clock = logged
    for _ in range(10):
        logger.error("drain failed")
    for _ in range(5):
        logger.error("spool full")
    clock.now += 61
    logger.info("something else")
    assert lines(out)[-3:] == ["ERROR test.logthrottle: drain failed (… repeated 7 more times in 61 s)",
                               "ERROR test.logthrottle: spool full (… repeated 2 more times in 61 s)",
                               "INFO test.logthrottle: something else"]
    for _ in range(4):
        logger.error("store down")
    throttle.flush()
    assert lines(out)[-1] == "ERROR test.logthrottle: store down (… repeated 1 more times in 0 s)"
    throttle.flush()
    assert lines(out)[-1] == "ERROR test.logthrottle: store down (… repeated 1 more times in 0 s)"


def test_a_record_with_bad_arguments_goes_to_the_handler_as_without_the_throttle(
        logged: tuple[logging.Logger, io.StringIO, RepeatThrottle, Clock]) -> None:
    _, _, throttle, _ = logged
    bad = logging.LogRecord("x", logging.ERROR, __file__, 1, "%d components", ("many",), None)
    assert all(throttle.filter(bad) for _ in range(10))  # the handler reports the bad call, not the throttle


def test_the_cli_logging_throttles_a_flood_of_tracebacks() -> None:
    """The CLI's handlers, a real process: 5 000 identical errors with a traceback cost ~11 lines, not megabytes."""
    code = """
import logging
from slawatch.cli.agent import setup_logging
from agent.logthrottle import throttle_repeats
setup_logging("text", "info")
flush = throttle_repeats(logging.getLogger())
log = logging.getLogger("asyncio")
for _ in range(5000):
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        log.exception("socket.accept() out of system resource")
flush()
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stderr) < 10_000
    heads = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln]
    assert len(heads) == 11
    assert heads[-1].endswith("socket.accept() out of system resource (… repeated 4990 more times in 0 s)")
