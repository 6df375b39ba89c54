"""Component state as one agent sees it: confirmation streaks per probe, combined by `require`.

A component goes down after `confirm.down` consecutive failed runs of a probe (with `require: all`; with
`any`, once every probe has failed that often) and up after `confirm.up` good runs. The change is dated at
the FIRST run of the confirming streak, so the confirmation setting never shortens or lengthens the
measured downtime. DEGRADED counts as up; a probe DEGRADED for `confirm.down` consecutive runs makes a confirmed
DEGRADED state (a change with up=True, degraded=True, dated at that streak's first run), which ends at the first
run after which no probe is DEGRADED (a fault for the incident desk, available time for the report).

A component's changes are never dated before its previous change, and a recovery whose outage saw a step
of the wall clock is dated by the monotonic time the outage lasted: a clock step never adds or removes
downtime. `save`/`restore` carry the confirmed state and the open streaks across an agent restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slawatch.model import ComponentRef, Outcome, Result, StateChange

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Streak:
    up: bool
    length: int
    start_ms: int
    reason: str
    last_ms: int  # start of the latest run of the streak
    start_mono: int | None = None  # the first run on the agent's monotonic clock, and its clock epoch
    start_epoch: int = 0


@dataclass(frozen=True, slots=True)
class SavedStreak:
    """An open streak of one probe, as kept across a restart."""

    up: bool
    length: int
    start_ms: int
    last_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Saved:
    """What a restart needs of a component: its confirmed state, since when, and its probes' open streaks."""

    ref: ComponentRef
    up: bool | None
    since_ms: int | None
    streaks: Mapping[str, SavedStreak]
    degraded: bool = False


