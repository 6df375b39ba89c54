"""The stored data, owned here: every measurement (InfluxDB) / table (SQLite), its tags, fields and identity key."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from operator import attrgetter, itemgetter, lt
from typing import Any, Literal, NamedTuple

from slawatch.model import (
    ROLES,
    SCOPES,
    AgentLease,
    ComponentRef,
    Heartbeat,
    Incident,
    IncidentEvent,
    IncidentState,
    MaintenanceWindow,
    Notification,
    NotificationState,
    Outcome,
    Pause,
    Point,
    Sample,
    StateChange,
    User,
)

Value = bool | int | float | str
Row = tuple[Value | None, ...]
"""One stored record's values in its measurement's `columns` order (None: a field not written)."""

Role = Literal["tag", "time", "field"]
Type = Literal["string", "integer", "float"]

MAX_TEXT_CHARS = 4096
"""Longer string values are cut here (InfluxDB 1.x refuses string fields over 64 KiB)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_SQL_TYPE = {"string": "TEXT", "integer": "INTEGER", "float": "REAL"}
_PG_TYPE = {"string": "TEXT", "integer": "BIGINT", "float": "DOUBLE PRECISION"}


@dataclass(frozen=True, slots=True)
class Column:
    """A tag (always a string), the time (epoch ms) or a field of a measurement; a column of its SQLite table."""

    name: str
    role: Role
    type: Type = "string"
    nullable: bool = False
    """A field that may be absent (InfluxDB) / NULL (SQLite)."""
    default: str | None = None
    """SQL default, as SQL text."""
    check: str | None = None
    """SQL CHECK constraint, as SQL text."""
    meaning: str = ""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One kind of stored record: an InfluxDB measurement and the SQLite table of the same name."""

    name: str
    columns: tuple[Column, ...]
    """Every column, in the SQLite table's order."""
    key: tuple[str, ...]
    """Identity: the SQLite primary key. In InfluxDB the identity is the series (all tags) and the time."""
    written_by: str
    prune: str | None = None
    """SQLite deletes rows whose this column is older than the retention; None: kept."""
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    without_rowid: bool = True
    time_field: bool = False
    """The time is also written as an integer field of the same name (InfluxDB)."""
    reserved: bool = False
    """Declared (and its SQLite table created) but not written yet."""
    record: bool = False
    """Kept only in the desk's transactional store (SQLite, PostgreSQL), never in InfluxDB."""

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names) or [c.role for c in self.columns].count("time") != 1:
            raise ValueError(f"{self.name}: columns must be unique, with one time column")
        if any((c.role == "tag" and c.type != "string") or (c.role == "time" and c.type != "integer")
               for c in self.columns):
            raise ValueError(f"{self.name}: tags are strings, the time an integer")
        if not set(self.key) <= set(names):
            raise ValueError(f"{self.name}: key {self.key} names no column")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.role == "tag")

    @property
    def fields(self) -> tuple[str, ...]:
        """Field names as written to InfluxDB (with the time's name first when `time_field`)."""
        own = tuple(c.name for c in self.columns if c.role == "field")
        return (self.time, *own) if self.time_field else own

    @property
    def time(self) -> str:
        return next(c.name for c in self.columns if c.role == "time")

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def index(self, name: str) -> int:
        """Position of a column in `columns` (and so in a Row)."""
        return self.names.index(name)

    def ddl(self) -> str:
        """CREATE TABLE and CREATE INDEX statements (idempotent)."""
        lines = []
        width = max(len(n) for n in self.names)
        for c in self.columns:
            sql = f"    {c.name:<{width}} {_SQL_TYPE[c.type]}"
            sql += "" if c.nullable else " NOT NULL"
            if self.key == (c.name,) and len(self.key) == 1:
                sql += " PRIMARY KEY"
            if c.check is not None:
                sql += f" CHECK ({c.check})"
            if c.default is not None:
                sql += f" DEFAULT {c.default}"
            lines.append(sql)
        if len(self.key) > 1:
            lines.append(f"    PRIMARY KEY ({', '.join(self.key)})")
        tail = " WITHOUT ROWID" if self.without_rowid else ""
        out = f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(lines) + f"\n){tail};\n"
        for suffix, columns in self.indexes:
            out += f"CREATE INDEX IF NOT EXISTS {self.name}_{suffix} ON {self.name} ({', '.join(columns)});\n"
        return out

    def pg_ddl(self, *, partition_by_time: bool = False, omit: Sequence[str] = ()) -> str:
        """PostgreSQL CREATE TABLE and CREATE INDEX statements (idempotent), the same tables and columns as
        `ddl()`. `partition_by_time`: a table range-partitioned on its time column (the partitions are made
        apart). `omit`: columns left out, as a store made before they were added has them."""
        lines = []
        for c in self.columns:
            if c.name in omit:
                continue
            sql = f"    {c.name} {_PG_TYPE[c.type]}"
            sql += "" if c.nullable else " NOT NULL"
            if c.check is not None:
                sql += f" CHECK ({c.check})"
            if c.default is not None:
                sql += f" DEFAULT {c.default}"
            lines.append(sql)
        lines.append(f"    PRIMARY KEY ({', '.join(self.key)})")
        tail = f" PARTITION BY RANGE ({self.time})" if partition_by_time else ""
        out = f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(lines) + f"\n){tail};\n"
        for suffix, columns in self.indexes:
            out += f"CREATE INDEX IF NOT EXISTS {self.name}_{suffix} ON {self.name} ({', '.join(columns)});\n"
        return out


