"""Leadership: one holder at a time, freed when the holder dies or lets go, lost at once when its claim goes; the
campaign hands over to a waiting server within its check period and never runs a term's start and end at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slawatch.store.leader import FileLeader, Leader, campaign

pytestmark = [pytest.mark.timeout(30)]

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


async def test_one_file_leader_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "store.db.leader"
    first, second = FileLeader(path, holder="a"), FileLeader(path, holder="b")
    assert await first.acquire()
    assert first.held and await first.check()
    assert not await second.acquire()
    assert not second.held
    assert await first.acquire()  # holding already: still true, still one holder
    assert path.read_text().startswith("a pid ")
    await first.release()
    assert not first.held
    assert await second.acquire()
    assert path.read_text().startswith("b pid ")
    await second.release()


async def test_a_killed_holder_frees_the_file_lock(tmp_path: Path) -> None:
    path = tmp_path / "store.db.leader"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waiting = FileLeader(path)
        assert not await waiting.acquire()
        holder.kill()
        holder.wait(10)
        assert await waiting.acquire()
        await waiting.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()


@pytest.mark.parametrize("how", ["removed", "replaced"])
async def test_the_lock_file_removed_or_replaced_is_leadership_lost(tmp_path: Path, how: str) -> None:
    path = tmp_path / "store.db.leader"
    first = FileLeader(path)
    assert await first.acquire()
    path.unlink()
    if how == "replaced":
        path.write_text("")
    other = FileLeader(path)
    assert await other.acquire()  # the new file is free: two would lead unless the first notices
    assert not await first.check()
    assert first.lost.is_set() and not first.held
    await other.release()


class Term:
    """Records a campaign's terms: (start, end) monotonic times, and whether two ever overlapped."""

    def __init__(self, name: str, log: list[tuple[str, str, float]]) -> None:
        self.name = name
        self.log = log
        self.leading = False

    async def gain(self) -> None:
        assert not self.leading
        await asyncio.sleep(0.01)  # a start that takes a moment: the end must not run inside it
        self.leading = True
        self.log.append((self.name, "gain", time.monotonic()))

    async def lose(self) -> None:
        assert self.leading
        self.leading = False
        self.log.append((self.name, "loss", time.monotonic()))


async def run_campaign(leader: Leader, term: Term, stop: asyncio.Event, check_s: float) -> asyncio.Task[None]:
    return asyncio.create_task(campaign(leader, stop, check_s, on_gain=term.gain, on_loss=term.lose))


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_the_campaign_hands_over_at_a_stop_within_the_check_period(tmp_path: Path) -> None:
    path = tmp_path / "store.db.leader"
    log: list[tuple[str, str, float]] = []
    a, b = Term("a", log), Term("b", log)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = await run_campaign(FileLeader(path), a, stop_a, 0.1)
    await until(lambda: a.leading)
    task_b = await run_campaign(FileLeader(path), b, stop_b, 0.1)
    await asyncio.sleep(0.3)
    assert not b.leading  # a holds it
    stop_a.set()
    await task_a
    await until(lambda: b.leading, timeout=1.0)
    assert [(name, what) for name, what, _ in log] == [("a", "gain"), ("a", "loss"), ("b", "gain")]
    assert log[2][2] - log[1][2] < 0.5  # within the check period (0.1 s) and its start
    stop_b.set()
    await task_b
    assert log[-1][:2] == ("b", "loss")


async def test_the_campaign_ends_a_term_at_once_when_the_claim_goes(tmp_path: Path) -> None:
    path = tmp_path / "store.db.leader"
    log: list[tuple[str, str, float]] = []
    term = Term("a", log)
    stop = asyncio.Event()
    leader = FileLeader(path)
    task = await run_campaign(leader, term, stop, 0.1)
    await until(lambda: term.leading)
    path.unlink()  # the claim goes; the next check notices, and the campaign tries again (a new file: free)
    await until(lambda: [w for _, w, _ in log] == ["gain", "loss", "gain"], timeout=2.0)
    stop.set()
    await task
    assert [w for _, w, _ in log] == ["gain", "loss", "gain", "loss"]
    assert not leader.held


async def test_a_start_that_fails_gives_leadership_up_for_another(tmp_path: Path) -> None:
    path = tmp_path / "store.db.leader"
    log: list[tuple[str, str, float]] = []
    b = Term("b", log)
    failing = FileLeader(path)
    starts = 0

    async def cannot_start() -> None:
        nonlocal starts
        starts += 1
        raise OSError("the store cannot be opened")

    async def never() -> None:
        raise AssertionError("a term that never started never ends")

    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(campaign(failing, stop_a, 0.2, on_gain=cannot_start, on_loss=never))
    await until(lambda: starts == 1)
    task_b = await run_campaign(FileLeader(path), b, stop_b, 0.05)
    await until(lambda: b.leading, timeout=2.0)  # a let go after its failed start
    assert not failing.held
    stop_a.set()
    stop_b.set()
    await asyncio.gather(task_a, task_b)
