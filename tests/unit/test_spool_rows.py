"""The spool's records read straight as stored rows (for SQLite), and its JSON encoder made once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.daemon import open_spool
from agent.drain import Drain
from agent.spool import Encoding, Spool, _encode_json, encode_point, payload_rows
from slawatch import schema
from slawatch.config.settings import SpoolSettings, SqliteSettings
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange
from slawatch.schema import Row
from slawatch.store.sqlite import ENCODING, SqliteSink, encode_rows

pytestmark = pytest.mark.timeout(60)

text = st.text(max_size=12)  # lone surrogates, non-ASCII, quotes and backslashes included
refs = st.builds(ComponentRef, component=text, klass=text, tier=text, customer=text)
latency = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))
points = st.one_of(
    st.builds(Sample, ref=refs, probe=text, kind=text, agent=text, ts_ms=st.integers(0, 2**53),
              outcome=st.sampled_from(Outcome), reason=st.text(max_size=30), latency_ms=latency),
    st.builds(StateChange, ref=refs, agent=text, ts_ms=st.integers(0, 2**53), up=st.booleans(),
              reason=st.text(max_size=30), degraded=st.booleans(), released=st.booleans()),
    st.builds(Heartbeat, agent=text, ts_ms=st.integers(0, 2**53), period_s=st.floats(0.001, 1e6)))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20))
T0 = 1_700_000_000_000


def point_rows(batch: list[Point]) -> dict[str, list[Row]]:
    """The rows every store inserts for these points (`schema.point_row`), per measurement."""
    out: dict[str, list[Row]] = {m.name: [] for m in (schema.PROBE, schema.STATE, schema.HEARTBEAT)}
    for p in batch:
        measurement, row = schema.point_row(p)
        out[measurement.name].append(row)
    return out


@given(st.lists(scalars, max_size=12))
def test_the_encoder_made_once_writes_what_json_dumps_writes(row: list[Any]) -> None:
    assert _encode_json(row) == json.dumps(row, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


@given(st.lists(points, max_size=8))
def test_rows_read_from_the_records_are_the_rows_of_the_points(batch: list[Point]) -> None:
    """What a replay for SQLite inserts, made from the records without points, is what `write` would insert (NaN,
    infinities, integer latencies, lone surrogates and over-long text exact)."""
    got, bad = payload_rows([encode_point(p) for p in batch])
    assert bad == 0 and repr(got) == repr(point_rows(batch))


def test_unreadable_records_are_left_out_and_counted() -> None:
    good = Sample(ComponentRef("c", "k", "t", ""), "p", "tcp", "a", T0, Outcome.UP, "", 1.5)
    got, bad = payload_rows([b"[0,", b"[9,1]", b'[0,1,2,3,4,5,6,7,8,"up","",null]', encode_point(good)])
    assert bad == 3 and got[schema.PROBE.name] == point_rows([good])[schema.PROBE.name]


def batch(n: int) -> list[Point]:
    ref = ComponentRef("sip-core", "sip", "gold", "acme")
    out: list[Point] = [Sample(ref, "options", "sip", "a1", T0 + i * 1000, Outcome.UP, "", 1.0 + i) for i in range(n)]
    out.append(StateChange(ref, "a1", T0, False, "down", degraded=True))
    out.append(Heartbeat("a1", T0, 60.0))
    return out


def stored(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return {m.name: db.execute(f"SELECT * FROM {m.name} ORDER BY 1, 2, 3").fetchall()
                for m in (schema.PROBE, schema.STATE, schema.HEARTBEAT)}


async def written(path: Path, points_: list[Point]) -> dict[str, list[tuple[Any, ...]]]:
    sink = SqliteSink(SqliteSettings(path=path))
    try:
        await sink.write(points_)
    finally:
        await sink.close()
    return stored(path)


async def replay(tmp_path: Path) -> tuple[int, int]:
    """A restarted agent's spool and drain for SQLite, until the spool holds nothing more for it."""
    sink = SqliteSink(SqliteSettings(path=tmp_path / "store.db"))
    try:
        with open_spool(SpoolSettings(path=tmp_path / "spool"), [sink]) as sp:
            drain = Drain(sp, "sqlite", sink)
            assert drain.rows
            moved = 0
            while n := await drain.pump():
                moved += n
            return moved, sp.pending("sqlite")
    finally:
        await sink.close()


async def test_a_sample_appended_then_the_agent_killed_is_stored_after_restart(tmp_path: Path) -> None:
    points_ = batch(30)
    sink = SqliteSink(SqliteSettings(path=tmp_path / "unused.db"))
    sp = open_spool(SpoolSettings(path=tmp_path / "spool"), [sink])
    sp.append(points_)  # durable when it returns; the agent dies before its drain read anything
    assert not any(seg.blocks for seg in sp._segments)  # nothing kept for SQLite but the points' records
    sp.close()
    await sink.close()
    assert await replay(tmp_path) == (len(points_), 0)
    assert stored(tmp_path / "store.db") == await written(tmp_path / "want.db", points_)


async def test_a_spool_holding_sqlite_row_blocks_from_before_replays_as_rows(tmp_path: Path) -> None:
    points_ = batch(30)
    with Spool(tmp_path / "spool", 1 << 30, consumers=("sqlite",),
               encodings={"sqlite": Encoding(ENCODING, encode_rows)}) as sp:
        sp.append(points_)
        assert any(seg.blocks for seg in sp._segments)
    assert await replay(tmp_path) == (len(points_), 0)
    assert stored(tmp_path / "store.db") == await written(tmp_path / "want.db", points_)
