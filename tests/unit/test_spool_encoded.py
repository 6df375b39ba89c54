"""The spool keeps the bytes an encoding sink wants in a block with each append: read back as they were made, from
any position, shared by the consumers of one encoding, never shifted by a corrupt record; points where a read
lacks them (format 1 spools, another format name, a failed encoder, a corrupt block, compacted segments)."""

from __future__ import annotations

import gzip
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.daemon import open_spool
from agent.spool import (
    REC_HEADER,
    SEG_HEADER,
    SEG_MAGIC,
    Batch,
    Encoding,
    Spool,
    block_name,
    decode_block,
    encode_block,
    encode_point,
    encode_record,
    gzip_member,
)
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


def test_compacted_segments_replay_as_points_and_the_rest_as_bytes(tmp_path: Path) -> None:
    pts = points(0, 400)
    with Spool(tmp_path / "s", 20_000, consumers=("influxdb", "sqlite"), encodings={"influxdb": LP},
               segment_bytes=4096) as sp:
        for i in range(0, 400, 20):
            sp.append(pts[i:i + 20])
        assert sp.dropped_samples > 0
        batches = drain(sp, "influxdb", 10)
        kept = [p for b in drain(sp, "sqlite") for p in b.points]
    assert any(b.encoded for b in batches) and any(b.points for b in batches)
    lines = [item for b in batches for item in (b.encoded or encode_lines(b.points))]
    assert lines == encode_lines(kept)  # the same points either way, state changes all there
    assert [p for p in kept if isinstance(p, StateChange)] == [p for p in pts if isinstance(p, StateChange)]


def test_a_read_from_the_middle_of_a_block_after_a_restart_gets_the_rest(tmp_path: Path) -> None:
    pts = points(0, 100)
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        sp.append(pts)
        sp.ack("influxdb", sp.read("influxdb", 37))
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        assert sp.pending("influxdb") == 63
        assert b"".join(sp.read("influxdb").encoded) == encode(pts[37:])


def corrupt_record(path: Path, n: int) -> None:
    """Flip a payload byte of the `n`th record (blocks included) of the first segment."""
    seg = sorted(path.glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    pos = SEG_HEADER
    for _ in range(n):
        pos += REC_HEADER + int.from_bytes(data[pos + 2:pos + 6], "little")
    data[pos + REC_HEADER + 3] ^= 0x55
    seg.write_bytes(bytes(data))


def test_a_corrupt_point_record_never_shifts_the_items(tmp_path: Path) -> None:
    pts = [p for p in points(0, 50) if isinstance(p, Sample)]
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        sp.append(pts)
    corrupt_record(tmp_path / "s", 1 + 10)  # the block, then points 0-9; the 11th point goes bad
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        assert sp.corrupt_records == 1
        assert b"".join(sp.read("influxdb").encoded) == encode(pts[:10] + pts[11:])


def test_a_corrupt_block_replays_its_points_as_points(tmp_path: Path) -> None:
    pts = points(0, 30)
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        sp.append(pts)
    corrupt_record(tmp_path / "s", 0)
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        batch = sp.read("influxdb")
        assert list(batch.points) == pts and not batch.encoded


def test_open_spool_gives_the_influxdb_sink_its_encoding(tmp_path: Path) -> None:
    from slawatch.store.influxdb import InfluxSink

    sink = InfluxSink(InfluxSettings(url="http://127.0.0.1:9", database="d"))
    sp = open_spool(SpoolSettings(path=tmp_path / "s"), [sink])
    try:
        sp.append(points(0, 3))
        # kept as gzip data: a replay posts it without recompressing (InfluxDB takes gzip bodies)
        assert gzip.decompress(b"".join(sp.read("influxdb").gzip)) == encode(points(0, 3))
    finally:
        sp.close()


def test_a_format_2_segment_is_refused_by_format_1_readers_only(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": LP}) as sp:
        sp.append(points(0, 3))
    header = next((tmp_path / "s").glob("*.seg")).read_bytes()[:8]
    assert header[:6] == SEG_MAGIC and header[6] == 2  # a release that reads format 1 only moves it aside


names = st.text(st.characters(min_codepoint=48, max_codepoint=122).filter(str.isalnum), min_size=1, max_size=64)


@settings(deadline=None)  # pure, but a loaded CI machine can stall any example
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=80)), max_size=20, unique_by=lambda t: t[0]),
       names)
def test_blocks_round_trip(entries: list[tuple[int, bytes]], name: str) -> None:
    payload = encode_block(name, [e[1] for e in entries], [e[0] for e in entries])
    assert block_name(payload) == name and block_name(encode_point(points(0, 1)[0])) is None
    assert decode_block(payload) == dict(entries)


