"""The login rate limit: a few wrong passwords for one user, or from one address, lock the login for a while."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

WINDOW_S = 900.0
"""Wrong passwords count towards a lock for this long (or for the lock time, if longer)."""
MAX_TRACKED = 10_000
"""Users and addresses remembered at most (the oldest are forgotten first): memory stays bounded under a flood."""


@dataclass(slots=True)
class _Key:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginLimiter:
    """`attempts` wrong passwords for one key ("user:NAME", "addr:IP") within WINDOW_S (or `lock_s`, if longer)
    lock that key for `lock_s` from the last of them. Times are seconds on any monotonic clock the caller passes."""

    def __init__(self, attempts: int, lock_s: float) -> None:
        self.attempts = attempts
        self.lock_s = lock_s
        self._keys: OrderedDict[str, _Key] = OrderedDict()

    def configure(self, attempts: int, lock_s: float) -> None:
        self.attempts, self.lock_s = attempts, lock_s

    def locked_for(self, keys: list[str], now: float) -> float:
        """Seconds left before any of `keys` may try again (0: not locked)."""
        left = 0.0
        for name in keys:
            key = self._keys.get(name)
            if key is not None:
                left = max(left, key.locked_until - now)
        return left

    def failed(self, keys: list[str], now: float) -> None:
        for name in keys:
            key = self._keys.pop(name, None) or _Key()
            key.failures.append(now)
            while key.failures and now - key.failures[0] >= max(WINDOW_S, self.lock_s):
                key.failures.popleft()
            if len(key.failures) >= self.attempts:
                key.locked_until = now + self.lock_s
                key.failures.clear()
            self._keys[name] = key  # most recent last: the oldest go first when there are too many
        while len(self._keys) > MAX_TRACKED:
            self._keys.popitem(last=False)

    def succeeded(self, keys: list[str]) -> None:
        for name in keys:
            self._keys.pop(name, None)

    def __len__(self) -> int:
        return len(self._keys)
