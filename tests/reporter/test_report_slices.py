"""A report computed a slice of components at a time, from SQLite and PostgreSQL: the same Report, inputs hash and
bytes of JSON and CSV as computed in one slice."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import math
import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from pathlib import Path
from typing import TypeVar

import pytest

from reporter import report as report_module
from reporter import workers as workers_module
from reporter.render import render
from reporter.report import ComponentReport, Render, Report, ReportRun, build_month_report
from reporter.workers import SliceWorkers, WorkerError
from slawatch.config.loader import Loaded, load
from slawatch.model import ComponentRef, Heartbeat, MaintenanceWindow, StateChange
from slawatch.store import Source, SourceError, open_sinks, open_source
from slawatch.testing.postgres import PostgresServer
from tests.reporter.april import APRIL, CONTRACT, D, H, M, run_cli

T = TypeVar("T")
COMPONENTS = [f"c-{i}" for i in range(7)]
CLASSES = ("network", "sip", "vlan")
CUSTOMERS = ("acme", "globex", None)


def config_text(storage: str, order: Sequence[str]) -> str:
    lines = [f"  - {{name: {name}, class: {CLASSES[int(name[2:]) % 3]}, "
             + (f"customer: {CUSTOMERS[int(name[2:]) % 3]}, " if CUSTOMERS[int(name[2:]) % 3] else "tier: base, ")
             + 'probes: [{kind: tcp, target: "127.0.0.1:9"}]}' for name in order]
    return (f"agent: {{id: mon-1}}\nstorage: {{{storage}, spool: {{path: spool}}}}\ncontract: contract.yaml\n"
            "customers:\n  - {name: acme, tier: gold}\n  - {name: globex, tier: silver, policy: {unmonitored: down}}\n"
            "components:\n" + "\n".join(lines) + "\nreport: {timezone: UTC}\n")


def ref(name: str) -> ComponentRef:
    i = int(name[2:])
    customer = CUSTOMERS[i % 3]
    return ComponentRef(name, CLASSES[i % 3], "base" if customer is None else ("gold", "silver")[i % 3], customer or "")


def history() -> list[StateChange | Heartbeat]:
    """Two agents over April: each component up from before the month, a few outages seen a little apart, one
    degraded spell, one component never seen (c-6); a heartbeat gap of agent mon-2."""
    t0 = APRIL.start_ms
    points: list[StateChange | Heartbeat] = []
    for i, name in enumerate(COMPONENTS[:-1]):
        for n, agent in enumerate(("mon-1", "mon-2")):
            points.append(StateChange(ref(name), agent, t0 - D - n * M, True, ""))
            for k in range(i % 4):
                down = t0 + (3 + 5 * k + i) * D + k * H
                points += [StateChange(ref(name), agent, down + n * 7_000, False, f"timeout {k}"),
                           StateChange(ref(name), agent, down + (k + 1) * 20 * M, True, "")]
    points.append(StateChange(ref("c-1"), "mon-1", t0 + 2 * D, True, "on battery", True))
    points.append(StateChange(ref("c-1"), "mon-1", t0 + 2 * D + H, True, ""))
    for agent, gap in (("mon-1", None), ("mon-2", (t0 + 10 * D, t0 + 10 * D + 2 * H))):
        points += [Heartbeat(agent, t, 600.0) for t in range(t0 - D, APRIL.end_ms + D, 10 * M)
                   if gap is None or not gap[0] <= t < gap[1]]
    return points


WINDOWS = [
    MaintenanceWindow("w-class", "class", "network", APRIL.start_ms + 3 * D, APRIL.start_ms + 3 * D + 2 * H,
                      APRIL.start_ms, "upgrade", APRIL.start_ms),
    MaintenanceWindow("w-late", "customer", "acme", APRIL.start_ms + 8 * D, APRIL.start_ms + 9 * D,
                      APRIL.start_ms + 8 * D - H, "emergency", APRIL.start_ms + 8 * D - H),
]


async def fill(loaded: Loaded) -> None:
    for sink in open_sinks(loaded.config.storage):
        try:
            await sink.write(history())
        finally:
            await sink.close()
    source = open_source(loaded.config.storage)
    try:
        for w in WINDOWS:
            await source.add_window(w)
    finally:
        await source.close()


class Counting:
    """A Source that counts the components each read of changes asks for."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.asked: list[int] = []

    async def changes(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[StateChange]:
        self.asked.append(len(components or ()))
        return await self.source.changes(start_ms, end_ms, components)

    def __getattr__(self, name: str) -> object:
        return getattr(self.source, name)


async def month_report(loaded: Loaded, slice_size: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Report, list[int]]:
    monkeypatch.setattr(report_module, "SLICE", slice_size)
    source = Counting(open_source(loaded.config.storage))
    try:
        return await build_month_report(loaded, source, 2026, 4, incidents=[], as_of_ms=APRIL.end_ms), source.asked
    finally:
        await source.close()


def setup(tmp_path: Path, storage: str, order: Sequence[str]) -> Loaded:
    (tmp_path / "contract.yaml").write_text(CONTRACT, encoding="utf-8")
    path = tmp_path / "slawatch.yaml"
    path.write_text(config_text(storage, order), encoding="utf-8")
    loaded = load(path)
    asyncio.run(fill(loaded))
    return loaded


def check_slices(loaded: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, asked = asyncio.run(month_report(loaded, 1000, monkeypatch))
    assert asked == [len(COMPONENTS)]
    assert sum(len(c.result.outages) for c in whole.components) >= 7 and whole.maintenance
    assert [c.name for c in whole.components] == [c.name for c in loaded.config.components]
    for size in (1, 3):
        sliced, asked = asyncio.run(month_report(loaded, size, monkeypatch))
        assert asked == [min(size, len(COMPONENTS) - i) for i in range(0, len(COMPONENTS), size)]
        assert len(asked) == math.ceil(len(COMPONENTS) / size)
        assert sliced == whole
        # The command writes JSON and CSV as the slices pass, computed in its own process or in two workers: the
        # bytes of the report rendered whole.
        for fmt, workers in itertools.product(("json", "csv"), ("1", "2")):
            out = tmp_path / f"report-{size}-{workers}.{fmt}"
            argv = ["report", "--config", str(loaded.path), "--month", "2026-04", "--format", fmt, "--out", str(out),
                    "--workers", workers]
            assert run_cli(argv) == 0
            assert out.read_bytes() == render(whole, fmt).encode("utf-8")


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_a_sliced_report_from_sqlite_equals_the_one_slice_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  order: str) -> None:
    names = COMPONENTS if order == "sorted" else COMPONENTS[::-1]  # reversed: the hash waits for the sorted order
    loaded = setup(tmp_path, "sqlite: {path: store.db}", names)
    check_slices(loaded, tmp_path, monkeypatch)


@pytest.mark.peer("postgresql")
def test_a_sliced_report_from_postgresql_equals_the_one_slice_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      postgres: PostgresServer) -> None:
    loaded = setup(tmp_path, f'postgres: {{dsn: "{postgres.create_database()}"}}', COMPONENTS[3:] + COMPONENTS[:3])
    check_slices(loaded, tmp_path, monkeypatch)