def _tag(name: str, meaning: str) -> Column:
    return Column(name, "tag", meaning=meaning)


_UP = Column("up", "field", "integer", check="up IN (0, 1)", meaning="1 when available, else 0")
_REASON = Column("reason", "field", "string", meaning="why, in words")
_COMPONENT = _tag("component", "component name")
_CLASS = _tag("class", "component class, as configured when stored")
_TIER = _tag("tier", "the customer's tier, as configured when stored")
_CUSTOMER = _tag("customer", "customer name (empty when none)")
_AGENT = _tag("agent", "agent id")
_TS = Column("ts_ms", "time", "integer", meaning="UTC epoch milliseconds")

PROBE = Measurement(
    "slawatch_probe",
    (_COMPONENT, _TS, _AGENT, _tag("probe", "the probe's name within the component"), _CLASS, _TIER, _CUSTOMER,
     _tag("kind", "probe kind"), _UP,
     Column("latency_ms", "field", "float", nullable=True, meaning="round-trip time; absent when none measured"),
     Column("outcome", "field", "string", meaning="how the run ended"), _REASON),
    key=("component", "ts_ms", "agent", "probe"), written_by="the agent, one point per probe run",
    prune="ts_ms", indexes=(("ts", ("ts_ms",)),))

STATE = Measurement(
    "slawatch_state",
    (_COMPONENT, _TS, _AGENT, _CLASS, _TIER, _CUSTOMER, _UP, _REASON,
     Column("degraded", "field", "integer", nullable=True, check="degraded IN (0, 1)",
            meaning="1 for a confirmed DEGRADED state (up=1); absent otherwise"),
     Column("released", "field", "integer", nullable=True, check="released IN (0, 1)",
            meaning="1 when the agent stopped watching the component here (handed over, or removed from its "
                    "config): its view is unknown until its next change; `up` repeats its last state. Absent "
                    "otherwise")),
    key=("component", "ts_ms", "agent"), written_by="the agent, one point per confirmed state change",
    prune="ts_ms",
    # (component, agent, ts_ms): the last change of each component and agent before a period is one seek.
    indexes=(("ts", ("ts_ms",)), ("last", ("component", "agent", "ts_ms"))))

HEARTBEAT = Measurement(
    "slawatch_heartbeat",
    (_AGENT, _TS, Column("period_s", "field", "float", meaning="promised seconds to the next heartbeat")),
    key=("agent", "ts_ms"), written_by="the agent, every heartbeat_s", prune="ts_ms", indexes=(("ts", ("ts_ms",)),))

MAINTENANCE = Measurement(
    "slawatch_maintenance",
    (_tag("id", "stable window id"),
     Column("scope", "field", check=f"scope IN ({', '.join(repr(s) for s in SCOPES)})",
            meaning="component, class or customer"),
     Column("value", "field", meaning="the component, class or customer name"),
     Column("start_ms", "time", "integer", meaning="window start"),
     Column("end_ms", "field", "integer", check="end_ms > start_ms", meaning="window end (exclusive)"),
     Column("announced_ms", "field", "integer", meaning="when the customer was told"),
     Column("reason", "field", default="''", meaning="free text"),
     Column("created_ms", "field", "integer", meaning="when it was recorded"),
     Column("removed", "field", "integer", default="0", check="removed IN (0, 1)", meaning="1 once withdrawn")),
    key=("id",), written_by="slawatch maintenance add|remove", prune="end_ms",
    indexes=(("time", ("start_ms", "end_ms")),), without_rowid=False)