def format_duration(ms: int) -> str:
    """4m12s, 2h03m, 3d04h — for log lines."""
    s = max(0, ms // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class ComponentState:
    """Confirmed state of one component from this agent's probe runs."""

    def __init__(self, ref: ComponentRef, agent: str, probes: Sequence[str], require: str,
                 confirm_down: int, confirm_up: int) -> None:
        self.ref = ref
        self.agent = agent
        self.require = require
        self.confirm_down = confirm_down
        self.confirm_up = confirm_up
        self._streaks: dict[str, _Streak | None] = dict.fromkeys(probes)
        self.up: bool | None = None  # None until the first state is confirmed
        self.degraded: dict[str, str] = {}  # probe -> reason, while its latest run is DEGRADED (shown, counts as up)
        self._degraded_runs: dict[str, tuple[int, int]] = {}  # probe -> (consecutive DEGRADED runs, first one's ms)
        self.in_degraded = False  # a confirmed DEGRADED state (stored as a change)
        self.since_ms: int | None = None
        self._since_mono: int | None = None
        self._since_epoch = 0
        self._since_moved = False  # the last change is not dated at its first run (kept in order after a step)

    @property
    def probes(self) -> tuple[str, ...]:
        return tuple(self._streaks)

    @property
    def is_degraded(self) -> bool:
        """Up, with at least one probe whose latest run was DEGRADED."""
        return self.up is True and bool(self.degraded)

    def pending_any(self) -> bool:
        return any(self.pending(p) for p in self._streaks)

    def pending(self, probe: str) -> bool:
        """True while this probe's latest runs disagree with the confirmed state (use the retry interval)."""
        streak = self._streaks.get(probe)
        return streak is not None and (self.up is None or streak.up != self.up)

    def observe(self, probe: str, started_ms: int, result: Result, mono_ms: int | None = None,
                epoch: int = 0) -> StateChange | None:
        """Record one probe run; return the state change it confirms, if any.

        `mono_ms` and `epoch` are the run's start on the agent's monotonic clock and the number of wall-clock
        steps seen before it (`agent.clock.Stamp`); without them a change is only kept in order.
        """
        if probe not in self._streaks:
            return None
        ok = result.outcome.is_up
        if result.outcome is Outcome.DEGRADED:
            self.degraded[probe] = result.reason
            runs, first_ms = self._degraded_runs.get(probe, (0, started_ms))
            self._degraded_runs[probe] = (runs + 1, first_ms)
        else:
            self.degraded.pop(probe, None)
            self._degraded_runs.pop(probe, None)
        streak = self._streaks[probe]
        reason = result.reason if result.outcome is not Outcome.UP else ""
        if streak is not None and streak.up == ok:
            streak.length += 1
            streak.reason = reason
            streak.last_ms = started_ms
            if ok and self._steady():
                return None
        else:
            self._streaks[probe] = _Streak(ok, 1, started_ms, reason, started_ms, mono_ms, epoch)
        change = self._evaluate()
        if change is None and self.up is True:
            change = self._evaluate_degraded(started_ms)
        elif change is not None and change.up and self._degraded_confirmed():
            change = change._replace(degraded=True)  # it comes up DEGRADED (a UPS found on battery)
            self.in_degraded = True
        return change

    def _steady(self) -> bool:
        """A run that continues its up streak confirms nothing here: one probe, confirmed up, nothing degraded.
        What `_evaluate` and `_evaluate_degraded` would find, without their lists (most runs are these)."""
        return self.up is True and len(self._streaks) == 1 and not self._degraded_runs and not self.in_degraded

    def _degraded_confirmed(self) -> list[str]:
        return sorted(p for p, (runs, _) in self._degraded_runs.items() if runs >= self.confirm_down)

    def _evaluate_degraded(self, started_ms: int) -> StateChange | None:
        if not self.in_degraded:
            confirmed = self._degraded_confirmed()
            if not confirmed:
                return None
            n = len(self._streaks)
            reason = "; ".join(f"{p}: {self.degraded[p]}" if n > 1 else self.degraded[p] for p in confirmed)
            first_ms = min(self._degraded_runs[p][1] for p in confirmed)
            return self._change(True, first_ms, None, 0, reason or "degraded", degraded=True)
        if not self.degraded:
            return self._change(True, started_ms, None, 0, "")
        return None

    def _confirmed(self, up: bool) -> list[tuple[str, _Streak]]:
        need = self.confirm_up if up else self.confirm_down
        return [(p, s) for p, s in self._streaks.items() if s is not None and s.up == up and s.length >= need]

    def _evaluate(self) -> StateChange | None:
        n = len(self._streaks)
        down = self._confirmed(False)
        good = self._confirmed(True)
        all_required = self.require == "all"
        if self.up is not False and (down if all_required else len(down) == n):
            # all: the first failing probe took it down; any: the last one to fail did.
            pick = min if all_required else max
            first = pick((s for _, s in down), key=_start)
            reason = "; ".join(f"{p}: {s.reason}" if n > 1 else s.reason for p, s in sorted(down))
            return self._change(False, first.start_ms, first.start_mono, first.start_epoch, reason or "down")
        if self.up is not True and (len(good) == n if all_required else good):
            pick = max if all_required else min
            first = pick((s for _, s in good), key=_start)
            reasons = "; ".join(f"{p}: {s.reason}" for p, s in sorted(good) if s.reason)
            return self._change(True, first.start_ms, first.start_mono, first.start_epoch, reasons)
        return None

    def _change(self, up: bool, start_ms: int, start_mono: int | None, start_epoch: int, reason: str, *,
                degraded: bool = False) -> StateChange:
        at_ms = start_ms
        if self.since_ms is not None:
            if (up and self.up is False and start_mono is not None and self._since_mono is not None
                    and (start_epoch != self._since_epoch or self._since_moved)):
                # The wall clock stepped during the outage, or its start had to be moved to stay in order: its
                # length is what the monotonic clock measured.
                at_ms = self.since_ms + (start_mono - self._since_mono)
            at_ms = max(at_ms, self.since_ms + 1)  # never before the previous change (a step back)
        self.up, self.since_ms, self.in_degraded = up, at_ms, degraded
        self._since_mono, self._since_epoch = start_mono, start_epoch
        self._since_moved = at_ms != start_ms
        return StateChange(self.ref, self.agent, at_ms, up, reason, degraded)

    # ------------------------------------------------------------ across restarts

    def save(self, before: tuple[bool | None, int | None, bool] | None = None) -> Saved:
        """The confirmed state (or `before`, the (up, since_ms, degraded) it had before its last change) and the
        streaks that disagree with it, the only ones a restart needs."""
        up, since, degraded = (self.up, self.since_ms, self.in_degraded) if before is None else before
        streaks = {p: SavedStreak(s.up, s.length, s.start_ms, s.last_ms, s.reason)
                   for p, s in self._streaks.items() if s is not None and s.up != up}
        return Saved(self.ref, up, since, streaks, degraded)

    def restore(self, saved: Saved, now_ms: int, max_gap_ms: Mapping[str, int]) -> None:
        """Take over the state saved by a previous run of the agent (or before a reload).

        The confirmed state is taken whenever the component is the same series (same ref): seeing the same
        state again then writes no change. An open streak continues when its probe's last run was at most
        `max_gap_ms[probe]` ago, so an outage still in confirmation is dated from its first failed run
        before the restart; an older streak is dropped and the next run starts a new one.
        """
        if saved.ref != self.ref:
            return
        self.up, self.since_ms, self.in_degraded = saved.up, saved.since_ms, saved.degraded
        self._since_mono, self._since_epoch, self._since_moved = None, 0, False
        for probe, st in saved.streaks.items():
            if probe in self._streaks and 0 <= now_ms - st.last_ms <= max_gap_ms.get(probe, 0):
                self._streaks[probe] = _Streak(st.up, st.length, st.start_ms, st.reason, st.last_ms)


def _start(streak: _Streak) -> int:
    return streak.start_ms


def log_change(change: StateChange, previous_up: bool | None, previous_since_ms: int | None) -> None:
    """Log a confirmed change: WARNING when down, INFO when up ("recovered after 4m12s" after an outage)."""
    if change.up and previous_up is True:
        return  # up to DEGRADED or back: log_degraded said so at the first run
    name, reason = change.ref.component, change.reason
    fields = {"component": name, "state": "up" if change.up else "down", "reason": reason}
    if change.up and previous_up is False and previous_since_ms is not None:
        log.info("%s recovered after %s%s", name, format_duration(change.ts_ms - previous_since_ms),
                 f" ({reason})" if reason else "", extra=fields)
    elif change.up:
        log.info("%s is up%s", name, f" ({reason})" if reason else "", extra=fields)
    else:
        log.warning("%s is DOWN: %s", name, reason, extra=fields)


def log_degraded(state: ComponentState, was_degraded: bool) -> None:
    """Log a component entering DEGRADED (WARNING, with the reason) or leaving it while up (INFO)."""
    now = state.is_degraded
    if now == was_degraded:
        return
    name = state.ref.component
    if now:
        n = len(state.probes)
        reason = "; ".join(f"{p}: {r}" if n > 1 else r for p, r in sorted(state.degraded.items()))
        log.warning("%s is DEGRADED: %s", name, reason,
                    extra={"component": name, "state": "degraded", "reason": reason})
    elif state.up:
        log.info("%s is no longer degraded", name, extra={"component": name, "state": "up", "reason": ""})
