"""The spool keeps the bytes an encoding sink wants with each point: read back as they were made, shared by the
consumers of one encoding, kept by compaction; points where a record lacks them (format 1 spools, another
format name, a failed encoder)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.daemon import open_spool
from agent.spool import SEG_MAGIC, Batch, Encoding, Spool, encode_point, encode_record, json_of, part_head, parts_of
from slawatch.config.settings import InfluxSettings, SpoolSettings
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange
from slawatch.store.lineprotocol import ENCODING, encode, encode_lines

REF = ComponentRef("sip-core-01", "sip", "gold", "acme")
LP = Encoding(ENCODING, encode_lines)


def points(start: int, n: int) -> list[Point]:
    out: list[Point] = []
    for i in range(start, start + n):
        if i % 7 == 3:
            out.append(StateChange(REF, "agent-1", i, i % 2 == 0, f"change {i}"))
        elif i % 11 == 5:
            out.append(Heartbeat("agent-1", i, 10.0))
        else:
            out.append(Sample(REF, "options", "sip", "agent-1", i, Outcome.UP, "", 0.5 + i))
    return out


def drain(sp: Spool, consumer: str, max_points: int = 5000) -> list[Batch]:
    out: list[Batch] = []
    while batch := sp.read(consumer, max_points):
        out.append(batch)
        sp.ack(consumer, batch)
    return out


def test_an_encoding_consumer_reads_the_bytes_made_at_append_and_the_others_read_points(tmp_path: Path) -> None:
    pts = points(0, 120)
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb", "sqlite"), encodings={"influxdb": LP}) as sp:
        sp.append(pts[:70])
        sp.append(pts[70:])
        assert sp.pending("influxdb") == 120
        batches = drain(sp, "influxdb", 50)
        assert [len(b) for b in batches] == [50, 50, 20]
        assert all(not b.points for b in batches)
        assert b"".join(item for b in batches for item in b.encoded) == encode(pts)
        assert [p for b in drain(sp, "sqlite") for p in b.points] == pts
        assert sp.pending("influxdb") == 0


def test_consumers_of_one_encoding_share_its_part(tmp_path: Path) -> None:
    calls: list[int] = []

    def counting(batch: Sequence[Point]) -> list[bytes]:
        calls.append(len(batch))
        return encode_lines(batch)

    enc = Encoding(ENCODING, counting)
    with Spool(tmp_path / "s", 1 << 30, consumers=("a", "b"), encodings={"a": enc, "b": enc}) as sp:
        sp.append(points(0, 10))
        assert calls == [10]  # encoded once for both
        assert sp.read("a").encoded == sp.read("b").encoded == tuple(encode_lines(points(0, 10)))


def write_format_1(path: Path, pts: Sequence[Point]) -> None:
    """A spool as the previous release wrote it: version 1 header, JSON payloads only."""
    path.mkdir(parents=True)
    data = SEG_MAGIC + bytes([1, 0]) + b"".join(encode_record(encode_point(p)) for p in pts)
    (path / f"{1:020d}.seg").write_bytes(data)


def test_a_format_1_spool_replays_as_points_then_new_appends_as_bytes(tmp_path: Path) -> None:
    old, new = points(0, 30), points(30, 30)
    write_format_1(tmp_path / "s", old)
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        assert sp.pending("influxdb") == 30
        sp.append(new)
        first = sp.read("influxdb", 40)  # 30 old records and 10 new: the whole batch as points
        assert list(first.points) == old + new[:10] and not first.encoded
        sp.ack("influxdb", first)
        rest = sp.read("influxdb")
        assert b"".join(rest.encoded) == encode(new[10:]) and not rest.points


def test_records_of_another_format_name_replay_as_points(tmp_path: Path) -> None:
    pts = points(0, 20)
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        sp.append(pts)
    renamed = Encoding("influxdb-line-ms-99", encode_lines)
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": renamed}) as sp:
        batch = sp.read("influxdb")
        assert list(batch.points) == pts and not batch.encoded
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",)) as sp:  # no encoding at all: points
        assert list(sp.read("influxdb").points) == pts


def test_a_failing_encoder_still_spools_the_points(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(batch: Sequence[Point]) -> list[bytes]:
        raise ValueError("bug")

    with Spool(tmp_path / "s", 1 << 30, consumers=("x",), encodings={"x": Encoding("broken-1", broken)}) as sp:
        sp.append(points(0, 5))
        assert list(sp.read("x").points) == points(0, 5)
    assert "encoding broken-1 failed" in caplog.text


def test_compaction_keeps_the_parts_of_what_it_keeps(tmp_path: Path) -> None:
    pts = points(0, 400)
    with Spool(tmp_path / "s", 60_000, consumers=("influxdb", "sqlite"), encodings={"influxdb": LP},
               segment_bytes=4096) as sp:
        for i in range(0, 400, 20):
            sp.append(pts[i:i + 20])
        assert sp.dropped_samples > 0
        items = [item for b in drain(sp, "influxdb") for item in b.encoded]
        kept = [p for b in drain(sp, "sqlite") for p in b.points]
    assert items == encode_lines(kept)  # every kept point with its own line, state changes all there
    assert [p for p in kept if isinstance(p, StateChange)] == [p for p in pts if isinstance(p, StateChange)]


def test_open_spool_gives_the_influxdb_sink_its_encoding(tmp_path: Path) -> None:
    from slawatch.store.influxdb import InfluxSink

    sink = InfluxSink(InfluxSettings(url="http://127.0.0.1:9", database="d"))
    sp = open_spool(SpoolSettings(path=tmp_path / "s"), [sink])
    try:
        sp.append(points(0, 3))
        assert b"".join(sp.read("influxdb").encoded) == encode(points(0, 3))
    finally:
        sp.close()


def test_a_format_2_segment_is_refused_by_format_1_readers_only(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        sp.append(points(0, 3))
    header = next((tmp_path / "s").glob("*.seg")).read_bytes()[:8]
    assert header[:6] == SEG_MAGIC and header[6] == 2  # a release that reads format 1 only moves it aside


names = st.text(st.characters(min_codepoint=48, max_codepoint=122).filter(str.isalnum), min_size=1, max_size=64)


@given(st.lists(st.tuples(names, st.binary(max_size=80)), max_size=4, unique_by=lambda t: t[0]), names)
def test_parts_are_found_by_name_whatever_their_bytes(parts: list[tuple[str, bytes]], wanted: str) -> None:
    json_part = encode_point(points(0, 1)[0])
    payload = json_part
    for name, data in parts:
        payload += part_head(name) + struct.pack("<I", len(data)) + data
    assert json_of(payload) == json_part
    expected = dict(parts).get(wanted)
    assert parts_of([payload], wanted) == (None if expected is None else [expected])


@pytest.mark.parametrize("cut", [1, 2, 5, 10])
def test_a_malformed_part_reads_as_missing(cut: int) -> None:
    payload = encode_point(points(0, 1)[0]) + part_head("lp") + struct.pack("<I", 10) + b"0123456789"
    assert parts_of([payload], "lp") == [b"0123456789"]
    assert parts_of([payload[:-cut]], "lp") is None