ACK = Measurement(
    "slawatch_ack",
    (_COMPONENT, _AGENT, Column("raised_ms", "time", "integer", meaning="when the fault was raised"),
     Column("acked_ms", "field", "integer", meaning="when it was acknowledged"),
     Column("acked_by", "field", meaning="who"), Column("note", "field", default="''", meaning="free text")),
    key=("component", "agent", "raised_ms"),
    written_by="nothing (acknowledgements are kept with their incident, in slawatch_incident)", prune="raised_ms",
    without_rowid=False, reserved=True)

REPORT_SENT = Measurement(
    "slawatch_report_sent",
    (_tag("period", "the report's period key (2024-05)"), _tag("customer", "customer name"),
     Column("sent_ms", "time", "integer", meaning="when it was sent"),
     Column("sha256", "field", meaning="the report's inputs_sha256")),
    key=("period", "customer"), written_by="the monthly report job and slawatch report --email",
    without_rowid=False, time_field=True)

def _field(name: str, type: Type = "string", meaning: str = "", **kw: Any) -> Column:
    return Column(name, "field", type, meaning=meaning, **kw)


_STATES = ", ".join(repr(str(s)) for s in IncidentState)

INCIDENT = Measurement(
    "slawatch_incident",
    (_tag("id", "INC-2026-000123: the year it was raised and its number in that year"),
     _COMPONENT, _CLASS, _TIER, _CUSTOMER,
     _field("fault", check="fault IN ('down', 'degraded')", meaning="down or degraded (the worst seen)"),
     Column("start_ms", "time", "integer", meaning="effective start of the fault (the outage start in the ledger)"),
     _field("raised_ms", "integer", "when it was confirmed and raised: the response clock starts here"),
     _field("priority", meaning="P1, P2 ... from the contract's rules, or as an operator set it"),
     _field("state", check=f"state IN ({_STATES})", meaning="open, acknowledged, paused or resolved"),
     _REASON,
     _field("agents", meaning="the agents that saw the fault, comma-separated"),
     _field("acknowledged_ms", "integer", "the first acknowledgement: the response clock stops", nullable=True),
     _field("acknowledged_by", meaning="who acknowledged", default="''"),
     _field("ack_comment", meaning="their comment", default="''"),
     _field("pauses", meaning="waiting on the customer: JSON [[start_ms, end_ms or null, reason], ...]",
            default="'[]'"),
     _field("resolved_ms", "integer", "recovery, or resolved by hand", nullable=True),
     _field("resolved_by", meaning="who resolved it by hand; empty on recovery", default="''"),
     _field("escalations", "integer", "escalation instants handled so far", default="0"),
     _field("updated_ms", "integer", "last change"),
     _field("version", "integer", "number of events in its log; every write checks and moves it")),
    key=("id",), written_by="the incident desk and slawatch incident", prune="start_ms",
    indexes=(("component", ("component", "start_ms")), ("raised", ("raised_ms",)), ("state", ("state",))),
    without_rowid=False, record=True)

INCIDENT_FAULT = Measurement(
    "slawatch_incident_fault",
    (_COMPONENT, Column("start_ms", "time", "integer", meaning="effective start of one fault of the component"),
     _field("incident", meaning="the incident it opened or re-opened")),
    key=("component", "start_ms"),
    written_by="the incident desk, in the same transaction as the incident: one fault raises one incident",
    prune="start_ms", record=True)

INCIDENT_EVENT = Measurement(
    "slawatch_incident_event",
    (_tag("incident", "incident id"), _field("seq", "integer", "1, 2, ... within the incident"),
     _TS, _field("action", meaning="opened, reopened, acknowledged, paused, resumed, priority, escalated, fault, "
                                   "resolved, commented"),
     _field("actor", meaning="operator name, or slawatch"), _field("comment", default="''", meaning="free text"),
     _field("detail", default="''", meaning="particulars as JSON text")),
    key=("incident", "seq"), written_by="the incident desk and slawatch incident (append-only)", prune="ts_ms",
    record=True)

_NOTE_STATES = ", ".join(repr(str(s)) for s in NotificationState)

