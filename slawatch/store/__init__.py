"""Where points are stored and read back: the Sink and Source protocols every store implements, their errors,
and the factories from settings."""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from slawatch.config.settings import SqliteSettings, StorageSettings
from slawatch.model import (
    SCOPES,
    AgentHeartbeats,
    AgentLease,
    Heartbeats,
    Incident,
    IncidentEvent,
    MaintenanceWindow,
    Notification,
    Point,
    Sample,
    StateChange,
    User,
)
from slawatch.schema import Row

DEFAULT_RETENTION_S = 180 * 86400.0

HEARTBEAT_GAP_FACTOR = 3
"""Heartbeats further apart than this many periods leave a gap; reads look back this far before a period."""


class SinkError(Exception):
    """A write that did not happen. The spool keeps the batch: soon if `retryable`, slowly otherwise."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class SourceError(Exception):
    """The store could not be read or written: unreachable, refused, missing or corrupt."""


class StoreUnavailable(SourceError):
    """The store cannot be reached or opened at all: every read fails the same way until it is back."""


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


@runtime_checkable
class EncodingSink(Sink, Protocol):
    """A sink that also takes its points as bytes it encoded itself, so that the spool can keep those bytes from
    append time and a replay copies them instead of decoding and encoding every point again. Optional: a sink
    without these works through `write` alone."""

    spool_encoding: str
    """Names the bytes `encode` makes, format version included (letters, digits, - _ . only); kept with every
    spooled point, so it must change whenever the bytes would."""

    def encode(self, batch: Sequence[Point]) -> list[bytes]:
        """One item per point, in order; pure, deterministic and synchronous (it runs in the spool's thread)."""
        ...

    async def write_encoded(self, items: Sequence[bytes]) -> None:
        """Store the points these items of `encode` stand for (perhaps made by an earlier run) or raise SinkError;
        idempotent like `write`, with the same accounting of refused points."""
        ...


@runtime_checkable
class GzipSink(EncodingSink, Protocol):
    """An encoding sink whose store takes the items joined and gzip-compressed (InfluxDB's line protocol): the
    spool then keeps them as a gzip member's data, and a replay posts those bytes without recompressing."""

    async def write_gzip(self, members: Sequence[bytes], count: int) -> None:
        """Store the `count` points whose items, joined, are the data of these gzip members; as `write_encoded`."""
        ...


@runtime_checkable
class RowSink(Sink, Protocol):
    """A sink that also takes its points as the rows `schema.point_row` makes, per measurement: the agent's spool
    then keeps nothing more than each point's own record, and a replay makes those rows from it without making
    points. Preferred to `EncodingSink` where a sink is both. Optional."""

    async def write_rows(self, rows: Mapping[str, Sequence[Row]], count: int) -> None:
        """Store these rows (keyed by measurement name; `count` points, for messages) or raise SinkError; idempotent
        like `write`."""
        ...


@runtime_checkable
class ReturningSink(Sink, Protocol):
    """A sink that can tell cheaply whether its store, found gone at the last write, is back: a drain backing off
    after an outage then writes as soon as the store returns, not at the end of its back-off. Optional."""

    async def back(self) -> bool:
        """True when the last write reached no store and the store answers now (one light request, no data);
        False otherwise, also when the store answered the last write with an error (that keeps its back-off)."""
        ...


class Source(Protocol):
    """A store read for reports (and where maintenance windows and sent reports are kept). Errors: SourceError."""

    async def changes(self, start_ms: int, end_ms: int,
                      components: Sequence[str] | None = None) -> list[StateChange]:
        """Every change in [start_ms, end_ms) plus, per (component, agent), the last change before start_ms,
        sorted by (component, ts_ms, agent); each with the class, tier and customer stored with it."""
        ...

    async def heartbeats(self, start_ms: int, end_ms: int) -> Heartbeats:
        """Per agent: sorted heartbeat instants in [start_ms - 3 periods, end_ms) and its (longest) period."""
        ...

    async def samples(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[Sample]:
        """Every probe run in [start_ms, end_ms), sorted by (component, ts_ms, agent, probe): the console's latency
        charts and last results."""
        ...

    async def latency(self, start_ms: int, end_ms: int, step_ms: int) -> dict[str, list[tuple[int, float]]]:
        """Per component, the mean measured latency (ms) of its probe runs in each step of [start_ms, end_ms):
        (step start, mean) for the steps that have one, in time order. Steps are aligned to multiples of
        `step_ms` since the epoch (pass a `start_ms` on one). The console's sparklines: the store averages."""
        ...

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[MaintenanceWindow]:
        """Windows overlapping [start_ms, end_ms) (unbounded where None), removed ones left out."""
        ...

    async def add_window(self, window: MaintenanceWindow) -> None: ...

    async def remove_window(self, id: str) -> bool:
        """Mark the window removed (kept as evidence); False when there is no such window in force."""
        ...

    async def report_sent(self, period_key: str, customer: str) -> bool: ...

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None: ...

    async def close(self) -> None: ...


class DeskStore(Protocol):
    """The incident desk's records: incidents, the faults that raised them, their append-only event logs and the
    notification outbox. Transactional (SQLite on one host): an incident's change, its events and its
    notifications are stored together or not at all. Errors: SourceError."""

    name: str

    async def next_id(self, year: int) -> str: ...

    async def fault_known(self, component: str, start_ms: int) -> str | None:
        """The incident a fault of `component` that started at `start_ms` has raised, if any."""
        ...

    async def open(self, incident: Incident, events: Sequence[IncidentEvent], notes: Sequence[Notification]) -> bool:
        """Store a new incident; False, storing nothing, when its fault (component, start_ms) is already known."""
        ...

    async def open_many(self, items: Sequence[tuple[Incident, Sequence[IncidentEvent], Sequence[Notification]]]
                        ) -> list[bool]:
        """`open` for several in one transaction; per item, whether it was stored."""
        ...

    async def update(self, version: int, incident: Incident, events: Sequence[IncidentEvent],
                     notes: Sequence[Notification], *, fault_start_ms: int | None = None) -> bool:
        """Replace the incident stored at `version`; False, storing nothing, when it has moved on since."""
        ...

    async def get(self, id: str) -> Incident | None: ...

    async def active(self) -> list[Incident]: ...

    async def latest(self, component: str) -> Incident | None: ...

    async def incidents(self, start_ms: int | None = None, end_ms: int | None = None, *,
                        customer: str | None = None, component: str | None = None,
                        active_only: bool = False) -> list[Incident]: ...

    async def events(self, id: str) -> list[IncidentEvent]: ...

    async def due_notifications(self, now_ms: int, limit: int) -> list[Notification]: ...

    async def next_due_ms(self) -> int | None: ...

    async def pending_count(self) -> int: ...

    async def notifications(self, incident_id: str | None = None) -> list[Notification]: ...

    async def mark(self, note: Notification) -> None:
        """Store the outcome of a delivery attempt of a pending notification."""
        ...

    async def mark_many(self, notes: Sequence[Notification]) -> None: ...

    async def prune(self, older_than_ms: int) -> int: ...

    async def close(self) -> None: ...


class UserStore(Protocol):
    """The console's accounts (`slawatch_user`), kept with the desk's records. Errors: SourceError."""

    name: str

    async def users(self) -> list[User]: ...

    async def get(self, name: str) -> User | None: ...

    async def count(self) -> int: ...

    async def add(self, user: User) -> bool:
        """Store a new account; False when the name is taken."""
        ...

    async def replace(self, user: User) -> bool:
        """Store an account's new role, customers or password hash; False when there is no such account."""
        ...

    async def remove(self, name: str) -> bool: ...

    async def close(self) -> None: ...


class MemberStore(Protocol):
    """The agents' leases (`slawatch_agent`) in the shared store (PostgreSQL; the records' SQLite file on one host):
    who is live, for `assign: auto` and `slawatch agents`. Errors: SourceError."""

    name: str

    async def renew(self, lease: AgentLease) -> None:
        """Store the agent's lease (insert or replace its row), `seen_ms` stamped with the store's own clock
        (PostgreSQL's; the local one for SQLite), so hosts whose clocks differ agree on who is live."""
        ...

    async def members(self) -> tuple[int, list[AgentLease]]:
        """The store's clock now (epoch ms) and every stored lease, live or not, sorted by agent: liveness is the
        caller's rule (`now_ms - seen_ms`)."""
        ...

    async def leave(self, agent: str) -> None:
        """Remove the agent's lease (a clean stop: the others take its share at once)."""
        ...

    async def close(self) -> None: ...


# Backends are imported where they are opened: each pulls in its client library (aiosqlite, aiohttp), which a
# process that uses only the other, or none (`slawatch probe`), need not load at start-up.


def open_sinks(storage: StorageSettings, *, retention_s: float = DEFAULT_RETENTION_S) -> list[Sink]:
    """The sinks the storage settings ask for (SQLite, InfluxDB, PostgreSQL), not yet connected; each told whether
    it takes the probe samples (`storage.samples`) or only the events.

    `retention_s` is the contract's `retention_s`: the daemon prunes SQLite and PostgreSQL with it, InfluxDB gets
    a retention policy of that length.
    """
    # Lazy: a backend's client library (aiohttp, aiosqlite) loads only when that backend is configured (start-up).
    from slawatch.store.influxdb import InfluxSink
    from slawatch.store.sqlite import SqliteSink  # lazy, as above

    sinks: list[Sink] = []
    if storage.sqlite is not None:
        sinks.append(SqliteSink(storage.sqlite, takes_samples=storage.takes_samples("sqlite")))
    if storage.influxdb is not None:
        sinks.append(InfluxSink(storage.influxdb, retention_s=retention_s,
                                takes_samples=storage.takes_samples("influxdb")))
    if storage.postgres is not None:
        from slawatch.store.postgres import PostgresSink  # lazy: asyncpg only when PostgreSQL is configured

        sinks.append(PostgresSink(storage.postgres, takes_samples=storage.takes_samples("postgres")))
    return sinks


def import_backends(storage: StorageSettings) -> None:
    """Import the client libraries that open_source(storage) loads. A report does so before it forks its worker
    processes, which then share them instead of each importing them (aiohttp: ~0.3 s of CPU in each)."""
    names = [name for name, used in (("postgres", storage.postgres), ("influxdb", storage.influxdb),
                                     ("sqlite", storage.sqlite)) if used is not None] or ["sqlite"]
    for name in names:
        importlib.import_module(f"slawatch.store.{name}")


def open_source(storage: StorageSettings, *, retention_s: float = DEFAULT_RETENTION_S) -> Source:
    """PostgreSQL when configured (its samples read from where `storage.samples` sends them), else InfluxDB when
    configured, else SQLite."""
    # Lazy: a backend's client library (aiohttp, aiosqlite, psycopg) loads only when that backend is configured
    # (start-up; and each of a report's worker processes opens its own Source).
    if storage.postgres is not None:
        from slawatch.store.postgres import PostgresSource  # lazy, as above

        samples: Source | None = None
        if not storage.takes_samples("postgres"):
            if storage.influxdb is not None and storage.takes_samples("influxdb"):
                from slawatch.store.influxdb import InfluxSource  # lazy, as above

                samples = InfluxSource(storage.influxdb, retention_s=retention_s)
            elif storage.sqlite is not None:
                from slawatch.store.sqlite import SqliteSource  # lazy, as above

                samples = SqliteSource(storage.sqlite)
        return PostgresSource(storage.postgres, samples=samples)
    if storage.influxdb is not None:
        from slawatch.store.influxdb import InfluxSource  # lazy, as above

        return InfluxSource(storage.influxdb, retention_s=retention_s)
    from slawatch.store.sqlite import SqliteSource  # lazy, as above

    return SqliteSource(storage.sqlite or SqliteSettings())


def open_desk_store(storage: StorageSettings) -> DeskStore:
    """The incident desk's store: PostgreSQL when configured, else the SQLite file `storage.records_path` (the
    embedded store's by default)."""
    if storage.postgres is not None:
        from slawatch.store.postgres import PostgresDeskStore  # lazy, as above

        return PostgresDeskStore(storage.postgres)
    from slawatch.store.sqlite_desk import SqliteDeskStore  # lazy, as above

    return SqliteDeskStore(storage.records_path)


def open_user_store(storage: StorageSettings) -> UserStore:
    """The console's accounts: PostgreSQL when configured, else on the desk's records file `storage.records_path`."""
    if storage.postgres is not None:
        from slawatch.store.postgres import PostgresUserStore  # lazy, as above

        return PostgresUserStore(storage.postgres)
    from slawatch.store.sqlite_users import SqliteUserStore  # lazy, as above

    return SqliteUserStore(storage.records_path)


def open_member_store(storage: StorageSettings) -> MemberStore:
    """The agents' leases: in PostgreSQL when configured (the store several hosts share), else on the records file
    `storage.records_path` (the agents of one host)."""
    if storage.postgres is not None:
        from slawatch.store.postgres import PostgresMemberStore  # lazy, as above (asyncpg)

        return PostgresMemberStore(storage.postgres)
    from slawatch.store.sqlite_members import SqliteMemberStore  # lazy, as above

    return SqliteMemberStore(storage.records_path)


# ---------------------------------------------------------------- shared by the backends' readers


def check_window(window: MaintenanceWindow) -> None:
    """What every store refuses to keep: an unknown scope, an empty or reversed range."""
    if window.scope not in SCOPES:
        raise ValueError(f"bad maintenance scope {window.scope!r}: one of {', '.join(SCOPES)}")
    if window.end_ms <= window.start_ms:
        raise ValueError(f"maintenance window {window.id!r} must end after it starts")


def heartbeat_margin_ms(period_s: float) -> int:
    return round(HEARTBEAT_GAP_FACTOR * period_s * 1000)


def group_heartbeats(rows: Iterable[tuple[str, int, float]], start_ms: int, lookback_ms: dict[str, int]) -> Heartbeats:
    """Group (agent, ts_ms, period_s) rows; keep those before start only within the agent's own margin."""
    beats: dict[str, list[int]] = defaultdict(list)
    periods: dict[str, float] = {}
    for agent, ts, period_s in rows:
        if ts < start_ms - lookback_ms.get(agent, 0):
            continue
        beats[agent].append(int(ts))
        # One period per agent: the longest it used, so a change of heartbeat_s never opens a false gap.
        periods[agent] = max(periods.get(agent, 0.0), float(period_s))
    return {agent: AgentHeartbeats(agent, sorted(ts_list), periods[agent]) for agent, ts_list in sorted(beats.items())}


__all__ = [
    "DEFAULT_RETENTION_S", "HEARTBEAT_GAP_FACTOR", "DeskStore", "EncodingSink", "MemberStore", "Sink", "SinkError",
    "Source", "SourceError", "StoreUnavailable", "UserStore", "check_window", "group_heartbeats",
    "heartbeat_margin_ms", "open_desk_store", "open_member_store", "open_sinks", "open_source", "open_user_store",
]
