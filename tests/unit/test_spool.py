"""The durable spool: order, offsets, rollover, recovery from torn and corrupt records, overflow, full disk."""

from __future__ import annotations

import errno
import logging
import math
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.spool import REC_HEADER, SEG_HEADER, Spool, SpoolError, encode_point, encode_record
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange
from slawatch.testing import need

REF = ComponentRef("sip-core-01", "sip", "gold", "acme")


def sample(i: int, reason: str = "") -> Sample:
    return Sample(REF, "options", "sip", "agent-1", i, Outcome.UP, reason, 0.5 + i)


def state(i: int, up: bool = False) -> StateChange:
    return StateChange(REF, "agent-1", i, up, f"change {i}")


def samples(start: int, n: int) -> list[Point]:
    return [sample(i) for i in range(start, start + n)]


def drain(sp: Spool, consumer: str = "store", max_points: int = 5000, ack: bool = True) -> list[Point]:
    out: list[Point] = []
    while True:
        batch = sp.read(consumer, max_points)
        if not batch.points:
            return out
        out.extend(batch.points)
        if not ack:
            return out
        sp.ack(consumer, batch)


def ts(points: Sequence[Point]) -> list[int]:
    return [p.ts_ms for p in points]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    sp = Spool(tmp_path / "spool", 1 << 30, consumers=("store", "influx"))
    yield sp
    sp.close()


def test_append_read_ack_in_order(spool: Spool) -> None:
    spool.append(samples(0, 10))
    spool.append(samples(10, 5))
    first = spool.read("store", 4)
    assert ts(first.points) == [0, 1, 2, 3]
    spool.ack("store", first)
    assert spool.pending("store") == 11
    assert ts(drain(spool)) == list(range(4, 15))
    assert spool.pending("store") == 0
    assert spool.read("store").points == ()


def test_reread_without_ack_returns_the_same_points(spool: Spool) -> None:
    spool.append(samples(0, 20))
    a = spool.read("store", 7)
    b = spool.read("store", 7)
    assert a.points == b.points and a.end == b.end
    spool.ack("store", a)
    spool.ack("store", a)  # a repeated ack changes nothing
    assert ts(spool.read("store", 3).points) == [7, 8, 9]


def test_two_consumers_are_independent(spool: Spool) -> None:
    spool.append(samples(0, 10))
    spool.ack("store", spool.read("store", 8))
    assert ts(spool.read("influx", 3).points) == [0, 1, 2]
    assert ts(spool.read("store").points) == [8, 9]
    assert spool.pending("store") == 2 and spool.pending("influx") == 10


def test_unknown_consumer_is_an_error(spool: Spool) -> None:
    with pytest.raises(ValueError, match="unknown spool consumer 'nope'"):
        spool.read("nope")


def test_segments_roll_over_and_are_deleted_once_every_consumer_passed(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 1 << 30, consumers=("store", "influx"), segment_bytes=4096) as sp:
        for i in range(20):
            sp.append(samples(i * 10, 10))
        n = len(segments(path))
        assert n >= 5
        assert ts(drain(sp, "store", 33)) == list(range(200))
        assert len(segments(path)) == n  # influx has not read anything yet
        assert ts(drain(sp, "influx", 1000)) == list(range(200))
        assert len(segments(path)) == 1  # only the active segment stays
        assert sp.bytes == (segments(path)[0]).stat().st_size
        sp.append(samples(200, 3))
        assert ts(drain(sp, "store")) == [200, 201, 202]


def test_reopen_resumes_at_acked_offsets(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 1 << 30, consumers=("store", "influx"), segment_bytes=4096) as sp:
        for i in range(10):
            sp.append(samples(i * 10, 10))
        sp.ack("store", sp.read("store", 42))
        sp.ack("influx", sp.read("influx", 5))
        sp.read("store", 10)  # read but not acknowledged: replayed after reopen
    with Spool(path, 1 << 30, consumers=("store", "influx"), segment_bytes=4096) as sp:
        assert sp.pending("store") == 58 and sp.pending("influx") == 95
        assert ts(drain(sp, "store")) == list(range(42, 100))
        assert ts(drain(sp, "influx")) == list(range(5, 100))
        sp.append(samples(100, 1))
    with Spool(path, 1 << 30, consumers=("store", "influx"), segment_bytes=4096) as sp:
        assert ts(drain(sp, "store")) == [100]