NOTIFICATION = Measurement(
    "slawatch_notification",
    (_tag("id", "<incident>.<event seq>.<n>: one message to one recipient"), _tag("incident", "incident id"),
     _field("kind", meaning="open, reopen, ack, priority, pause, resume, escalation, resolve"),
     _field("recipient", meaning="an email address or an Apprise URL"),
     _field("subject"), _field("text"), _field("html", default="''"), _field("data", meaning="JSON text"),
     Column("created_ms", "time", "integer", meaning="when it was queued"),
     _field("due_ms", "integer", "next attempt"), _field("attempts", "integer", "attempts so far", default="0"),
     _field("state", check=f"state IN ({_NOTE_STATES})", meaning="pending, sent or failed (given up)"),
     _field("last_error", default="''", meaning="why the last attempt failed"),
     _field("sent_ms", "integer", "when it was delivered", nullable=True)),
    key=("id",), written_by="the incident desk (queued with the incident's change; the sender marks them)",
    prune="created_ms", indexes=(("due", ("state", "due_ms")), ("incident", ("incident",))), without_rowid=False,
    record=True)

_ROLES = ", ".join(repr(r) for r in ROLES)

USER = Measurement(
    "slawatch_user",
    (_tag("name", "the account's login name"),
     _field("role", check=f"role IN ({_ROLES})", meaning="admin, operator or customer"),
     _field("customers", meaning="for a customer account, the customers it may see: JSON [\"acme\", ...]",
            default="'[]'"),
     _field("password_hash", meaning="Argon2 hash of the password (never the password)"),
     Column("created_ms", "time", "integer", meaning="when the account was added"),
     _field("updated_ms", "integer", "last change (password, role)")),
    key=("name",), written_by="slawatch user add|passwd|remove", without_rowid=False, record=True)

AGENT = Measurement(
    "slawatch_agent",
    (_tag("agent", "agent id"),
     Column("seen_ms", "time", "integer", meaning="its last renewal: the agent is live while this is fresh"),
     _field("started_ms", "integer", "when it started"),
     _field("heartbeat_s", "float", "its heartbeat period"),
     _field("zone", default="''", meaning="its zone; empty when none"),
     _field("assign", check="assign IN ('static', 'auto')", meaning="static or auto"),
     _field("replicas", "integer", "auto: how many agents watch each component"),
     _field("watching", "integer", "how many components it watches now"),
     _field("host", default="''", meaning="the host it runs on"),
     _field("version", default="''", meaning="slawatch version")),
    key=("agent",), written_by="every agent, several times per heartbeat period (a lease); removed at a clean stop",
    without_rowid=False, record=True)

RETENTION_POLICY = "slawatch"
"""The InfluxDB (v1) retention policy slawatch creates and writes to when none is configured."""

MEASUREMENTS: tuple[Measurement, ...] = (PROBE, STATE, HEARTBEAT, MAINTENANCE, ACK, REPORT_SENT, INCIDENT,
                                         INCIDENT_FAULT, INCIDENT_EVENT, NOTIFICATION, USER, AGENT)
SCHEMA_VERSION = 3
"""SQLite `PRAGMA user_version`."""

MIGRATIONS: tuple[tuple[int, Measurement, str], ...] = (
    (2, STATE, "degraded"),
    (3, STATE, "released"),
)
"""(version, table, column): columns added since version 1; a store made before `version` gets the column (as
declared in its Measurement) when it is opened. Tables new in a version are created by `ddl()` itself."""


def add_column_sql(measurement: Measurement, name: str) -> str:
    """ALTER TABLE adding one declared column (nullable columns only: old rows read as NULL)."""
    return _add_column_sql(measurement, name, "", _SQL_TYPE)


def _add_column_sql(measurement: Measurement, name: str, if_missing: str, types: dict[str, str]) -> str:
    c = measurement.column(name)
    if not c.nullable:
        raise ValueError(f"{measurement.name}.{name}: only a nullable column can be added to a stored table")
    sql = f"ALTER TABLE {measurement.name} ADD COLUMN {if_missing}{c.name} {types[c.type]}"
    if c.check is not None:
        sql += f" CHECK ({c.check})"
    return sql


def ddl() -> str:
    """The SQLite schema: every table and index (idempotent)."""
    return "\n".join(m.ddl() for m in MEASUREMENTS)


PARTITIONED: tuple[Measurement, ...] = (PROBE,)
"""Tables PostgreSQL keeps in monthly partitions of their time column (pruned by dropping whole months)."""


def pg_ddl() -> str:
    """The PostgreSQL schema: every table and index (idempotent)."""
    return "\n".join(m.pg_ddl(partition_by_time=m in PARTITIONED) for m in MEASUREMENTS)


