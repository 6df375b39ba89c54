"""How long a backlog has kept growing and a write has kept failing: the figures behind /healthz."""

from __future__ import annotations


class Growth:
    """A backlog that has stayed above the level it had at some moment has been growing since that moment.

    Each observation at or below the reference level (or of an empty backlog) moves the reference there: a
    store that keeps up, or catches up, brings the backlog back down now and then; one that cannot never does.
    A busy backlog looked at now and then rises and falls with each write, and its lowest look alone is soon a
    record that no later look goes under: its drain reports an empty backlog (0) each time it reads all there was.
    """

    __slots__ = ("_ref", "_since", "last")

    def __init__(self) -> None:
        self._ref: int | None = None
        self._since = 0.0
        self.last = 0

    def observe(self, now: float, n: int) -> None:
        self.last = n
        if self._ref is None or n == 0 or n <= self._ref:
            self._ref, self._since = n, now

    def growing_for(self, now: float) -> float:
        """Seconds the backlog has stayed above its reference level (0 when it is not above it)."""
        if self._ref is None or self.last <= self._ref:
            return 0.0
        return now - self._since


class Streak:
    """A run of failures: since when, and the last error; ended by a success."""

    __slots__ = ("error", "since")

    def __init__(self) -> None:
        self.since: float | None = None
        self.error = ""

    def fail(self, now: float, error: str) -> None:
        if self.since is None:
            self.since = now
        self.error = error

    def ok(self, now: float) -> float | None:
        """End the streak; return how long it lasted, None when there was none."""
        since, self.since = self.since, None
        return None if since is None else now - since

    def failing_for(self, now: float) -> float:
        return 0.0 if self.since is None else now - self.since