def test_a_second_process_cannot_open_the_same_spool(spool: Spool) -> None:
    with pytest.raises(SpoolError, match="in use"):
        Spool(spool.path, 1 << 30)


def test_closed_spool_raises(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 1 << 30)
    sp.close()
    with pytest.raises(SpoolError, match="closed"):
        sp.append(samples(0, 1))


def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 1 << 30) as sp:
        sp.append(samples(0, 5))
    seg = segments(path)[-1]
    good = seg.stat().st_size
    torn = encode_record(encode_point(sample(5)))[:-7]  # a crash in the middle of the next record
    with open(seg, "ab") as f:
        f.write(torn)
    with Spool(path, 1 << 30) as sp:
        assert seg.stat().st_size == good
        assert sp.corrupt_records == 0
        assert ts(drain(sp, ack=False)) == [0, 1, 2, 3, 4]
        sp.append(samples(5, 1))
        assert ts(drain(sp)) == [0, 1, 2, 3, 4, 5]


def test_torn_header_of_the_last_record_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 1 << 30) as sp:
        sp.append(samples(0, 2))
    seg = segments(path)[-1]
    with open(seg, "ab") as f:
        f.write(b"\xf5\x9c\x10")
    with Spool(path, 1 << 30) as sp:
        assert ts(drain(sp)) == [0, 1]
        assert sp.corrupt_records == 0


def _record_offsets(seg: Path) -> list[int]:
    data = seg.read_bytes()
    pos, out = SEG_HEADER, []
    while pos < len(data):
        out.append(pos)
        pos += REC_HEADER + int.from_bytes(data[pos + 2:pos + 6], "little")
    return out


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
def test_corrupt_middle_record_is_skipped_and_counted(tmp_path: Path, where: str) -> None:
    path = tmp_path / "spool"
    with Spool(path, 1 << 30, consumers=("store", "influx")) as sp:
        sp.append(samples(0, 10))
    seg = segments(path)[-1]
    at = _record_offsets(seg)[4]
    data = bytearray(seg.read_bytes())
    if where == "payload":
        data[at + REC_HEADER + 20] ^= 0x01  # one bit flipped: the CRC catches it
    elif where == "length":
        data[at + 2] = 0x03  # an impossible length: the reader resynchronises on the next record
    else:
        data[at] = 0x00
    seg.write_bytes(bytes(data))
    with Spool(path, 1 << 30, consumers=("store", "influx")) as sp:
        assert sp.corrupt_records == 1
        assert ts(drain(sp, "store", 3)) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
        assert ts(drain(sp, "influx")) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
        assert sp.corrupt_records == 1  # counted once, not once per reader
        sp.append(samples(10, 1))
        assert ts(drain(sp)) == [10]


def test_record_corrupted_after_open_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 1 << 30) as sp:
        sp.append(samples(0, 6))
        seg = segments(path)[-1]
        at = _record_offsets(seg)[2]
        with open(seg, "r+b") as f:
            f.seek(at + REC_HEADER + 5)
            f.write(b"Z")
        assert ts(drain(sp)) == [0, 1, 3, 4, 5]
        assert sp.corrupt_records == 1


def test_record_with_valid_crc_but_wrong_shape_is_not_misdecoded(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 1 << 30) as sp:
        sp.append(samples(0, 1))
    with open(segments(path)[-1], "ab") as f:
        f.write(encode_record(b'[0,"only","three"]') + encode_record(b"[9]") + encode_record(b"{]"))
        f.write(encode_record(encode_point(sample(1))))
    with Spool(path, 1 << 30) as sp:
        assert ts(drain(sp)) == [0, 1]
        assert sp.corrupt_records == 3