def pg_add_column_sql(measurement: Measurement, name: str) -> str:
    """PostgreSQL ALTER TABLE adding one declared column if missing (nullable columns only, as add_column_sql)."""
    return _add_column_sql(measurement, name, "IF NOT EXISTS ", _PG_TYPE)


def clean_text(value: str) -> str:
    """Make a string storable anywhere: lone surrogates become U+FFFD, length is capped at MAX_TEXT_CHARS."""
    if value.isascii() and len(value) <= MAX_TEXT_CHARS:  # the common case, and fast
        return value
    if len(value) > MAX_TEXT_CHARS:
        value = value[:MAX_TEXT_CHARS]
    return _SURROGATE.sub("\ufffd", value)


# ---------------------------------------------------------------- values as stored rows (every backend)
# Each builds the Row in its measurement's `columns` order; this runs for every point, so it is written out.


def _sample_row(p: Sample) -> Row:
    c, r, lat = clean_text, p.ref, p.latency_ms
    return (c(r.component), p.ts_ms, c(p.agent), c(p.probe), c(r.klass), c(r.tier), c(r.customer), c(p.kind),
            int(p.up), float(lat) if lat is not None and math.isfinite(lat) else None, c(str(p.outcome)), c(p.reason))


def _state_row(p: StateChange) -> Row:
    c, r = clean_text, p.ref
    # degraded and released are absent unless set: an up/down change is stored as before version 2.
    return (c(r.component), p.ts_ms, c(p.agent), c(r.klass), c(r.tier), c(r.customer), int(p.up), c(p.reason),
            1 if p.degraded else None, 1 if p.released else None)


def _heartbeat_row(p: Heartbeat) -> Row:
    return (clean_text(p.agent), p.ts_ms, float(p.period_s))


_POINT_ROWS: dict[type, tuple[Measurement, Callable[..., Row]]] = {
    Sample: (PROBE, _sample_row), StateChange: (STATE, _state_row), Heartbeat: (HEARTBEAT, _heartbeat_row),
}


def point_row(point: Point) -> tuple[Measurement, Row]:
    """A model point as its measurement and stored values: what every backend writes."""
    try:
        measurement, build = _POINT_ROWS[type(point)]
    except KeyError:
        raise TypeError(f"not a point: {point!r}") from None
    return measurement, build(point)


def window_row(window: MaintenanceWindow, *, removed: bool = False) -> Row:
    c = clean_text
    return (c(window.id), window.scope, c(window.value), int(window.start_ms), int(window.end_ms),
            int(window.announced_ms), c(window.reason), int(window.created_ms), int(removed))


def report_sent_row(period_key: str, customer: str, sent_ms: int, sha256: str) -> Row:
    return (clean_text(period_key), clean_text(customer), int(sent_ms), sha256)


# ---------------------------------------------------------------- stored rows back as values (every backend)


class RowShape(NamedTuple):
    """Where a stored change's values are in a row read back: `key` (the values its ComponentRef is made of, a
    hashable), `ref` (that ComponentRef from the key; RowShapeError when the key cannot make one) and the rest."""

    key: Callable[[Any], Hashable]
    ref: Callable[[Any], ComponentRef]
    agent: int
    ts: int
    up: int
    reason: int
    degraded: int
    released: int


class RowShapeError(ValueError):
    """A row read back does not hold what its shape says."""


STATE_SHAPE = RowShape(itemgetter(*(STATE.index(n) for n in ("component", "class", "tier", "customer"))),
                       lambda key: ComponentRef(*key), *(STATE.index(n) for n in ("agent", "ts_ms", "up", "reason",
                                                                                 "degraded", "released")))
"""`slawatch_state` rows in STATE.columns order."""


