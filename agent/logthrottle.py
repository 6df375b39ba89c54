"""A logging filter that lets a burst of one repeated log line through, then sums up the rest in one line."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

BURST = 10
WINDOW_S = 60.0
MAX_KEYS = 10_000  # distinct lines tracked at once; a flood of unique lines must not grow memory without end
_SWEEP_S = 1.0
_SUMMARY = "_slawatch_summary"

_Key = tuple[str, int, str]


@dataclass(slots=True)
class _Window:
    start: float
    seen: int
    last: logging.LogRecord | None = None  # the last suppressed record


class RepeatThrottle(logging.Filter):
    """Per (logger, level, message): the first `burst` records in `window_s` pass, the rest are counted.

    The key is the message as written, not its template: state changes of a thousand components are a
    thousand different lines and all pass; one failure repeated in a loop is one line.

    The count comes out as one line, "… repeated N more times in S s", through `target` (the handler this
    filter sits on) once the window is over: when the same line comes again, with the next line logged a
    second or more later, or at `flush()`. A flood of "Too many open files" then costs a few lines a minute,
    not megabytes.
    """

    def __init__(self, target: logging.Handler, *, burst: int = BURST, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.target = target
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[_Key, _Window] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False):
            return True
        try:
            text = record.getMessage()
        except Exception:  # bad arguments: let the handler report them as it always does
            return True
        key = (record.name, record.levelno, text)
        now = self._clock()
        with self._lock:
            due = self._sweep(now) if now >= self._next_sweep else []
            win = self._windows.get(key)
            if win is not None and now - win.start >= self.window_s:
                if win.last is not None:
                    due.append(self._summary(win, now))
                win = None
            if win is None:
                if len(self._windows) >= MAX_KEYS:
                    due.extend(self._sweep(now, evict=True))
                self._windows[key] = _Window(now, 1)
                passed = True
            else:
                win.seen += 1
                passed = win.seen <= self.burst
                if not passed:
                    win.last = record
        for summary in due:
            self.target.handle(summary)
        return passed

    def flush(self) -> None:
        """Write the counts still pending (at shutdown)."""
        now = self._clock()
        with self._lock:
            due = [self._summary(w, now) for w in self._windows.values() if w.last is not None]
            self._windows.clear()
        for summary in due:
            self.target.handle(summary)

    def _sweep(self, now: float, *, evict: bool = False) -> list[logging.LogRecord]:
        """Summaries of windows that are over, which are forgotten (all of them when `evict`)."""
        self._next_sweep = now + _SWEEP_S
        due = []
        for key, win in list(self._windows.items()):
            if evict or now - win.start >= self.window_s:
                if win.last is not None:
                    due.append(self._summary(win, now))
                del self._windows[key]
        return due

    def _summary(self, win: _Window, now: float) -> logging.LogRecord:
        last = win.last
        assert last is not None
        n = win.seen - self.burst
        summary = logging.LogRecord(last.name, last.levelno, last.pathname, last.lineno,
                                    "%s (… repeated %d more times in %.0f s)",
                                    (last.getMessage(), n, now - win.start), None, last.funcName)
        setattr(summary, _SUMMARY, True)
        return summary


def throttle_repeats(logger: logging.Logger, *, burst: int = BURST,
                     window_s: float = WINDOW_S) -> Callable[[], None]:
    """Put a throttle on each handler of `logger` (the root, once the CLI has set its handlers).

    Returns the function that writes the counts still pending, for shutdown.
    """
    throttles = [RepeatThrottle(h, burst=burst, window_s=window_s) for h in logger.handlers]
    for throttle in throttles:
        throttle.target.addFilter(throttle)

    def flush() -> None:
        for throttle in throttles:
            throttle.flush()
    return flush