def test_overflow_drops_oldest_samples_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.spool")
    path = tmp_path / "spool"
    max_bytes = 64 << 10
    appended_samples = 0
    with Spool(path, max_bytes, consumers=("store", "influx")) as sp:
        sp.ack("influx", sp.read("influx"))
        for i in range(200):
            batch: list[Point] = [*samples(i * 10, 9), state(i * 10 + 9, up=bool(i % 2))]
            if i % 10 == 0:
                batch.append(Heartbeat("agent-1", i * 10 + 9, 60.0))
            sp.append(batch)
            appended_samples += 9
        assert sp.bytes <= max_bytes
        assert sp.dropped_samples > 0
        points = drain(sp, "store")
    kept = [p for p in points if isinstance(p, Sample)]
    changes = [p for p in points if isinstance(p, StateChange)]
    beats = [p for p in points if isinstance(p, Heartbeat)]
    assert ts(changes) == [i * 10 + 9 for i in range(200)]  # every state change survives, in order
    assert len(beats) == 20
    assert len(kept) + sp.dropped_samples == appended_samples
    first_kept = kept[0].ts_ms
    assert ts(kept) == [t for t in range(first_kept, 2000) if t % 10 != 9]  # the oldest went, the rest is whole
    assert ts(points) == sorted(ts(points))
    drop_logs = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_logs) == 2  # the first drop at once, the rest summarised at close, none per compaction


def test_overflow_log_is_rate_limited(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="agent.spool")
    clock = [1000.0]
    monkeypatch.setattr("agent.spool.time.monotonic", lambda: clock[0])
    with Spool(tmp_path, 32 << 10) as sp:
        for i in range(100):
            sp.append(samples(i * 10, 10))
            clock[0] += 1.0
        logged = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert 2 <= len(logged) <= 3  # ~100 simulated seconds: at most one line a minute
        caplog.clear()
    logged = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(logged) <= 1


def test_consumer_inside_a_compacted_segment_restarts_at_its_beginning(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 64 << 10, consumers=("store",)) as sp:
        sp.append([*samples(0, 5), state(5), *samples(6, 5)])
        stale = sp.read("store", 3)
        sp.ack("store", stale)
        stale2 = sp.read("store", 2)  # read before the compaction, acknowledged after it
        i = 100
        while sp.dropped_samples == 0:
            sp.append(samples(i, 50))
            i += 50
        sp.ack("store", stale2)
        points = drain(sp)
    assert isinstance(points[0], StateChange) and points[0].ts_ms == 5  # replayed: harmless, idempotent
    assert ts(points) == sorted(ts(points))


def test_state_changes_alone_may_exceed_max_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.spool")
    with Spool(tmp_path, 16 << 10) as sp:
        for i in range(400):
            sp.append([state(i)])
        assert sp.bytes > 16 << 10
        assert sp.dropped_samples == 0
        assert ts(drain(sp)) == list(range(400))
    assert any("state changes and heartbeats only" in r.getMessage() for r in caplog.records)