def _exits(head: Report, part: tuple[ComponentReport, ...]) -> str:
    if any(c.name == "c-4" for c in part):
        os._exit(7)  # a worker killed half-way (the OOM killer, say)
    return "ok"


def _fails(head: Report, part: tuple[ComponentReport, ...]) -> str:
    if any(c.name == "c-4" for c in part):
        raise SourceError("store read failed")
    return "ok"


def _breaks(head: Report, part: tuple[ComponentReport, ...]) -> str:
    if any(c.name == "c-5" for c in part):
        raise ValueError("a bug")
    return "ok"


async def rendered_by_workers(loaded: Loaded, render: Render[T], workers: SliceWorkers) -> list[T]:
    source = open_source(loaded.config.storage)
    try:
        run = ReportRun(loaded, source, APRIL, month=(2026, 4), incidents=[], slice_size=1)
        return [text async for text in run.rendered(render, workers)]
    finally:
        await source.close()


def test_a_worker_that_dies_or_fails_stops_the_report_with_the_reason(tmp_path: Path) -> None:
    loaded = setup(tmp_path, "sqlite: {path: store.db}", COMPONENTS)
    with SliceWorkers(loaded, 2) as workers, \
            pytest.raises(WorkerError, match=r"report worker 0 ended without its slice \(exit code 7\)"):
        asyncio.run(rendered_by_workers(loaded, _exits, workers))
    with SliceWorkers(loaded, 2) as workers, pytest.raises(SourceError, match=r"^store read failed$"):
        asyncio.run(rendered_by_workers(loaded, _fails, workers))
    with SliceWorkers(loaded, 3) as workers:  # slice n (c-n) goes to worker n % 3
        with pytest.raises(WorkerError, match="report worker 2 failed: ValueError: a bug"):
            asyncio.run(rendered_by_workers(loaded, _breaks, workers))
        assert len(workers) == 3
    assert not multiprocessing.active_children()  # every worker was waited for


