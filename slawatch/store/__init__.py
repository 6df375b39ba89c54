"""Where points are stored: the Sink protocol every store implements, its error, and the factory from settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from slawatch.config.settings import StorageSettings
from slawatch.model import Point

DEFAULT_RETENTION_S = 180 * 86400.0


class SinkError(Exception):
    """A write that did not happen. The spool keeps the batch: soon if `retryable`, slowly otherwise."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


@runtime_checkable
class Sink(Protocol):
    """A store of points. `write` is idempotent: the same series and timestamp overwrite, never duplicate."""

    name: str
    write_errors: int
    """Writes that raised SinkError (exported as slawatch_sink_write_errors_total)."""
    bad_points: int
    """Points the store refused and that were dropped, e.g. a field type conflict (slawatch_sink_bad_points_total)."""

    async def write(self, batch: Sequence[Point]) -> None:
        """Store the batch or raise SinkError."""
        ...

    async def prune(self, older_than_ms: int) -> int:
        """Delete what is older than the retention; return how many rows went (0 where the store does it)."""
        ...

    async def close(self) -> None:
        ...


def open_sinks(storage: StorageSettings, *, retention_s: float = DEFAULT_RETENTION_S) -> list[Sink]:
    """The sinks the storage settings ask for (SQLite, InfluxDB or both), not yet connected.

    `retention_s` is the contract's `retention_s`: the daemon prunes SQLite with it, InfluxDB gets a
    retention policy of that length.
    """
    from slawatch.store.influxdb import InfluxSink
    from slawatch.store.sqlite import SqliteSink

    sinks: list[Sink] = []
    if storage.sqlite is not None:
        sinks.append(SqliteSink(storage.sqlite))
    if storage.influxdb is not None:
        sinks.append(InfluxSink(storage.influxdb, retention_s=retention_s))
    return sinks


__all__ = ["DEFAULT_RETENTION_S", "Sink", "SinkError", "open_sinks"]
