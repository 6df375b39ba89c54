"""Time stamps for probe runs and heartbeats: a monotonic clock anchored to the wall clock, re-anchored on steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

STEP_THRESHOLD_S = 1.0


def _elapsed_ns() -> int:
    # CLOCK_BOOTTIME runs on through a suspend of the host, CLOCK_MONOTONIC does not: with BOOTTIME a
    # suspend is time that passed (heartbeats show the gap), not a step of the wall clock.
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _default_elapsed() -> Callable[[], int]:
    try:
        _elapsed_ns()
    except (AttributeError, OSError):
        return time.monotonic_ns
    return _elapsed_ns


@dataclass(frozen=True, slots=True)
class Stamp:
    """One instant: `ms` on the anchored clock (UTC epoch ms), `mono_ms` on the monotonic clock, and
    `epoch`, the number of wall-clock steps seen before it (two stamps of one epoch differ by real time)."""

    ms: int
    mono_ms: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Step:
    """A step of the wall clock: stamps went from `before_ms` (anchored) to `after_ms` (the wall clock)."""

    before_ms: int
    after_ms: int

    @property
    def offset_ms(self) -> int:
        return self.after_ms - self.before_ms


class Clock:
    """UTC epoch milliseconds that advance with the monotonic clock from an instant of the wall clock.

    Between steps, stamps never go backwards and their differences are real elapsed time, whatever NTP does
    to the wall clock. Every stamp compares the two: when they differ by more than `threshold_s` the wall
    clock was stepped; the step is logged, the clock re-anchors on the wall clock (which NTP just set
    right) and each `on_step` hook is called with the step.

    After a step back, stamps run again over instants already handed out, and a store keys a probe run by
    its instant: a run must not overwrite one taken before the step. So stamps are even milliseconds, and
    odd ones while they are at or below the highest stamp handed out before the step; the two never meet.
    """

    def __init__(self, *, threshold_s: float = STEP_THRESHOLD_S, wall_ns: Callable[[], int] = time.time_ns,
                 elapsed_ns: Callable[[], int] | None = None) -> None:
        self._wall_ns = wall_ns
        self._elapsed_ns = elapsed_ns or _default_elapsed()
        self._threshold_ns = int(threshold_s * 1e9)
        self._anchor_wall = wall_ns()
        self._anchor_elapsed = self._elapsed_ns()
        self.epoch = 0
        self._high_ms = 0  # the highest stamp handed out
        self._overlap_ms = -1  # odd; stamps up to this instant were handed out before the last step back
        self.on_step: list[Callable[[Step], None]] = []

    def stamp(self) -> Stamp:
        elapsed = self._elapsed_ns()
        wall = self._wall_ns()
        anchored = self._anchor_wall + (elapsed - self._anchor_elapsed)
        if abs(wall - anchored) > self._threshold_ns:
            self._anchor_wall, self._anchor_elapsed = wall, elapsed
            self.epoch += 1
            step = Step(anchored // 1_000_000, wall // 1_000_000)
            log.warning("wall clock stepped by %+.1f s; time stamps follow it from now on",
                        step.offset_ms / 1000, extra={"offset_s": step.offset_ms / 1000})
            for hook in self.on_step:
                try:
                    hook(step)
                except Exception:  # a stamp is taken inside probe runs, which must never raise
                    log.exception("clock step hook failed")
            anchored = wall
            if step.offset_ms < 0:
                self._overlap_ms = self._high_ms | 1
        ms = anchored // 1_000_000
        ms = ms | 1 if ms <= self._overlap_ms else ms & ~1
        self._high_ms = max(self._high_ms, ms)
        return Stamp(ms, elapsed // 1_000_000, self.epoch)

    def now_ms(self) -> int:
        return self.stamp().ms
