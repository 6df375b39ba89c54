"""slawatch.schema is the one description of the stored data: docs/schema.md and the SQLite tables agree with it."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slawatch import schema
from slawatch.model import ComponentRef, Heartbeat, MaintenanceWindow, Outcome, Sample, StateChange
from slawatch.schema import MEASUREMENTS, Measurement
from slawatch.store.lineprotocol import as_record, encode, lines, record

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
_HEADING = re.compile(r"^### `([a-z_]+)`", re.M)
_ROW = re.compile(r"^\| `([a-z_0-9]+)` +\| ([^|]+?) +\| ([^|]+?) +\|", re.M)
_SQL_TYPE = {"string": "TEXT", "integer": "INTEGER", "float": "REAL"}


def documented() -> dict[str, str]:
    """measurement -> its section of docs/schema.md."""
    text = DOC.read_text(encoding="utf-8")
    heads = list(_HEADING.finditer(text))
    return {h.group(1): text[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            for i, h in enumerate(heads)}


def test_every_measurement_is_documented_and_nothing_else() -> None:
    assert sorted(documented()) == sorted(m.name for m in MEASUREMENTS)


@pytest.mark.parametrize("m", MEASUREMENTS, ids=lambda m: m.name)
def test_the_documented_columns_are_the_schema(m: Measurement) -> None:
    section = documented()[m.name]
    rows = {name: (influx, sqlite) for name, influx, sqlite in _ROW.findall(section)}
    assert list(rows) and set(rows) == set(m.names), f"{m.name}: documented {sorted(rows)}, schema {m.names}"
    for c in m.columns:
        influx, sqlite = rows[c.name]
        role = {"tag": "tag", "time": "time", "field": f"{c.type} field"}[c.role]
        if c.role == "time" and m.time_field:
            role = "time and integer field"
        assert influx == role, (m.name, c.name, influx)
        assert sqlite.startswith(_SQL_TYPE[c.type]), (m.name, c.name, sqlite)
        assert ("key" in sqlite.split(", ")) == (c.name in m.key), (m.name, c.name, "key")
        assert ("NULL" in sqlite.split(", ")) == c.nullable, (m.name, c.name, "NULL")
    assert f"Written by: {m.written_by}." in section


def test_the_sqlite_tables_are_the_schema(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "x.db") as db:
        db.executescript(schema.ddl())
        for m in MEASUREMENTS:
            info = db.execute(f"PRAGMA table_info({m.name})").fetchall()
            assert [r[1] for r in info] == list(m.names)
            assert [not r[3] for r in info] == [c.nullable for c in m.columns]
            assert sorted(r[1] for r in info if r[5]) == sorted(m.key)
        db.executescript(schema.ddl())  # idempotent


REF = ComponentRef("sip-core", "sip", "gold", "acme")


@pytest.mark.parametrize("point", [
    Sample(REF, "options", "sip", "a1", 7, Outcome.TIMEOUT, "no answer", None),
    Sample(REF, "options", "sip", "a1", 8, Outcome.UP, "", 1.5),
    StateChange(REF, "a1", 9, False, "down"),
    Heartbeat("a1", 10, 60.0),
], ids=["sample-no-latency", "sample", "state", "heartbeat"])
def test_points_map_to_the_schema_names(point: Sample | StateChange | Heartbeat) -> None:
    """One mapping for every backend: the row has a value per column, the line-protocol record its names."""
    m, row = schema.point_row(point)
    assert len(row) == len(m.columns)
    rec = record(point)
    assert rec.measurement == m.name and [k for k, _ in rec.tags] == list(m.tags)
    assert [k for k, _ in rec.fields] == [f for f in m.fields if row[m.index(f)] is not None]
    assert rec.ts_ms == point.ts_ms == row[m.index(m.time)]


def test_windows_and_sent_reports_round_trip_through_their_rows() -> None:
    w = MaintenanceWindow("mw-1", "class", "san", 100, 200, 50, "firmware", 40)
    row = schema.window_row(w, removed=True)
    assert row[schema.MAINTENANCE.index("removed")] == 1
    assert schema.maintenance_window([row[schema.MAINTENANCE.index(n)] for n in schema.WINDOW_COLUMNS]) == w
    rec = as_record(schema.REPORT_SENT, schema.report_sent_row("2024-05", "acme", 99, "ab"))
    assert rec.tags == (("period", "2024-05"), ("customer", "acme"))
    assert rec.fields == (("sent_ms", 99), ("sha256", "ab")) and rec.ts_ms == 99


def test_state_rows_share_one_ref_per_tag_set() -> None:
    rows = [("c1", 1, "a", "sip", "gold", "acme", 1, "", None, None),
            ("c1", 2, "b", "sip", "gold", "acme", 0, "x", None, None),
            ("c1", 3, "a", "sip", "platinum", "acme", 1, "on battery", 1, None),
            ("c1", 4, "a", "sip", "platinum", "acme", 1, "", None, 1)]
    changes = schema.state_changes(rows)
    assert changes[0].ref is changes[1].ref and changes[2].ref.tier == "platinum"
    assert changes[1] == StateChange(ComponentRef("c1", "sip", "gold", "acme"), "b", 2, False, "x")
    assert [c.degraded for c in changes] == [False, False, True, False]
    assert [c.released for c in changes] == [False, False, False, True]


names = st.text(min_size=0, max_size=12)
refs = st.builds(ComponentRef, component=names, klass=names, tier=names, customer=names)
points = st.one_of(
    st.builds(Sample, ref=refs, probe=names, kind=names, agent=names, ts_ms=st.integers(0, 2**53),
              outcome=st.sampled_from(Outcome), reason=st.text(max_size=30),
              latency_ms=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))),
    st.builds(StateChange, ref=refs, agent=names, ts_ms=st.integers(0, 2**53), up=st.booleans(),
              reason=st.text(max_size=30), degraded=st.booleans(), released=st.booleans()),
    st.builds(Heartbeat, agent=names, ts_ms=st.integers(0, 2**53), period_s=st.floats(0.001, 1e6)))


@given(st.lists(points, max_size=8))
def test_the_agents_line_protocol_is_that_of_the_records(batch: list[Sample | StateChange | Heartbeat]) -> None:
    """`encode` builds lines from the stored rows directly, for speed; they must be the records' lines."""
    assert encode(batch) == lines(record(p) for p in batch).encode("utf-8")


_STATE_ROW = st.tuples(st.sampled_from(["a", "b", "b2", "c", "é", "z"]), st.integers(0, 20),
                       st.sampled_from(["mon-1", "mon-2"]))


@given(st.lists(_STATE_ROW, max_size=30, unique_by=lambda r: (r[0], r[1], r[2])), st.integers(1, 8))
def test_last_rows_merged_as_the_period_s_rows_pass_are_the_sorted_rows(keys: list[tuple[str, int, str]],
                                                                        batch: int) -> None:
    """Rows before instant 10 are the last changes, the others the period's, read in batches of `batch`: what
    LastRows gives is every row in identity order, as a sort of them all gives."""
    rows = [(component, ts, agent, "network", "base", "acme", 1, "", None, None) for component, ts, agent in keys]
    last = sorted(r for r in rows if r[1] < 10)
    period = sorted(r for r in rows if r[1] >= 10)
    merging = schema.LastRows(last)
    out = []
    for begin in range(0, len(period), batch):
        out += merging.merged(period[begin:begin + batch])
    out += merging.rest()
    assert out == sorted(rows)
    assert schema.STATE.names[:3] == ("component", "ts_ms", "agent")