def state_changes(rows: Iterable[Sequence[Any]], refs: dict[Any, ComponentRef] | None = None,
                  strings: dict[str, str] | None = None, shape: RowShape = STATE_SHAPE) -> list[StateChange]:
    """`slawatch_state` rows (by default in STATE.columns order; ts_ms an int, up 0/1, reason a str) as
    StateChanges, in the order given; RowShapeError from `shape.ref`.

    One ComponentRef per distinct (component, class, tier, customer): a month of 10 000 components is
    ~400 000 changes over ~10 000 refs. With `strings`, one str per distinct agent and reason too (a driver makes
    a new str per row and column: for millions of changes, hundreds of megabytes). Pass the same `refs` and
    `strings` (and `shape`) to read rows in batches.
    """
    if refs is None:
        refs = {}
    ref_of, make_ref, agent, ts, up, reason, degraded, released = shape
    new = tuple.__new__  # StateChange(...) without the Python-level __new__ of a NamedTuple: a third faster
    out: list[StateChange] = []
    append = out.append
    last: Any = None
    ref: ComponentRef | None = None
    for row in rows:
        key = ref_of(row)
        if key != last:  # rows come by component: most follow one with the same tags, a compare, not a hash
            ref = refs.get(key)
            if ref is None:
                ref = refs[key] = make_ref(key)
            last = key
        if strings is None:
            append(new(StateChange, (ref, row[agent], row[ts], row[up] == 1, row[reason], row[degraded] == 1,
                                     row[released] == 1)))
        else:
            who, why = row[agent], row[reason]
            append(new(StateChange, (ref, strings.setdefault(who, who), row[ts], row[up] == 1,
                                     strings.setdefault(why, why), row[degraded] == 1, row[released] == 1)))
    return out


# ---------------------------------------------------------------- a component's changes packed in one row

# A report's slice is read a component per row: the driver makes a Python object per value of a row (ten per
# change, most of a slice's read), where a text split in C makes one per change and column at a fraction of the
# cost. The row: component, count(*), min and max of class, of tier and of customer (the tags, if they did not
# change in the period), then each column of the changes in (ts_ms, agent) order as one text: the instants joined
# by ",", the agents by the unit separator, the flags one digit per change (PACKED_FLAGS_SQL), the reasons by the
# unit separator. SQLite reads a slice so (store/sqlite.py); PostgreSQL does not: its server's aggregation, on the
# same cores, cost twice what its client saved (bench/README.md, "The report's sixth pass").
PACKED_SEPARATOR = "\x1f"
PACKED_FLAGS_SQL = "up + 2 * ifnull(degraded, 0) + 4 * ifnull(released, 0)"
"""A change's up, degraded and released as one digit (0-7)."""
_PACKED_FLAGS = {str(n): (n & 1 == 1, n & 2 == 2, n & 4 == 4) for n in range(8)}
_PACKED_ORDER = attrgetter("ts_ms", "agent")


def unpacked_changes(row: Sequence[Any], refs: dict[Any, ComponentRef],
                     strings: dict[str, str]) -> list[StateChange] | None:
    """A component's changes in a period from its packed row (above), in (ts_ms, agent) order, sharing `refs` and
    `strings` with state_changes; None when the row does not hold them plainly: tags that changed in the period, a
    separator inside an agent or a reason, a value not of the schema's kind or NULL (the aggregates leave NULLs
    out). Then the component's rows are to be read as they are."""
    component, count, klass, klass_hi, tier, tier_hi, customer, customer_hi, instants, agents, flags, reasons = row
    if klass != klass_hi or tier != tier_hi or customer != customer_hi:
        return None
    try:
        ts = list(map(int, instants.split(",")))
        bits = list(map(_PACKED_FLAGS.__getitem__, flags))
        who = agents.split(PACKED_SEPARATOR)
        why = reasons.split(PACKED_SEPARATOR)
    except (AttributeError, ValueError, KeyError):  # a NULL or a value of another kind: the rows tell what it is
        return None
    if not count == len(ts) == len(bits) == len(who) == len(why):
        return None
    key = (component, klass, tier, customer)  # STATE_SHAPE's key: one ref with the rows' changes
    ref = refs.get(key)
    if ref is None:
        ref = refs[key] = ComponentRef(*key)
    keep = strings.setdefault
    new = tuple.__new__
    changes = [new(StateChange, (ref, agent, at, up, reason, degraded, released))
               for agent, at, (up, degraded, released), reason
               in zip(map(keep, who, who), ts, bits, map(keep, why, why), strict=True)]
    if not all(map(lt, ts, islice(ts, 1, None))):  # changes at one instant (or out of order): in key order
        changes.sort(key=_PACKED_ORDER)
    return changes


_COMPONENT_AT = STATE.index("component")
STATE_ORDER = itemgetter(*(STATE.index(n) for n in STATE.key))
"""Sort key of a `slawatch_state` row: its identity (component, ts_ms, agent), the order `changes` returns."""
_KEY_LEADS = STATE.names[:len(STATE.key)] == STATE.key


