"""Component state as one agent sees it: confirmation streaks per probe, combined by `require`.

A component goes down after `confirm.down` consecutive failed runs of a probe (with `require: all`; with
`any`, once every probe has failed that often) and up after `confirm.up` good runs. The change is dated at
the FIRST run of the confirming streak, so the confirmation setting never shortens or lengthens the
measured downtime. DEGRADED counts as up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from agent.model import ComponentRef, Outcome, Result, StateChange

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Streak:
    up: bool
    length: int
    start_ms: int
    reason: str


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
        self.since_ms: int | None = None

    @property
    def probes(self) -> tuple[str, ...]:
        return tuple(self._streaks)

    def pending(self, probe: str) -> bool:
        """True while this probe's latest runs disagree with the confirmed state (use the retry interval)."""
        streak = self._streaks.get(probe)
        return streak is not None and (self.up is None or streak.up != self.up)

    def observe(self, probe: str, started_ms: int, result: Result) -> StateChange | None:
        """Record one probe run; return the state change it confirms, if any."""
        if probe not in self._streaks:
            return None
        ok = result.outcome.is_up
        if result.outcome is Outcome.DEGRADED:
            self.degraded[probe] = result.reason
        else:
            self.degraded.pop(probe, None)
        streak = self._streaks[probe]
        reason = result.reason if result.outcome is not Outcome.UP else ""
        if streak is not None and streak.up == ok:
            streak.length += 1
            streak.reason = reason
        else:
            self._streaks[probe] = _Streak(ok, 1, started_ms, reason)
        return self._evaluate()

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
            start = min(s.start_ms for _, s in down) if all_required else max(s.start_ms for _, s in down)
            reason = "; ".join(f"{p}: {s.reason}" if n > 1 else s.reason for p, s in sorted(down))
            return self._change(False, start, reason or "down")
        if self.up is not True and (len(good) == n if all_required else good):
            start = max(s.start_ms for _, s in good) if all_required else min(s.start_ms for _, s in good)
            reasons = "; ".join(f"{p}: {s.reason}" for p, s in sorted(good) if s.reason)
            return self._change(True, start, reasons)
        return None

    def _change(self, up: bool, at_ms: int, reason: str) -> StateChange:
        previous, since = self.up, self.since_ms
        self.up, self.since_ms = up, at_ms
        name = self.ref.component
        if up and previous is False and since is not None:
            log.info("%s recovered after %s%s", name, format_duration(at_ms - since),
                     f" ({reason})" if reason else "")
        elif up:
            log.info("%s is up%s", name, f" ({reason})" if reason else "")
        else:
            log.warning("%s is DOWN: %s", name, reason)
        return StateChange(self.ref, self.agent, at_ms, up, reason)