def test_reopen_after_compaction_resets_an_offset_inside_it(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with Spool(path, 64 << 10) as sp:
        sp.append([*samples(0, 5), state(5), *samples(6, 5)])
        sp.ack("store", sp.read("store", 3))
    with Spool(path, 64 << 10) as sp:
        i = 100
        while sp.dropped_samples == 0:
            sp.append(samples(i, 50))
            i += 50
    with Spool(path, 64 << 10) as sp:
        points = drain(sp)
    assert isinstance(points[0], StateChange) and points[0].ts_ms == 5


# ---------------------------------------------------------------- full disk


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A real 1 MiB tmpfs when we may mount (root); skipped otherwise (the monkeypatch test covers it)."""
    mnt = Path(tempfile.mkdtemp(prefix="slawatch-tinyfs-"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        mnt.rmdir()
        need(False, f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def test_full_disk_raises_spool_error_and_keeps_earlier_data(tiny_fs: Path) -> None:
    path = tiny_fs / "spool"
    reason = "x" * 200
    sp = Spool(path, 1 << 30, segment_bytes=64 << 10)  # the bound is far away: the disk fills first
    ok = 0
    with pytest.raises(SpoolError, match="No space left on device"):
        for i in range(10_000):
            sp.append([sample(i * 10 + j, reason) for j in range(10)])
            ok += 1
    assert ok > 10
    with pytest.raises(SpoolError):  # still full: a clear error again, no crash
        sp.append([sample(10**9, reason)])
    got = drain(sp, ack=False, max_points=10**6)
    assert ts(got) == [i * 10 + j for i in range(ok) for j in range(10)]
    sp.close()
    with Spool(path, 1 << 30, segment_bytes=64 << 10) as sp2:  # reopen on the still-full disk
        assert sp2.corrupt_records == 0
        points = drain(sp2, max_points=1000)  # acks work on a full disk and free whole segments
        assert ts(points) == [i * 10 + j for i in range(ok) for j in range(10)]
        sp2.append([sample(10**9)])  # space is back: appending works again
        assert ts(drain(sp2)) == [10**9]


def test_full_disk_leaves_no_empty_segments_and_appends_again_once_drained(tiny_fs: Path) -> None:
    path = tiny_fs / "spool"
    reason = "x" * 200
    sp = Spool(path, 1 << 30)  # segments may grow past the disk: the one segment fills it
    ok = 0
    with pytest.raises(SpoolError, match="No space left on device"):
        for i in range(10_000):
            sp.append([sample(i * 10 + j, reason) for j in range(10)])
            ok += 1
    for k in range(5):  # every try fails cleanly and leaves no file behind (each would pin a block)
        with pytest.raises(SpoolError, match="No space left on device"):
            sp.append([sample(10**8 + k * 1000 + j, reason) for j in range(100)])
        assert [p.name for p in segments(path)] == ["00000000000000000001.seg"]
        assert not list(path.glob("*.tmp"))
    assert ts(drain(sp, max_points=1000)) == [i * 10 + j for i in range(ok) for j in range(10)]
    # Everything is acknowledged: the abandoned segment gives its space back. A batch larger than the
    # disk still fails, and leaves no segment behind that holds a header only.
    for k in range(20):
        with pytest.raises(SpoolError, match="No space left on device"):
            sp.append([sample(10**8 + k * 10000 + j, reason) for j in range(5000)])
        assert len(segments(path)) == 1
    for k in range(ok // 2):
        sp.append([sample(10**9 + k * 10 + j, reason) for j in range(10)])
    assert ts(drain(sp)) == [10**9 + k for k in range(ok // 2 * 10)]
    assert len([p for p in segments(path) if p.stat().st_size <= SEG_HEADER]) <= 1
    sp.close()
    with Spool(path, 1 << 30) as sp2:  # what the release did survives a reopen: nothing replayed, nothing lost
        assert sp2.corrupt_records == 0
        assert sp2.pending("store") == 0
        sp2.append([sample(2 * 10**9)])
        assert ts(drain(sp2)) == [2 * 10**9]


def test_a_batch_larger_than_the_free_space_leaves_no_empty_segments(tiny_fs: Path) -> None:
    path = tiny_fs / "spool"
    with Spool(path, 1 << 30) as sp:
        sp.append(samples(0, 10))
        for k in range(10):  # room for a segment header, not for the batch: no file per try
            with pytest.raises(SpoolError, match="No space left on device"):
                sp.append([sample(1000 + k * 10000 + j, "z" * 200) for j in range(5000)])
        assert len(segments(path)) <= 2
        assert not list(path.glob("*.tmp"))
        sp.append(samples(10, 10))  # a batch that fits still lands, after the earlier ones
        assert ts(drain(sp)) == list(range(20))


def test_a_failure_after_the_last_ack_still_gives_the_space_back(tiny_fs: Path) -> None:
    path = tiny_fs / "spool"
    with Spool(path, 1 << 30) as sp:
        i = 0
        while os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize > 16 << 10:
            sp.append([sample(i * 10 + j, "w" * 200) for j in range(10)])
            i += 1
        assert len(drain(sp)) == i * 10  # all acknowledged; then a write fails: no ack comes to release it
        with pytest.raises(SpoolError, match="No space left on device"):
            sp.append([sample(10**8 + j, "w" * 200) for j in range(1000)])
        sp.append([sample(10**9 + j, "w" * 200) for j in range(200)])  # more than was left free
        assert ts(drain(sp)) == [10**9 + j for j in range(200)]


def test_a_batch_read_before_a_segment_was_released_acks_harmlessly(tiny_fs: Path) -> None:
    path = tiny_fs / "spool"
    with Spool(path, 1 << 30, consumers=("store", "influx")) as sp:
        i = 0
        with pytest.raises(SpoolError):
            while True:
                sp.append([sample(i * 10 + j, "y" * 200) for j in range(10)])
                i += 1
        late = sp.read("influx", 10**6)
        sp.ack("store", sp.read("store", 10**6))
        sp.ack("influx", late)  # the segment is released now
        sp.ack("influx", late)  # a repeated or late ack moves nothing past the released segment
        sp.append(samples(10**9, 3))
        assert ts(drain(sp, "influx")) == ts(drain(sp, "store")) == [10**9, 10**9 + 1, 10**9 + 2]


def test_enospc_on_write_or_fsync_is_a_spool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Spool(tmp_path, 1 << 30)
    sp.append(samples(0, 3))

    def full(*_: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for name in ("pwrite", "fdatasync"):
        with monkeypatch.context() as m:
            m.setattr(f"agent.spool.os.{name}", full)
            with pytest.raises(SpoolError, match="No space left on device"):
                sp.append(samples(3, 3))
    sp.append(samples(3, 3))
    assert ts(drain(sp)) == [0, 1, 2, 3, 4, 5]
    sp.close()
    with Spool(tmp_path, 1 << 30) as sp2:
        assert sp2.corrupt_records == 0
        assert sp2.pending("store") == 0


# ---------------------------------------------------------------- threads and round trip


def test_concurrent_append_and_drain_keep_order(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 30, segment_bytes=8192) as sp:
        writers_done = threading.Event()

        def writer() -> None:
            for i in range(200):
                sp.append(samples(i * 10, 10))
            writers_done.set()

        got: list[Point] = []
        t = threading.Thread(target=writer)
        t.start()
        while not writers_done.is_set() or sp.pending("store"):
            batch = sp.read("store", 37)
            got.extend(batch.points)
            sp.ack("store", batch)
        t.join()
        assert ts(got) == list(range(2000))


text = st.text(max_size=40)
floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
refs = st.builds(ComponentRef, text, text, text, text)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
points = st.one_of(
    st.builds(Sample, refs, text, text, text, ints, st.sampled_from(list(Outcome)), text, floats),
    st.builds(StateChange, refs, text, ints, st.booleans(), text, st.booleans()),
    st.builds(Heartbeat, text, ints, st.floats(allow_nan=False)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(points, min_size=1, max_size=20), min_size=1, max_size=5),
       surrogate=st.sampled_from(["", "\ud800", "é€😀"]))
def test_points_round_trip_exactly(tmp_path: Path, batches: list[list[Point]], surrogate: str) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp_path))
    batches[0][0] = Heartbeat(surrogate, 0, 1.0)  # lone surrogates survive (ASCII JSON escapes them)
    with Spool(path, 1 << 30) as sp:
        for b in batches:
            sp.append(b)
    with Spool(path, 1 << 30) as sp:
        got = drain(sp, max_points=7)
    flat = [p for b in batches for p in b]
    # repr compares NaN to NaN and tells -0.0 from 0.0, which == would not
    assert repr(got) == repr(flat)
    assert [type(p) for p in got] == [type(p) for p in flat]


def test_nan_and_none_latency_round_trip(tmp_path: Path) -> None:
    nan = Sample(REF, "p", "sip", "a", 1, Outcome.TIMEOUT, "timeout after 5s", math.nan)
    none = Sample(REF, "p", "sip", "a", 2, Outcome.TIMEOUT, "timeout after 5s", None)
    with Spool(tmp_path, 1 << 30) as sp:
        sp.append([nan, none])
        a, b = sp.read("store").points
    assert isinstance(a, Sample) and a.latency_ms is not None and math.isnan(a.latency_ms)
    assert b == none
    assert a.outcome is Outcome.TIMEOUT


def test_torn_offset_write_falls_back_to_the_previous_ack(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 30) as sp:
        sp.append(samples(0, 10))
        sp.ack("store", sp.read("store", 3))
        sp.ack("store", sp.read("store", 3))  # the newer slot
    offset_file = tmp_path / "store.offset"
    data = bytearray(offset_file.read_bytes())
    data[0:10] = b"\x00" * 10  # seq 2 lives in slot 0: tear it
    offset_file.write_bytes(bytes(data))
    with Spool(tmp_path, 1 << 30) as sp:
        assert ts(drain(sp)) == list(range(3, 10))