def walks_last_changes(history_from_ms: int, start_ms: int, end_ms: int) -> bool:
    """Whether a report's slice reads each (component, agent)'s last change before [start_ms, end_ms) by walking the
    (component, agent, ts_ms) index (a seek per pair, whatever the history) rather than from every change before
    the period: once the store's history (its oldest change at `history_from_ms`) holds more than half a period
    before it. Over a shorter history the full read is faster (a store's first month, 2 000 components: PostgreSQL
    15 against 41 ms, SQLite 16 against 34 ms); after a month of it, four times slower and growing."""
    return start_ms - history_from_ms > (end_ms - start_ms) // 2


class LastRows:
    """Each (component, agent)'s last change before a period (`slawatch_state` rows, sorted by their identity), put
    in front of its component's first change in the period as the period's rows pass, in their identity order too.

    A last change is earlier than any change of its component in the period, so this is a merge by component
    alone: a compare per component, not a sort of the rows."""

    def __init__(self, last: list[Any]) -> None:
        self._last = last
        self._taken = 0

    def merged(self, rows: Iterable[Any]) -> list[Any]:
        """`rows` (the next ones of the period) with the last changes of their components and of any before them."""
        out: list[Any] = []
        for name, run in groupby(rows, key=itemgetter(_COMPONENT_AT)):
            out += self.through(name)
            out += run
        return out

    def through(self, name: str) -> list[Any]:
        """The last changes of the components up to `name` (included) not yet taken: those go before `name`'s first
        change in the period."""
        last, begin, n = self._last, self._taken, len(self._last)
        at = begin
        while at < n and last[at][_COMPONENT_AT] <= name:
            at += 1
        self._taken = at
        return last[begin:at]

    def rest(self) -> list[Any]:
        """The last changes of the components after the period's last row (or without any in the period)."""
        rest, self._taken = self._last[self._taken:], len(self._last)
        return rest


def sort_state_rows(rows: list[Any]) -> None:
    """Sort `slawatch_state` rows (tuples in STATE.columns order) by their identity, in place."""
    if _KEY_LEADS:
        rows.sort()  # the key is the leading columns: plain tuple order, three times faster than a key function
    else:
        rows.sort(key=STATE_ORDER)

WINDOW_COLUMNS = tuple(n for n in MAINTENANCE.names if n != "removed")
"""The columns a MaintenanceWindow is read from, in its constructor's order."""


def maintenance_window(row: Sequence[Any]) -> MaintenanceWindow:
    """A `slawatch_maintenance` row, in WINDOW_COLUMNS order (a field never written reads as empty/0)."""
    values = dict(zip(WINDOW_COLUMNS, row, strict=True))
    for name in WINDOW_COLUMNS:
        if values[name] is None:
            values[name] = 0 if MAINTENANCE.column(name).type == "integer" else ""
    return MaintenanceWindow(**values)


# ---------------------------------------------------------------- the incident desk's records (every backend)


def incident_row(i: Incident) -> Row:
    c, r = clean_text, i.ref
    pauses = json.dumps([[p.start_ms, p.end_ms, c(p.reason)] for p in i.pauses], ensure_ascii=False)
    return (c(i.id), c(r.component), c(r.klass), c(r.tier), c(r.customer), i.fault, int(i.start_ms),
            int(i.raised_ms), c(i.priority), str(i.state), c(i.reason), c(",".join(i.agents)), i.acknowledged_ms,
            c(i.acknowledged_by), c(i.ack_comment), pauses, i.resolved_ms, c(i.resolved_by), int(i.escalations),
            int(i.updated_ms), int(i.version))


def incident(row: Sequence[Any]) -> Incident:
    """A `slawatch_incident` row, in INCIDENT.columns order."""
    (id_, component, klass, tier, customer, fault, start_ms, raised_ms, priority, state, reason, agents,
     acknowledged_ms, acknowledged_by, ack_comment, pauses, resolved_ms, resolved_by, escalations, updated_ms,
     version) = row
    return Incident(
        id_, ComponentRef(component, klass, tier, customer), fault, int(start_ms), int(raised_ms), priority,
        IncidentState(state), reason, tuple(a for a in agents.split(",") if a), _int_or_none(acknowledged_ms),
        acknowledged_by, ack_comment, tuple(Pause(int(s), _int_or_none(e), str(r)) for s, e, r in json.loads(pauses)),
        _int_or_none(resolved_ms), resolved_by, int(escalations), int(updated_ms), int(version))


def event_row(e: IncidentEvent) -> Row:
    c = clean_text
    return (c(e.incident_id), int(e.seq), int(e.ts_ms), c(e.action), c(e.actor), c(e.comment), c(e.detail))