def memory_files() -> list[str]:
    """This process's open memfd files."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [link for link in links if link.startswith("/memfd:")]


def _names(head: Report, part: tuple[ComponentReport, ...]) -> bytes:
    return ",".join(c.name for c in part).encode()


def test_a_worker_s_text_comes_back_in_a_file_of_its_own_or_else_through_its_pipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = setup(tmp_path, "sqlite: {path: store.db}", COMPONENTS)
    files: list[int] = []  # the descriptors this process was handed

    def received(conn: Connection) -> int:
        files.append(recv_handle(conn))
        return files[-1]

    monkeypatch.setattr(workers_module, "recv_handle", received)
    with SliceWorkers(loaded, 2) as workers:
        assert asyncio.run(rendered_by_workers(loaded, _names, workers)) == [c.encode() for c in COMPONENTS]
    assert len(files) == len(COMPONENTS)  # a slice of one component each, each in a file
    assert memory_files() == []  # each let go once read

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    files.clear()
    monkeypatch.setattr(workers_module, "_write_all", full)  # in the workers forked after this
    with SliceWorkers(loaded, 2) as workers:
        assert asyncio.run(rendered_by_workers(loaded, _names, workers)) == [c.encode() for c in COMPONENTS]
    assert files == []  # every slice came through the pipe
    assert memory_files() == [] and not multiprocessing.active_children()


def test_workers_outside_the_bounds_are_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = setup(tmp_path, "sqlite: {path: store.db}", COMPONENTS)
    for bad in ("0", "33", "two"):
        argv = ["report", "--config", str(loaded.path), "--month", "2026-04", "--format", "json", "--workers", bad]
        with pytest.raises(SystemExit) as exit_:
            run_cli(argv)
        assert exit_.value.code == 2
        assert "--workers" in capsys.readouterr().err


def test_workers_that_cannot_start_leave_the_report_to_its_own_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    loaded = setup(tmp_path, "sqlite: {path: store.db}", COMPONENTS)
    whole, _ = asyncio.run(month_report(loaded, 1000, monkeypatch))
    monkeypatch.setattr(report_module, "SLICE", 2)

    def refuse(*args: object) -> None:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.get_context("fork").Process, "start", refuse)
    out = tmp_path / "report.json"
    argv = ["report", "--config", str(loaded.path), "--month", "2026-04", "--format", "json", "--out", str(out),
            "--workers", "2"]
    assert run_cli(argv) == 0
    assert out.read_bytes() == render(whole, "json").encode("utf-8")
    assert "cannot start the report's worker processes ([Errno 11] Resource temporarily unavailable)" in caplog.text


def test_workers_stop_when_the_report_s_process_is_gone(tmp_path: Path) -> None:
    loaded = setup(tmp_path, "sqlite: {path: store.db}", COMPONENTS)
    workers = SliceWorkers(loaded, 3)
    procs = list(workers._procs)
    for conn in workers._conns:  # what the kernel does to a report's process that is killed: its ends closed
        conn.close()
    for proc in procs:
        proc.join(10)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    workers.close()


class _Told:
    """A Source that appends the names of each slice it reads to a file (written from the workers' processes)."""

    def __init__(self, inner: Source, path: Path) -> None:
        self._inner, self._path = inner, path

    async def changes(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[StateChange]:
        with self._path.open("a") as f:
            f.write(",".join(components or ()) + "\n")
        return await self._inner.changes(start_ms, end_ms, components)

    async def close(self) -> None:
        await self._inner.close()


class _Waits:
    """The report's own Source, whose heartbeats (what the frame needs) come only once `path` has `lines` lines."""

    def __init__(self, inner: Source, path: Path, lines: int) -> None:
        self._inner, self._path, self._lines = inner, path, lines

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def heartbeats(self, start_ms: int, end_ms: int) -> object:
        for _ in range(500):  # 10 s
            if self._path.exists() and len(self._path.read_text().splitlines()) >= self._lines:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the workers read no slice before the frame")
        return await self._inner.heartbeats(start_ms, end_ms)


def test_workers_read_their_first_slices_while_the_report_reads_the_frame(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = setup(tmp_path, "sqlite: {path: store.db}", COMPONENTS)
    reads = tmp_path / "reads"
    real = workers_module.open_source
    monkeypatch.setattr(workers_module, "open_source", lambda storage: _Told(real(storage), reads))

    async def rendered(workers: SliceWorkers) -> list[bytes]:
        source = _Waits(open_source(loaded.config.storage), reads, 4)
        try:
            run = ReportRun(loaded, source, APRIL, month=(2026, 4), incidents=[], slice_size=1)  # type: ignore[arg-type]
            return [text async for text in run.rendered(_names, workers)]
        finally:
            await source.close()

    with SliceWorkers(loaded, 2) as workers:
        assert asyncio.run(rendered(workers)) == [c.encode() for c in COMPONENTS]
    # Two slices each handed out before the frame, read at once; then the rest, each slice once.
    lines = reads.read_text().splitlines()
    assert set(lines[:4]) == set(COMPONENTS[:4]) and sorted(lines) == sorted(COMPONENTS)

