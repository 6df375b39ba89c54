"""Worker processes that read, compute and render a report's slices of components side by side, one core each."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from itertools import islice
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any, TypeVar, cast

from reporter.availability import AgentViews
from reporter.report import Render, Report, ReportError, SliceDone, SliceFrame, compute_slice
from slawatch.config.loader import Loaded
from slawatch.config.settings import Component
from slawatch.model import Interval, StateChange
from slawatch.store import Source, SourceError, import_backends, open_source

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_WORKERS = 32
DEFAULT_WORKERS = 8
"""At most this many by default: each holds a slice and its own heap (~100 MB at 2 000 components)."""
IN_FLIGHT = 2
"""Slices handed to a worker ahead of the one being read back, so that it never waits for the next."""
SPILLED = "spilled"
"""A slice whose text (a render that makes bytes) and hash rows come in a file of their own, in memory."""


def default_workers() -> int:
    """One worker per core this process may run on, at most DEFAULT_WORKERS."""
    return max(1, min(DEFAULT_WORKERS, len(os.sched_getaffinity(0))))


class WorkerError(Exception):
    """A worker process failed (died, or raised something other than a store's or the report's error)."""


class SliceWorkers:
    """`count` processes forked from this one, each computing the slices handed to it with the loaded config it was
    forked with (a config of 100 000 components is not sent, nor loaded again) and a Source of its own.

    Make it before any thread or event loop starts (a fork copies only the thread that forks, and a lock another
    thread held stays held in the child): `slawatch report` makes it right after loading the config.

    A render that makes bytes (the JSON's text) is not sent back through the pipe: the worker writes it and the
    slice's rows for the inputs hash to a file in memory of their own (memfd) and hands this process the file
    descriptor. The worker goes on to its next slice at once, instead of waiting until this process has read
    the one before (in order: perhaps another worker's, still being computed) through the pipe, 200 kB at a
    time; the file is let go once read. At most IN_FLIGHT + 1 slices per worker wait so.
    """

    def __init__(self, loaded: Loaded, count: int) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise ValueError(f"workers must be within 1-{MAX_WORKERS}, got {count}")
        import_backends(loaded.config.storage)  # once here, not in each worker
        context = multiprocessing.get_context("fork")
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for n in range(count):
            mine, theirs = context.Pipe()
            # The child gets copies of this end and of the earlier workers' ends: it closes them first, or a worker
            # would never see this process go (no end of file while a copy of the other end is open somewhere).
            proc = context.Process(target=_serve, args=(theirs, loaded, [mine, *self._conns]),
                                   name=f"slawatch-report-{n}", daemon=True)
            try:
                proc.start()
            finally:
                theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)

    def __len__(self) -> int:
        return len(self._procs)

    def start(self, period: Interval, names: Sequence[str], bounds: Sequence[tuple[int, int]]) -> None:
        """Hand out the first slices, names[begin:end] each, of a report over `period`: the workers read their
        changes while this process reads what every slice shares (heartbeats, windows: the frame), instead of
        waiting for it, and compute them once `run` sends the frame."""
        listed = list(names)
        for conn in self._conns:
            with contextlib.suppress(OSError):  # a worker that is gone is told when its first slice is awaited
                conn.send(("names", period, listed))
        self._waiting: deque[tuple[int, int]] = deque()  # (worker, end) of the slices handed out, in order
        self._todo = iter(enumerate(bounds))
        self._hand_out(IN_FLIGHT * len(self._conns))

    def _hand_out(self, count: int) -> None:
        for n, (begin, end) in islice(self._todo, count):
            worker = n % len(self._conns)
            with contextlib.suppress(OSError):  # as above
                self._conns[worker].send(("slice", begin, end))
            self._waiting.append((worker, end))

    async def run(self, frame: SliceFrame, head: Report, render: Render[T]) -> AsyncIterator[tuple[T, SliceDone, int]]:
        """(render(head, slice), what it adds to the summary, its end) for each slice given to `start`, in order."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # as in start
                await asyncio.to_thread(conn.send, ("frame", frame, head, render))
        waiting = self._waiting
        while waiting:
            worker, end = waiting.popleft()
            reply = await self._receive(worker)
            self._hand_out(1)
            if reply[0] == "done":
                yield reply[1], reply[2], end
                continue
            if reply[0] == SPILLED:
                text, done = await asyncio.to_thread(self._read_spilled, worker, reply)
                yield cast(T, text), done, end  # spilled: render made bytes
                continue
            kind, message = reply[1], reply[2]
            if kind == "source":
                raise SourceError(message)
            if kind == "report":
                raise ReportError(message)
            raise WorkerError(f"report worker {worker} failed: {message}")

    async def _receive(self, worker: int) -> Any:
        try:
            return await asyncio.to_thread(self._conns[worker].recv)
        except (EOFError, OSError):
            proc = self._procs[worker]
            await asyncio.to_thread(proc.join, 5)
            raise WorkerError(f"report worker {worker} ended without its slice (exit code {proc.exitcode})") from None

    def _read_spilled(self, worker: int, reply: tuple[Any, ...]) -> tuple[bytes, SliceDone]:
        """A spilled slice's text and SliceDone (its hash rows put back), read from the file that comes after it."""
        _, length, done, hashed = reply
        fd = recv_handle(self._conns[worker])
        try:
            text = _pread(fd, 0, length)
            at = length
            done.hashed = []
            for name, size in hashed:
                done.hashed.append((name, _pread(fd, at, size)))
                at += size
        finally:
            os.close(fd)
        return text, done

    def close(self) -> None:
        """Tell every worker to stop (each closes its Source) and wait for them. The pipes are closed first: a worker
        still sending a slice nobody will read (the report stopped on another's error) stops at once. A worker
        that does not stop within 10 s is killed."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                log.warning("report worker %s did not stop: killed", proc.name)
                proc.kill()
                proc.join(5)
        self._conns.clear()
        self._procs.clear()

    def __enter__(self) -> SliceWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Connection, loaded: Loaded, theirs: list[Connection]) -> None:
    """A worker: slices read and computed on request until told to stop (None) or the report's process is gone.
    `theirs`: the report's ends of the pipes, copied by the fork, closed here."""
    for other in theirs:
        other.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the report's process to handle: it closes the pipes
    # A slice makes a few hundred thousand short-lived objects (changes, results) and no cycles worth collecting:
    # the collector's passes over them cost a fifth of the slice. Off, with one pass after each slice instead.
    gc.disable()
    components = {c.name: c for c in loaded.config.components}
    loop = asyncio.new_event_loop()
    source: Source | None = None
    period: Interval | None = None
    names: list[str] = []
    frame: SliceFrame | None = None
    # The slices handed out before the frame came, their changes read (or the read's failure) in the meantime.
    early: deque[tuple[list[str], list[StateChange] | tuple[str, str, str]]] = deque()
    warned = False  # that slices come through the pipe (said once)

    def source_of() -> Source:
        nonlocal source
        if source is None:
            source = open_source(loaded.config.storage)
        return source

    def answer(reply: tuple[Any, ...]) -> bool:
        """Send a slice's reply (its text in a file in memory where it can); False when the report is gone."""
        nonlocal warned
        spilled = -1
        if reply[0] == "done" and isinstance(reply[1], bytes):
            try:
                reply, spilled = _spill(reply[1], reply[2])
            except OSError as exc:  # then through the pipe, as any other slice
                if not warned:
                    warned = True
                    log.warning("report worker: cannot keep a slice in a file in memory (%s): it comes through the "
                                "pipe", exc)
        try:
            conn.send(reply)
            if spilled >= 0:
                send_handle(conn, spilled, os.getppid())
        except (BrokenPipeError, OSError):
            return False
        finally:
            if spilled >= 0:
                os.close(spilled)
        return True

    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message is None:
                return
            if message[0] == "names":
                period, names = message[1:]
                continue
            if message[0] == "frame":
                frame, head, render = message[1:]
                coverage = AgentViews((), frame.heartbeats)
                while early:
                    part, read = early.popleft()
                    if not answer(_slice(loaded, components, frame, coverage, head, render, part, read)):
                        return
                    del read
                    gc.collect()
                continue
            part = names[message[1]:message[2]]
            assert period is not None, "a slice before its report's names"
            read = _read(loop, source_of, period, part)
            if frame is None:
                early.append((part, read))
                continue
            if not answer(_slice(loaded, components, frame, coverage, head, render, part, read)):
                return
            # The slice's changes and results are gone with _slice's frame (a pass while they were alive took a tenth
            # of the worker's time, walking 100 000 objects to free none): this pass sees only what is left.
            del read
            gc.collect()
    finally:
        if source is not None:
            with contextlib.suppress(Exception):
                loop.run_until_complete(source.close())
        loop.close()
        conn.close()


def _read(loop: asyncio.AbstractEventLoop, source_of: Callable[[], Source], period: Interval,
          names: list[str]) -> list[StateChange] | tuple[str, str, str]:
    """A slice's changes, or ("failed", kind, message)."""
    try:
        return loop.run_until_complete(source_of().changes(period.start_ms, period.end_ms, names))
    except Exception as exc:
        return _failed(exc)


def _slice(loaded: Loaded, components: dict[str, Component], frame: SliceFrame, coverage: AgentViews, head: Report,
           render: Render[Any], names: list[str], read: list[StateChange] | tuple[str, str, str]) -> tuple[Any, ...]:
    """One slice computed and rendered from its changes as read: ("done", text, SliceDone), or ("failed", kind,
    message)."""
    if isinstance(read, tuple):
        return read
    try:
        part = [components[name] for name in names]
        results, done = compute_slice(loaded, frame, coverage, part, read)
        read.clear()  # the caller's reference stays: the changes go now, before the render
        return ("done", render(head, results), done)
    except Exception as exc:
        return _failed(exc)


def _failed(exc: Exception) -> tuple[str, str, str]:
    """("failed", kind, message) of a slice, told to the report's process, which stops with it."""
    if isinstance(exc, SourceError):
        return ("failed", "source", str(exc))
    if isinstance(exc, ReportError):
        return ("failed", "report", str(exc))
    log.error("report worker: %s", "".join(traceback.format_exception(exc)))
    return ("failed", "other", "".join(traceback.format_exception_only(exc)).strip())


def _spill(text: bytes, done: SliceDone) -> tuple[tuple[Any, ...], int]:
    """The reply for a slice whose text and hash rows are now in a new file in memory, and its descriptor. OSError
    when no such file can be made or written (memfd refused by a sandbox, no memory for it): `done` is as it was."""
    fd = os.memfd_create("slawatch-report-slice", os.MFD_CLOEXEC)
    try:
        _write_all(fd, text)
        for _, rows in done.hashed:
            _write_all(fd, rows)
    except OSError:
        os.close(fd)
        raise
    hashed = [(name, len(rows)) for name, rows in done.hashed]
    done.hashed = []
    return (SPILLED, len(text), done, hashed), fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pread(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:  # a slice is megabytes: a regular file gives them in one read
        raise OSError(f"a report worker's slice ended {length - len(data)} bytes early")
    return data
