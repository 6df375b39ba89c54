"""The login rate limit: a few wrong passwords for one user, or from one address, lock the login for a while."""

from __future__ import annotations

from collections import OrderedDict, deque

MAX_TRACKED = 10_000
"""Users and addresses remembered at most (the oldest are forgotten first): memory stays bounded under a flood."""


class LoginLimiter:
    """Counts wrong passwords per key ("user:NAME", "addr:IP") within `lock_s`; `attempts` of them lock the key
    until `lock_s` after the last one. Times are seconds on any monotonic clock the caller passes."""

    def __init__(self, attempts: int, lock_s: float) -> None:
        self.attempts = attempts
        self.lock_s = lock_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def configure(self, attempts: int, lock_s: float) -> None:
        self.attempts, self.lock_s = attempts, lock_s

    def _recent(self, key: str, now: float) -> deque[float]:
        seen = self._failures.get(key)
        if seen is None:
            return deque()
        while seen and now - seen[0] >= self.lock_s:
            seen.popleft()
        if not seen:
            del self._failures[key]
        return seen

    def locked_for(self, keys: list[str], now: float) -> float:
        """Seconds left before any of `keys` may try again (0: not locked)."""
        left = 0.0
        for key in keys:
            seen = self._recent(key, now)
            if len(seen) >= self.attempts:
                left = max(left, seen[-1] + self.lock_s - now)
        return left

    def failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            seen = self._recent(key, now)
            seen.append(now)
            while len(seen) > self.attempts:
                seen.popleft()
            self._failures[key] = seen
            self._failures.move_to_end(key)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)