@pytest.mark.parametrize("cut", [1, 2, 5, 10])
def test_a_malformed_block_decodes_as_none(cut: int) -> None:
    payload = encode_block("lp", [b"0123456789", b"x"], [0, 40])
    assert decode_block(payload) == {0: b"0123456789", 40: b"x"}
    assert decode_block(payload[:-cut]) is None


# ---------------------------------------------------------------- joined blocks: gzip members copied as they are

GZ = Encoding(ENCODING, encode_lines, gzip=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(1, 90))
def test_a_gzip_consumer_reads_whole_appends_as_gzip_members_of_their_lines(sizes: list[int], most: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pts, start = [], 0
        with Spool(Path(tmp), 1 << 30, consumers=("influxdb", "sqlite"), encodings={"influxdb": GZ}) as sp:
            for n in sizes:
                sp.append(points(start, n))
                pts += points(start, n)
                start += n
            lines, done = [], 0
            while batch := sp.read("influxdb", most):
                got = pts[done:done + len(batch)]
                if batch.gzip:  # whole appends only: at most `most` points unless one append is larger
                    assert gzip.decompress(b"".join(batch.gzip)) == encode(got)
                    assert len(batch) <= most or len(batch) in sizes
                else:  # an append larger than `most`, read in parts: its items
                    assert b"".join(batch.encoded) == encode(got)
                lines.append(encode(got))
                done += len(batch)
                sp.ack("influxdb", batch)
            assert done == len(pts) and b"".join(lines) == encode(pts)
            assert list(sp.read("sqlite", 10_000).points) == pts  # a consumer without the encoding: points


def test_a_joined_block_gives_its_items_to_a_read_from_its_middle_or_past_a_corrupt_point(tmp_path: Path) -> None:
    pts = [p for p in points(0, 50) if isinstance(p, Sample)]
    with Spool(tmp_path / "s", 1 << 30, consumers=("influxdb",), encodings={"influxdb": GZ}) as sp:
        sp.append(pts)
        sp.ack("influxdb", sp.read("influxdb", 7))  # the first read takes part of the only append
        rest = sp.read("influxdb")
        assert not rest.gzip and b"".join(rest.encoded) == encode(pts[7:])
    with Spool(tmp_path / "t", 1 << 30, consumers=("influxdb",), encodings={"influxdb": GZ}) as sp:
        sp.append(pts)
    corrupt_record(tmp_path / "t", 1 + 10)
    with Spool(tmp_path / "t", 1 << 30, consumers=("influxdb",), encodings={"influxdb": GZ}) as sp:
        batch = sp.read("influxdb")
        assert not batch.gzip and b"".join(batch.encoded) == encode(pts[:10] + pts[11:])


@pytest.mark.parametrize("cut", [1, 2, 5, 10])
def test_joined_blocks_round_trip_and_a_malformed_one_decodes_as_none(cut: int) -> None:
    payload = encode_block("lp", [b"0123456789", b"", b"x"], [0, 20, 40], joined=True)
    assert decode_block(payload) == {0: b"0123456789", 20: b"", 40: b"x"}
    rels, member = gzip_member(payload) or ([], b"")
    assert rels == [0, 20, 40] and gzip.decompress(member) == b"0123456789x"
    assert decode_block(payload[:-cut]) is None
    with pytest.raises(zlib.error):  # a reader of unjoined blocks only (the previous release) finds no zlib
        zlib.decompress(payload[2 + payload[1]:])  # stream, so it replays those points as points


def test_an_ack_just_before_an_appends_block_holds_across_a_restart(tmp_path: Path) -> None:
    for enc in (LP, GZ):
        path = tmp_path / f"s{enc.gzip}"
        with Spool(path, 1 << 30, consumers=("influxdb",), encodings={"influxdb": enc}) as sp:
            sp.append(points(0, 10))
            sp.append(points(10, 10))
            sp.ack("influxdb", sp.read("influxdb", 10))  # ends where the second append's block starts
        with Spool(path, 1 << 30, consumers=("influxdb",), encodings={"influxdb": enc}) as sp:
            assert sp.pending("influxdb") == 10  # not the whole segment again
            batch = sp.read("influxdb")
            assert (gzip.decompress(b"".join(batch.gzip)) if enc.gzip else b"".join(batch.encoded)) == encode(
                points(10, 10))


def test_a_gzip_read_across_segments_stays_whole(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", 1 << 30, segment_bytes=6000, consumers=("influxdb",),
               encodings={"influxdb": GZ}) as sp:
        for start in range(0, 200, 20):
            sp.append(points(start, 20))
        batches = []
        while batch := sp.read("influxdb", 50):
            batches.append(batch)
            sp.ack("influxdb", batch)
        assert all(b.gzip for b in batches) and sum(len(b) for b in batches) == 200