def incident_event(row: Sequence[Any]) -> IncidentEvent:
    """A `slawatch_incident_event` row, in INCIDENT_EVENT.columns order."""
    incident_id, seq, ts_ms, action, actor, comment, detail = row
    return IncidentEvent(incident_id, int(seq), int(ts_ms), action, actor, comment, detail)


def notification_row(n: Notification) -> Row:
    # The message texts are not cut at MAX_TEXT_CHARS: a mail body is longer than a reason. Surrogates still go.
    def whole(text: str) -> str:
        return _SURROGATE.sub("\ufffd", text)

    return (whole(n.id), whole(n.incident_id), n.kind, whole(n.recipient), whole(n.subject), whole(n.text),
            whole(n.html), whole(n.data), int(n.created_ms), int(n.due_ms), int(n.attempts), str(n.state),
            clean_text(n.last_error), n.sent_ms)


def notification(row: Sequence[Any]) -> Notification:
    """A `slawatch_notification` row, in NOTIFICATION.columns order."""
    (id_, incident_id, kind, recipient, subject, text, html, data, created_ms, due_ms, attempts, state, last_error,
     sent_ms) = row
    return Notification(id_, incident_id, kind, recipient, subject, text, html, data, int(created_ms), int(due_ms),
                        int(attempts), NotificationState(state), last_error, _int_or_none(sent_ms))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def samples(rows: Iterable[Sequence[Any]]) -> list[Sample]:
    """`slawatch_probe` rows (in PROBE.columns order) as Samples, in the order given."""
    refs: dict[tuple[str, str, str, str], ComponentRef] = {}
    out: list[Sample] = []
    for component, ts_ms, agent, probe, klass, tier, customer, kind, _up, latency_ms, outcome, reason in rows:
        key = (component, klass, tier, customer)
        ref = refs.get(key)
        if ref is None:
            ref = refs[key] = ComponentRef(*key)
        try:
            seen = Outcome(outcome)
        except ValueError:  # written by a later version: keep the sample, as the nearest known outcome
            seen = Outcome.UP if _up == 1 else Outcome.AGENT_ERROR
        out.append(Sample(ref, probe, kind, agent, int(ts_ms), seen, reason or "",
                          None if latency_ms is None else float(latency_ms)))
    return out


def agent_lease_row(a: AgentLease) -> Row:
    c = clean_text
    return (c(a.agent), int(a.seen_ms), int(a.started_ms), float(a.heartbeat_s), c(a.zone), a.assign,
            int(a.replicas), int(a.watching), c(a.host), c(a.version))


def agent_lease(row: Sequence[Any]) -> AgentLease:
    """A `slawatch_agent` row, in AGENT.columns order."""
    agent, seen_ms, started_ms, heartbeat_s, zone, assign, replicas, watching, host, version = row
    return AgentLease(str(agent), int(seen_ms), int(started_ms), float(heartbeat_s), str(zone or ""),
                      "auto" if assign == "auto" else "static", int(replicas), int(watching), str(host or ""),
                      str(version or ""))


def user_row(u: User) -> Row:
    c = clean_text
    return (c(u.name), u.role, json.dumps([c(x) for x in u.customers]), u.password_hash, int(u.created_ms),
            int(u.updated_ms))


def user(row: Sequence[Any]) -> User:
    name, role, customers, password_hash, created_ms, updated_ms = row
    if role not in ROLES:
        raise ValueError(f"stored user {name!r} has an unknown role {role!r}")
    return User(str(name), role, str(password_hash), tuple(str(c) for c in json.loads(customers or "[]")),
                int(created_ms), int(updated_ms))


__all__ = [
    "ACK",
    "AGENT",
    "HEARTBEAT",
    "MAINTENANCE",
    "MAX_TEXT_CHARS",
    "MEASUREMENTS",
    "MIGRATIONS",
    "PARTITIONED",
    "PROBE",
    "REPORT_SENT",
    "RETENTION_POLICY",
    "SCHEMA_VERSION",
    "STATE",
    "STATE_ORDER",
    "WINDOW_COLUMNS",
    "Column",
    "Measurement",
    "Row",
    "Value",
    "add_column_sql",
    "agent_lease",
    "agent_lease_row",
    "clean_text",
    "ddl",
    "maintenance_window",
    "pg_add_column_sql",
    "pg_ddl",
    "point_row",
    "report_sent_row",
    "samples",
    "sort_state_rows",
    "state_changes",
    "user",
    "user_row",
    "window_row",
]

