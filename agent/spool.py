"""The durable on-disk spool between the probes and the sinks: checksummed segment files, replayed in order.

Layout of the spool directory:

- ``00000000000000000001.seg`` ... — segment files, ids increasing. An 8-byte header (magic, version 1 or 2,
  flags; flag bit 0 = compacted) then records. A record is a 10-byte header ``<HII`` (magic 0x9cf5,
  payload length, CRC32 of the payload) and the payload: one point as a compact JSON array,
  ``[0, component, class, tier, customer, probe, kind, agent, ts_ms, outcome, reason, latency_ms]`` for a
  Sample, ``[1, component, class, tier, customer, agent, ts_ms, up, reason]`` for a StateChange,
  ``[2, agent, ts_ms, period_s]`` for a Heartbeat. JSON (stdlib, ASCII-only output) because it is stable
  across Python versions, readable with any tool, round-trips floats exactly (repr), None, NaN/±inf and any
  string including lone surrogates; measured ~4 µs/point to encode and ~7 µs/point to decode into the
  model's dataclasses (marshal was ~3x faster but its format is not guaranteed across Python versions).
  The record magic is not ASCII, so it never occurs inside a payload: after a bad record the reader
  resynchronises on the next magic whose length and CRC check out.
  Version 2 (version 1 segments, from earlier releases, are read as before) adds block records: the points
  of one append as a sink stores them (InfluxDB line protocol), made once at append for each consumer given
  an ``Encoding``, so that a replay hands the sink those bytes without decoding and encoding each point again.
  A block is written just before the point records it covers, in the same write: payload ``0x1f`` (a JSON
  payload starts with ``[``), ``<B`` name length, the encoding's ASCII name, then zlib (level 1) of ``<I``
  count, per point ``<II`` (its record's position relative to the block record's end, its item's length), and
  the items. Compressed across a batch, the line protocol adds ~16 bytes to a sample's ~100 (uncompressed it
  would be ~190). For an encoding whose consumer takes the items joined and gzip-compressed (``Encoding.gzip``:
  InfluxDB) the block is "joined" instead: after the name ``0x01`` (a zlib stream starts with ``0x78``), ``<IIII``
  count, the table's compressed length, CRC32 and length of the joined items, zlib of the ``<II`` table, then the
  joined items as a raw deflate stream — a gzip member of them is a header, that stream and a trailer, so a read
  of whole appends hands the consumer bytes to post without decompressing or compressing them (reads for such a
  consumer stop before an append that would not fit whole). Readers of the other layout only (earlier releases)
  find no zlib stream there and replay those points as points. Blocks are not points: they are neither counted
  nor read as such, and compaction drops them. Items are found by their point record's position, so a corrupt
  record never shifts them; a consumer whose encoding some point of a read lacks (written earlier, under another
  format name, or its block corrupt) gets that batch as points.
- ``<consumer>.offset`` — one 1 KiB file per consumer holding two checksummed slots (at bytes 0 and 512) with
  a sequence number, the segment id and the byte offset just past the last acknowledged point. An ack
  overwrites the older slot in place and fdatasyncs; at open the valid slot with the higher sequence wins, so a
  torn slot write falls back to the previous ack. In place rather than temporary file + rename because a rename
  needs a free block: on a full disk the consumer could then never acknowledge, and the spool never shrink.
- ``LOCK`` — an flock held while the spool is open, so two agents never share one spool; it holds the PID of
  the holder, which a second agent names in its error.

Guarantees:

- ``append`` writes one batch with one ``pwrite`` and one ``fdatasync``; when it returns the batch survives
  SIGKILL and power loss. On any OSError (ENOSPC on write or fsync) the segment is truncated back to its last
  good length, the next append starts a fresh segment, and ``SpoolError`` is raised; earlier records stay
  readable. A new segment is written with its first batch in it (temporary file, fsync, rename), so an append
  that does not fit leaves no file behind. The abandoned segment is cut back to its header once every consumer
  has passed it: on a full disk that is the space the next segment needs.
- At open every segment is scanned: a torn tail (crash mid-write) is truncated, a corrupt record in the
  middle (bad CRC, bad length, undecodable payload) is skipped and counted in ``corrupt_records``, never
  mis-decoded.
- ``read`` returns the next points after the consumer's last ack, in append order; reading again without
  ``ack`` returns the same points. Delivery is at-least-once: after a crash everything not acknowledged is
  read again; the stores' writes are idempotent on series+timestamp, so a replay doubles nothing.
- Size is bounded by ``max_bytes``: when an append would exceed it, the oldest segment that still holds
  samples is compacted — rewritten (temporary file, fsync, rename) with its state changes and heartbeats only;
  those are never dropped, even when that means staying above ``max_bytes``. Dropped samples are counted in
  ``dropped_samples`` and logged at most once a minute. A consumer whose offset lay inside a compacted segment
  restarts at that segment's beginning (it may see some state changes twice, harmless since replay is
  idempotent); an ``ack`` of a batch read before the compaction is mapped the same way. Segments are at most
  ``min(segment_bytes, max_bytes // 4)`` so one compaction never drops more than about a quarter of the spool.
- Segments every consumer has passed are deleted on ``ack``.

Thread safety: every public method takes one internal lock, so the daemon may call ``append``, ``read`` and
``ack`` from worker threads (``asyncio.to_thread``) concurrently; all methods are synchronous and block on
disk I/O, so never call them on the event loop. JSON decoding in ``read`` happens outside the lock.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import struct
import threading
import time
import zlib
from _json import make_encoder
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from slawatch import schema
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange
from slawatch.schema import Row, clean_text

log = logging.getLogger(__name__)

SEG_MAGIC = b"SLWSPL"
SEG_VERSION = 2
SEG_VERSIONS = (1, 2)  # readable; version 1 segments hold no blocks
SEG_HEADER = 8
FLAG_COMPACTED = 1
REC_MAGIC = 0x9CF5
_REC = struct.Struct("<HII")
REC_HEADER = _REC.size
_REC_MAGIC_BYTES = struct.pack("<H", REC_MAGIC)
MAX_RECORD = 16 << 20
DROP_LOG_INTERVAL_S = 60.0
_SLOT = struct.Struct("<4sQQQII")  # magic, sequence, segment, pos, flags, crc32 of the rest
_SLOT_MAGIC = b"SWO1"
_SLOT_STRIDE = 512
_CONSUMER_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_TAG_SAMPLE = 0
_BLOCK = 0x1F  # first byte of a block record's payload (a point's JSON starts with "[")
_BLOCK_BYTE = bytes([_BLOCK])
_BLOCK_COUNT = struct.Struct("<I")
_BLOCK_ENTRY = struct.Struct("<II")
BLOCK_ZLIB_LEVEL = 1  # line protocol of a batch shrinks ~6-8x even at level 1
_JOINED_LAYOUT = 0x01  # after a block's name: the joined layout (the other starts with its zlib header, 0x78)
_JOINED = struct.Struct("<IIII")  # count, compressed table's length, CRC32 and length of the joined items
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no time, unknown OS
_GZIP_TRAILER = struct.Struct("<II")  # CRC32 and length of the uncompressed data
_ENCODING_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# json.dumps(separators=(",", ":")) with ASCII output, made once: `JSONEncoder.encode` builds this C encoder again for
# every call. No circular check (a row is a flat list of scalars); the bytes are the same (a test compares them).
_json_encoder = make_encoder(None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ":", ",",
                             False, False, True)


def _encode_json(row: list[Any]) -> str:
    return "".join(_json_encoder(row, 0))


_OUTCOMES = {o.value: o for o in Outcome}
_Bytes = bytes  # `Spool.bytes` shadows the builtin inside the class


class SpoolError(Exception):
    """The spool could not do what was asked (disk full, I/O error, closed, locked); nothing was lost."""


class Offset(NamedTuple):
    """A position in the spool: segment id and byte offset inside that segment file."""

    segment: int
    pos: int


@dataclass(frozen=True, slots=True)
class Encoding:
    """How one kind of consumer wants its points: `encode` turns a batch into one bytes item per point, in order
    (pure and deterministic: it runs at append, in the caller's thread). `name` is stored with every part and
    must change whenever the bytes would (points spooled under another name reach that consumer as points)."""

    name: str
    encode: Callable[[Sequence[Point]], list[bytes]]
    gzip: bool = False
    """The consumer takes the items joined and gzip-compressed: a read of whole appends then hands it gzip members
    copied from the blocks (`Batch.gzip`), neither decompressed nor compressed again."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Points read for one consumer, as points, as its encoding's bytes (`encoded`, one item per point, when
    the spool holds them for every point read), for a `gzip` encoding as gzip members whose data is those items
    joined (`gzip`, when the read covers whole appends), or as stored rows (`rows`, when asked for); ``ack`` it once
    the sink has stored them."""

    points: tuple[Point, ...]
    end: Offset
    # Internal: records before `end` in its segment, and the compaction generation when read.
    end_index: int = field(default=0, compare=False, repr=False)
    generation: int = field(default=0, compare=False, repr=False)
    encoded: tuple[bytes, ...] = field(default=(), repr=False)
    gzip: tuple[bytes, ...] = field(default=(), repr=False)
    count: int = field(default=0, compare=False, repr=False)  # points the gzip members (or `rows`) hold
    rows: Mapping[str, list[Row]] | None = field(default=None, repr=False)
    """With `read(rows=True)`: the points as stored rows per measurement (`schema.point_row`'s), unreadable ones out."""

    def __len__(self) -> int:
        return self.count or len(self.encoded) or len(self.points)


# ---------------------------------------------------------------- encoding


def encode_point(point: Point) -> bytes:
    """One point as a record payload (a compact ASCII JSON array)."""
    if isinstance(point, Sample):
        r = point.ref
        row: list[Any] = [0, r.component, r.klass, r.tier, r.customer, point.probe, point.kind, point.agent,
                          point.ts_ms, point.outcome.value, point.reason, point.latency_ms]
    elif isinstance(point, StateChange):
        r = point.ref
        row = [1, r.component, r.klass, r.tier, r.customer, point.agent, point.ts_ms, point.up, point.reason]
        # A tenth (degraded) and an eleventh (released) element only when needed: spools written before them
        # stay readable, and alike.
        if point.degraded or point.released:
            row.append(point.degraded)
        if point.released:
            row.append(True)
    elif isinstance(point, Heartbeat):
        row = [2, point.agent, point.ts_ms, point.period_s]
    else:
        raise TypeError(f"not a spool point: {type(point).__name__}")
    return _encode_json(row).encode("ascii")


def encode_record(payload: bytes) -> bytes:
    return _REC.pack(REC_MAGIC, len(payload), zlib.crc32(payload)) + payload


def encode_block(name: str, items: Sequence[bytes], rel: Sequence[int], *, joined: bool = False) -> bytes:
    """A block payload: `items[i]` belongs to the point record `rel[i]` bytes after the block record's end. With
    `joined`, the items are kept as one raw deflate stream with its CRC32, so that a gzip member of them is a copy."""
    raw = name.encode("ascii")
    pack = _BLOCK_ENTRY.pack
    entries = b"".join([pack(r, len(i)) for r, i in zip(rel, items, strict=True)])
    head = bytes([_BLOCK, len(raw)]) + raw
    if not joined:
        return head + zlib.compress(_BLOCK_COUNT.pack(len(items)) + entries + b"".join(items), BLOCK_ZLIB_LEVEL)
    body = b"".join(items)
    table = zlib.compress(entries, BLOCK_ZLIB_LEVEL)
    deflate = zlib.compressobj(BLOCK_ZLIB_LEVEL, zlib.DEFLATED, -15)
    stream = deflate.compress(body) + deflate.flush()
    return (head + bytes([_JOINED_LAYOUT]) + _JOINED.pack(len(items), len(table), zlib.crc32(body), len(body))
            + table + stream)


def block_name(payload: bytes | memoryview) -> str | None:
    """The encoding a block payload holds, or None when the payload is a point."""
    if len(payload) < 2 or payload[0] != _BLOCK:
        return None
    return bytes(payload[2:2 + payload[1]]).decode("ascii", "replace")


def _joined(payload: bytes | memoryview) -> tuple[int, int, int, int, int] | None:
    """A joined block's count, table length, CRC32 and length of its items, and where its table starts; None for
    the other layout."""
    at = 2 + payload[1]
    if len(payload) <= at or payload[at] != _JOINED_LAYOUT or len(payload) < at + 1 + _JOINED.size:
        return None
    count, table, crc, length = _JOINED.unpack_from(payload, at + 1)
    return count, table, crc, length, at + 1 + _JOINED.size


def block_count(payload: bytes | memoryview) -> int | None:
    """How many points a joined block covers (None for the other layout, which says so only compressed)."""
    head = _joined(payload)
    return None if head is None else head[0]


def decode_block(payload: bytes) -> dict[int, bytes] | None:
    """A block's items by their point record's position relative to the block's end; None when malformed."""
    try:
        head = _joined(payload)
        if head is None:
            raw = zlib.decompress(memoryview(payload)[2 + payload[1]:])
            (count,) = _BLOCK_COUNT.unpack_from(raw, 0)
            at = _BLOCK_COUNT.size + count * _BLOCK_ENTRY.size
            entries = raw[_BLOCK_COUNT.size:at]
        else:
            count, table, _, length, start = head
            entries = zlib.decompress(memoryview(payload)[start:start + table])
            raw = zlib.decompress(memoryview(payload)[start + table:], -15)
            if len(raw) != length:
                return None
            at = 0
        if len(entries) != count * _BLOCK_ENTRY.size or at > len(raw):
            return None
        out: dict[int, bytes] = {}
        for rel, n in _BLOCK_ENTRY.iter_unpack(entries):
            out[rel] = raw[at:at + n]
            at += n
    except (zlib.error, struct.error, IndexError):
        return None
    return out if at == len(raw) else None


def gzip_member(payload: bytes) -> tuple[list[int], bytes] | None:
    """A joined block's point positions (relative to its end) and its items joined as one gzip member, copied
    from the block without decompressing the items; None when malformed or of the other layout."""
    head = _joined(payload)
    if head is None:
        return None
    count, table, crc, length, start = head
    try:
        entries = zlib.decompress(memoryview(payload)[start:start + table])
    except zlib.error:
        return None
    if len(entries) != count * _BLOCK_ENTRY.size:
        return None
    rels = [rel for rel, _ in _BLOCK_ENTRY.iter_unpack(entries)]
    return rels, _GZIP_HEADER + payload[start + table:] + _GZIP_TRAILER.pack(crc, length)


def _decode_row(row: Any, refs: dict[tuple[str, str, str, str], ComponentRef]) -> Point | None:
    """A decoded JSON row as a point, or None when its shape is wrong (never guess)."""
    if not isinstance(row, list) or not row:
        return None
    tag = row[0]
    try:
        if tag == 0 and len(row) == 12:
            key = (row[1], row[2], row[3], row[4])
            ref = refs.get(key)
            if ref is None:
                ref = refs[key] = ComponentRef(*key)
            return Sample(ref, row[5], row[6], row[7], row[8], _OUTCOMES[row[9]], row[10], row[11])
        if tag == 1 and 9 <= len(row) <= 11 and isinstance(row[7], bool):
            key = (row[1], row[2], row[3], row[4])
            ref = refs.get(key)
            if ref is None:
                ref = refs[key] = ComponentRef(*key)
            return StateChange(ref, row[5], row[6], row[7], row[8], len(row) >= 10 and row[9] is True,
                               len(row) == 11 and row[10] is True)
        if tag == 2 and len(row) == 4:
            return Heartbeat(row[1], row[2], row[3])
    except (KeyError, TypeError):
        return None
    return None


def _parse(payloads: Sequence[bytes]) -> list[Any]:
    """Each payload's JSON (one parse for all of them), None for one that does not parse."""
    try:
        rows: list[Any] = json.loads(b"[" + b",".join(payloads) + b"]")
        if len(rows) != len(payloads):
            raise ValueError("payload split across rows")
    except ValueError:
        rows = []
        for p in payloads:
            try:
                rows.append(json.loads(p))
            except ValueError:
                rows.append(None)
    return rows


def decode_payloads(payloads: Sequence[bytes]) -> tuple[list[Point], int]:
    """Payloads to points; returns the points and how many payloads could not be decoded."""
    refs: dict[tuple[str, str, str, str], ComponentRef] = {}
    out: list[Point] = []
    bad = 0
    rows = _parse(payloads)
    append = out.append
    for row in rows:
        # Fast path for the common case, a well-formed sample; anything else goes through the checked path.
        if type(row) is list and len(row) == 12 and row[0] == 0:
            key = (row[1], row[2], row[3], row[4])
            ref = refs.get(key)
            outcome = _OUTCOMES.get(row[9]) if type(row[9]) is str else None
            if ref is not None and outcome is not None:
                append(Sample(ref, row[5], row[6], row[7], row[8], outcome, row[10], row[11]))
                continue
        point = _decode_row(row, refs)
        if point is None:
            bad += 1
        else:
            append(point)
    return out, bad


_ROW_MEASUREMENTS = (schema.PROBE, schema.STATE, schema.HEARTBEAT)
# A sample's outcome as its row holds it: up (0/1) and the outcome's text.
_OUTCOME_ROW = {o.value: (int(o.is_up), clean_text(str(o))) for o in Outcome}


def payload_rows(payloads: Sequence[bytes]) -> tuple[dict[str, list[Row]], int]:
    """Payloads straight to the rows a store inserts, per measurement name, in payload order: the very rows
    `schema.point_row` makes of `decode_payloads`' points, without making the points. Returns them and how many
    payloads could not be decoded (left out)."""
    per_table: dict[str, list[Row]] = {m.name: [] for m in _ROW_MEASUREMENTS}
    samples = per_table[schema.PROBE.name].append
    refs: dict[tuple[str, str, str, str], ComponentRef] = {}
    c, finite, outcomes = clean_text, math.isfinite, _OUTCOME_ROW
    bad = 0
    for row in _parse(payloads):
        # Fast path for the common case, a well-formed sample (`_sample_row` written out); anything else, or a
        # sample whose values are not of their types, goes through a point.
        if type(row) is list and len(row) == 12 and row[0] == 0 and type(row[9]) is str:
            lat, out = row[11], outcomes.get(row[9])
            if out is not None and (lat is None or type(lat) is float or type(lat) is int):
                try:
                    samples((c(row[1]), row[8], c(row[7]), c(row[5]), c(row[2]), c(row[3]), c(row[4]), c(row[6]),
                             out[0], float(lat) if lat is not None and finite(lat) else None, out[1], c(row[10])))
                    continue
                except (AttributeError, TypeError, OverflowError):
                    pass
        point = _decode_row(row, refs)
        try:
            if point is None:
                raise TypeError("not a point")
            measurement, values = schema.point_row(point)
        except (AttributeError, TypeError, ValueError, OverflowError):
            bad += 1
            continue
        per_table[measurement.name].append(values)
    return per_table, bad


def _items(found: Sequence[tuple[Sequence[int], Sequence[tuple[int, bytes]]]], name: str) -> list[bytes] | None:
    """Each point's item from the blocks of `name` read with it, or None when one has none."""
    out: list[bytes] = []
    for where, blocks in found:
        by_pos: dict[int, bytes] = {}
        for end, payload in blocks:
            if block_name(payload) != name:
                continue
            items = decode_block(payload)
            if items is None:
                return None
            for rel, item in items.items():
                by_pos[end + rel] = item
        for pos in where:
            got = by_pos.get(pos)
            if got is None:
                return None
            out.append(got)
    return out


def _members(found: Sequence[tuple[Sequence[int], Sequence[tuple[int, bytes]]]], name: str) -> list[bytes] | None:
    """The gzip members of the blocks of `name` read with the points, in order, when those blocks cover exactly the
    points read (whole appends, none corrupt); else None."""
    out: list[bytes] = []
    for where, blocks in found:
        wanted, covered = set(where), 0
        for end, payload in blocks:
            if block_name(payload) != name:
                continue
            got = gzip_member(payload)
            if got is None:
                return None
            rels, member = got
            inside = sum(1 for rel in rels if end + rel in wanted)
            if not inside:
                continue  # a block before the read (found for a read from inside it)
            if inside != len(rels):
                return None
            covered += inside
            out.append(member)
        if covered != len(wanted):
            return None
    return out


def _valid_at(buf: bytes | memoryview, pos: int, end: int) -> int:
    """The end of a valid record starting at `pos` (within `end`), or -1."""
    if pos + REC_HEADER > end:
        return -1
    magic, length, crc = _REC.unpack_from(buf, pos)
    stop: int = pos + REC_HEADER + length
    if magic != REC_MAGIC or length > MAX_RECORD or stop > end:
        return -1
    if zlib.crc32(buf[pos + REC_HEADER:stop]) != crc:
        return -1
    return stop


def _resync(buf: bytes, pos: int, end: int) -> int:
    """The start of the next valid record after `pos`, or -1 when none remains."""
    while True:
        pos = buf.find(_REC_MAGIC_BYTES, pos + 1, end)
        if pos < 0:
            return -1
        if _valid_at(buf, pos, end) >= 0:
            return pos


# ---------------------------------------------------------------- segments


@dataclass(slots=True)
class _Segment:
    id: int
    path: Path
    size: int = SEG_HEADER
    count: int = 0
    compacted: bool = False
    compacted_gen: int = 0
    # Known corrupt ranges found while scanning: start -> start of the next valid record.
    skips: dict[int, int] = field(default_factory=dict)
    # Block records per encoding name: (position, end), in file order.
    blocks: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


@dataclass(slots=True)
class _Consumer:
    name: str
    segment: int
    pos: int
    index: int  # valid records before `pos` in its segment


def _seg_name(seg_id: int) -> str:
    return f"{seg_id:020d}.seg"


def _seg_header(compacted: bool) -> bytes:
    return SEG_MAGIC + bytes([SEG_VERSION, FLAG_COMPACTED if compacted else 0])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        pos += n


def _write_file_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` durably: temporary file, fsync, rename, directory fsync."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_holder(fd: int) -> None:
    """Put our PID in the held LOCK file, for the message another agent gets; advisory, so never fatal."""
    pid = f"{os.getpid()}\n".encode()
    try:
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # shrinking needs no free block: at least name no stale holder


def _lock_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


class Spool:
    """An append-only, checksummed, bounded on-disk queue of points with durable per-consumer offsets."""

    def __init__(self, path: Path, max_bytes: int, *, consumers: Sequence[str] = ("store",),
                 segment_bytes: int = 8 << 20, encodings: Mapping[str, Encoding] | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if not consumers or len(set(consumers)) != len(consumers):
            raise ValueError("consumers must be distinct and at least one")
        for name in consumers:
            if not _CONSUMER_RE.match(name):
                raise ValueError(f"bad consumer name {name!r}: use letters, digits and - _ . only")
        # consumer -> its encoding; one part per distinct encoding name, shared by the consumers that use it
        self._encoding_of: dict[str, Encoding] = dict(encodings or {})
        self._encodings: dict[str, Encoding] = {}
        for consumer, enc in self._encoding_of.items():
            if consumer not in consumers:
                raise ValueError(f"encoding for unknown spool consumer {consumer!r}")
            if not _ENCODING_RE.match(enc.name):
                raise ValueError(f"bad encoding name {enc.name!r}: 1 to 64 letters, digits and - _ . only")
            self._encodings.setdefault(enc.name, enc)
        self._encode_failed_logged = -DROP_LOG_INTERVAL_S
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = max(4096, min(int(segment_bytes), self.max_bytes // 4))
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._consumers: dict[str, _Consumer] = {}
        self._offset_fds: dict[str, int] = {}
        self._offset_seq: dict[str, int] = {}
        self._fd = -1  # write fd of the active (last) segment
        self._need_roll = False
        self._generation = 0
        self._dropped = 0
        self._dropped_unlogged = 0
        self._last_drop_log = -DROP_LOG_INTERVAL_S
        self._last_full_log = -DROP_LOG_INTERVAL_S
        self._corrupt = 0
        self._closed = False
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _lock_holder(self._lock_fd)
            os.close(self._lock_fd)
            by = f"process {holder}" if holder else "another process"
            raise SpoolError(f"spool {self.path} is in use by {by}") from exc
        _write_holder(self._lock_fd)
        try:
            self._recover(consumers)
        except OSError as exc:
            self._release()
            raise SpoolError(f"cannot recover spool {self.path}: {exc}") from exc
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------ recovery

    def _recover(self, consumer_names: Sequence[str]) -> None:
        for tmp in self.path.glob("*.tmp"):
            tmp.unlink()
        saved: dict[str, tuple[int, int, bool]] = {}
        for name in consumer_names:
            saved[name] = self._load_offset(name)
        ids = sorted(int(p.name[:-4]) for p in self.path.glob("*.seg") if p.name[:-4].isdigit())
        wanted: dict[int, set[int]] = {}
        for seg_id, pos, _ in saved.values():
            wanted.setdefault(seg_id, set()).add(pos)
        boundaries: dict[int, dict[int, int]] = {}
        for seg_id in ids:
            seg, found = self._scan_segment(seg_id, wanted.get(seg_id, set()))
            if seg is not None:
                self._segments.append(seg)
                boundaries[seg_id] = found
        if not self._segments:
            self._segments.append(self._create_segment(1))
        else:
            self._need_roll = True  # never append after a segment we did not write ourselves this run
        for name in consumer_names:
            seg_id, pos, compacted_then = saved[name]
            seg = self._seg_at_or_after(seg_id)
            if seg is None:
                seg = self._segments[-1]
                consumer = _Consumer(name, seg.id, seg.size, seg.count)
            elif seg.id != seg_id or (seg.compacted and not compacted_then) or pos not in boundaries[seg.id]:
                if seg.id == seg_id and pos != SEG_HEADER:
                    log.warning("spool consumer %s: offset %d:%d is no longer valid; replaying segment %d "
                                "from its start", name, seg_id, pos, seg.id)
                consumer = _Consumer(name, seg.id, SEG_HEADER, 0)
            else:
                consumer = _Consumer(name, seg.id, pos, boundaries[seg.id][pos])
            self._consumers[name] = consumer
        self._delete_passed()

    def _load_offset(self, name: str) -> tuple[int, int, bool]:
        """Open (creating if needed) the consumer's offset file; return its newest valid slot."""
        path = self.path / f"{name}.offset"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._offset_fds[name] = fd
        data = os.pread(fd, 2 * _SLOT_STRIDE, 0)
        best: tuple[int, int, int, bool] | None = None
        for at in (0, _SLOT_STRIDE):
            raw = data[at:at + _SLOT.size]
            if len(raw) < _SLOT.size:
                continue
            magic, seq, seg_id, pos, flags, crc = _SLOT.unpack(raw)
            if magic != _SLOT_MAGIC or zlib.crc32(raw[:-4]) != crc:
                continue
            if best is None or seq > best[0]:
                best = (seq, seg_id, pos, bool(flags & FLAG_COMPACTED))
        if len(data) < 2 * _SLOT_STRIDE:  # new file: reserve both slots now, while there is room
            _write_all(fd, bytes(2 * _SLOT_STRIDE - len(data)), len(data))
            os.fsync(fd)
            _fsync_dir(self.path)
        if best is None:
            if any(data):
                log.warning("spool consumer %s: unreadable offset file; replaying from the oldest point", name)
            self._offset_seq[name] = 0
            return 0, SEG_HEADER, False
        self._offset_seq[name] = best[0]
        return best[1], best[2], best[3]

    def _scan_segment(self, seg_id: int, wanted: set[int]) -> tuple[_Segment | None, dict[int, int]]:
        """Validate one segment: truncate a torn tail, note corrupt records; map wanted offsets to indexes."""
        path = self.path / _seg_name(seg_id)
        buf = path.read_bytes()
        if len(buf) < SEG_HEADER or buf[:6] != SEG_MAGIC or buf[6] not in SEG_VERSIONS:
            if len(buf) == 0:
                path.unlink()
                return None, {}
            log.error("spool segment %s has a bad header; moved aside as .corrupt", path.name)
            path.rename(path.with_name(path.name + ".corrupt"))
            self._corrupt += 1
            return None, {}
        seg = _Segment(seg_id, path, compacted=bool(buf[7] & FLAG_COMPACTED))
        found: dict[int, int] = {}
        pos, end, count = SEG_HEADER, len(buf), 0
        while pos < end:
            stop = _valid_at(buf, pos, end)
            if stop < 0:
                nxt = _resync(buf, pos, end)
                if nxt < 0:
                    log.warning("spool segment %s: torn tail of %d bytes at %d truncated", path.name, end - pos, pos)
                    with open(path, "r+b") as f:
                        f.truncate(pos)
                        os.fsync(f.fileno())
                    end = pos
                    break
                log.error("spool segment %s: corrupt record at %d skipped (%d bytes)", path.name, pos, nxt - pos)
                self._corrupt += 1
                seg.skips[pos] = nxt
                pos = nxt
                continue
            name = block_name(memoryview(buf)[pos + REC_HEADER:stop])
            if name is not None:
                seg.blocks.setdefault(name, []).append((pos, stop))
                if pos in wanted:  # an ack just before an append's blocks
                    found[pos] = count
                pos = stop
                continue
            if pos in wanted:
                found[pos] = count
            count += 1
            pos = stop
        if end in wanted:
            found[end] = count
        seg.size, seg.count = end, count
        return seg, found

    # ------------------------------------------------------------ public API

    @property
    def bytes(self) -> int:
        """Bytes on disk in all segments."""
        with self._lock:
            return sum(s.size for s in self._segments)

    @property
    def dropped_samples(self) -> int:
        """Samples dropped by overflow compaction since open (`slawatch_samples_dropped_total`)."""
        return self._dropped

    @property
    def corrupt_records(self) -> int:
        """Corrupt records skipped since open (bad CRC, bad length, undecodable)."""
        return self._corrupt

    def pending(self, consumer: str) -> int:
        """Points this consumer has not acknowledged (exact but for records found corrupt since open)."""
        with self._lock:
            c = self._consumer(consumer)
            total = 0
            for seg in self._segments:
                if seg.id == c.segment:
                    total += max(0, seg.count - c.index)
                elif seg.id > c.segment:
                    total += seg.count
            return total

    def append(self, points: Sequence[Point]) -> None:
        """Append one batch durably (one write, one fdatasync); raises SpoolError, never loses earlier data."""
        if not points:
            return
        blocks, data = self._records(points)
        with self._lock:
            self._check_open()
            self._log_drops()
            self._make_room(len(data))
            if self._need_roll or (self._active.size > SEG_HEADER
                                   and self._active.size + len(data) > self.segment_bytes):
                self._release_abandoned()  # consumed before the write failed: no ack would release it
                try:
                    self._roll(data, len(points))  # the new segment appears with the batch in it, or not at all
                except OSError as exc:
                    raise SpoolError(f"spool {self.path}: cannot start a new segment with {len(points)} points: "
                                     f"{os.strerror(exc.errno) if exc.errno else exc}") from exc
                self._note_blocks(self._active, SEG_HEADER, blocks)
                return
            seg = self._active
            try:
                _write_all(self._fd, data, seg.size)
                os.fdatasync(self._fd)
            except OSError as exc:
                self._abandon_active(seg.size)
                raise SpoolError(f"spool {self.path}: append of {len(points)} points failed: "
                                 f"{os.strerror(exc.errno) if exc.errno else exc}") from exc
            self._note_blocks(seg, seg.size, blocks)
            seg.size += len(data)
            seg.count += len(points)

    def _records(self, points: Sequence[Point]) -> tuple[list[tuple[str, int]], _Bytes]:
        """The batch as bytes to write: a block per encoding, then the points' records (outside the lock); and
        each block's name and record length."""
        records = [encode_record(encode_point(p)) for p in points]
        blocks: list[tuple[str, _Bytes]] = []
        if self._encodings:
            rel, at = [], 0
            for r in records:
                rel.append(at)
                at += len(r)
            after = 0  # bytes of the blocks written after this one: positions are relative to a block's end
            for name, enc in reversed(self._encodings.items()):
                try:
                    items = enc.encode(points)
                    if len(items) != len(points):
                        raise ValueError(f"{len(items)} items for {len(points)} points")
                except Exception:  # a sink's bug: spool the points anyway, they replay through its write()
                    now = time.monotonic()
                    if now - self._encode_failed_logged >= DROP_LOG_INTERVAL_S:
                        self._encode_failed_logged = now
                        log.exception("spool: encoding %s failed; these points are spooled without it", name)
                    continue
                block = encode_record(encode_block(name, items, [after + r for r in rel] if after else rel,
                                                   joined=enc.gzip))
                blocks.insert(0, (name, block))
                after += len(block)
        return [(name, len(b)) for name, b in blocks], b"".join([b for _, b in blocks] + records)

    @staticmethod
    def _note_blocks(seg: _Segment, at: int, blocks: Sequence[tuple[str, int]]) -> None:
        """Remember the blocks just written at `at` in `seg`."""
        for name, length in blocks:
            seg.blocks.setdefault(name, []).append((at, at + length))
            at += length

    def read(self, consumer: str, max_points: int = 5000, *, after: Batch | None = None,
             rows: bool = False) -> Batch:
        """The next unacknowledged points for `consumer`, in append order (the same again until `ack`).

        For a consumer with an encoding, the batch holds its bytes (`encoded`) when a block holds them for every
        point read, else points (format 1 segments, compacted ones, points spooled while the encoding failed).
        With `rows` (a consumer without an encoding), it holds them as the rows a store inserts (`Batch.rows`),
        made straight from the points' records.

        With `after` (a batch read for `consumer` and not acknowledged yet), the points that follow it, so the next
        batch can be sent while that one is; empty when a compaction since made its position meaningless (read
        again once it is acknowledged). Acknowledge such batches in the order they were read.
        """
        if max_points <= 0:
            raise ValueError("max_points must be positive")
        with self._lock:
            self._check_open()
            c = self._consumer(consumer)
            generation = self._generation
            if after is not None and (after.end.segment, after.end.pos) > (c.segment, c.pos):
                if after.generation != generation:
                    return Batch((), after.end, after.end_index, after.generation)
                c = _Consumer(consumer, after.end.segment, after.end.pos, after.end_index)
            enc = None if rows else self._encoding_of.get(consumer)
            payloads: list[_Bytes] = []
            # With an encoding, per segment read: the points' positions and the blocks that may hold them.
            found: list[tuple[list[int], list[tuple[int, _Bytes]]]] = []
            seg_id, pos, index = c.segment, c.pos, c.index
            i = self._seg_index(seg_id)
            while i < len(self._segments) and len(payloads) < max_points:
                seg = self._segments[i]
                if seg.id != seg_id:
                    seg_id, pos, index = seg.id, SEG_HEADER, 0
                if pos < seg.size:
                    try:
                        if enc is None:
                            pos, got = self._read_segment(seg, pos, max_points - len(payloads), payloads)
                        else:
                            where: list[int] = []
                            blocks = self._block_before(seg, enc.name, pos)
                            pos, got = self._read_segment(seg, pos, max_points - len(payloads), payloads, where,
                                                          blocks, enc.name if enc.gzip else None)
                            found.append((where, blocks))
                    except OSError as exc:
                        raise SpoolError(f"spool {self.path}: read of segment {seg.id} failed: {exc}") from exc
                    index += got
                if pos < seg.size:
                    break
                i += 1
        if enc is not None and enc.gzip and payloads:
            members = _members(found, enc.name)
            if members is not None:
                return Batch((), Offset(seg_id, pos), index, generation, gzip=tuple(members), count=len(payloads))
        if enc is not None and payloads:
            encoded = _items(found, enc.name)
            if encoded is not None:
                return Batch((), Offset(seg_id, pos), index, generation, tuple(encoded))
        if rows:
            per_table, bad = payload_rows(payloads)
            if bad:
                log.error("spool: %d records with a valid CRC could not be decoded; skipped", bad)
                with self._lock:
                    self._corrupt += bad
            # `count` holds the unreadable ones too: the batch is acknowledged past them, never read again
            return Batch((), Offset(seg_id, pos), index, generation, count=len(payloads), rows=per_table)
        points, bad = decode_payloads(payloads)
        if bad:
            log.error("spool: %d records with a valid CRC could not be decoded; skipped", bad)
            with self._lock:
                self._corrupt += bad
        return Batch(tuple(points), Offset(seg_id, pos), index, generation)

    def ack(self, consumer: str, batch: Batch) -> None:
        """Record durably that `consumer` has stored everything up to `batch.end`; delete passed segments."""
        with self._lock:
            self._check_open()
            c = self._consumer(consumer)
            end, index = batch.end, batch.end_index
            seg = self._seg_at_or_after(end.segment)
            if seg is None:
                return
            if seg.id != end.segment:
                end, index = Offset(seg.id, SEG_HEADER), 0
            elif seg.compacted_gen > batch.generation:
                end, index = Offset(seg.id, SEG_HEADER), 0  # read before compaction: replay the segment
            if (end.segment, end.pos) <= (c.segment, c.pos):
                return
            if end.pos >= seg.size and seg is not self._segments[-1]:
                nxt = self._segments[self._seg_index(seg.id) + 1]
                end, index = Offset(nxt.id, SEG_HEADER), 0
                seg = nxt
            try:
                self._save_offset(consumer, end, seg.compacted)
            except OSError as exc:
                raise SpoolError(f"spool {self.path}: cannot save offset of {consumer}: {exc}") from exc
            c.segment, c.pos, c.index = end.segment, end.pos, index
            self._delete_passed()
            self._release_abandoned()

    def close(self) -> None:
        """Close files and release the lock; further calls raise SpoolError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._flush_drop_log()
            self._release()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals (called with the lock held)

    @property
    def _active(self) -> _Segment:
        return self._segments[-1]

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.path} is closed")

    def _consumer(self, name: str) -> _Consumer:
        try:
            return self._consumers[name]
        except KeyError:
            raise ValueError(f"unknown spool consumer {name!r} (known: {', '.join(self._consumers)})") from None

    def _seg_index(self, seg_id: int) -> int:
        for i, seg in enumerate(self._segments):
            if seg.id >= seg_id:
                return i
        return len(self._segments)

    def _seg_at_or_after(self, seg_id: int) -> _Segment | None:
        i = self._seg_index(seg_id)
        return self._segments[i] if i < len(self._segments) else None

    def _release(self) -> None:
        for fd in self._offset_fds.values():
            os.close(fd)
        self._offset_fds.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        os.close(self._lock_fd)

    def _create_segment(self, seg_id: int, compacted: bool = False, data: _Bytes = b"", count: int = 0) -> _Segment:
        """A new active segment holding its header and `data`, or an OSError and no file at all.

        Written as a temporary file, fsynced, then renamed: a full disk never leaves a segment behind that
        holds a header only (on a small disk each would pin a block, and the next try would make another).
        """
        path = self.path / _seg_name(seg_id)
        tmp = path.with_name(path.name + ".tmp")
        content = _seg_header(compacted) + data
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, content, 0)
            os.fdatasync(fd)  # a new file's size is data for fdatasync; the rename is made durable below
            os.replace(tmp, path)
            try:
                _fsync_dir(self.path)
            except OSError:
                path.unlink(missing_ok=True)
                raise
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        return _Segment(seg_id, path, size=len(content), count=count, compacted=compacted)

    def _roll(self, data: _Bytes = b"", count: int = 0) -> None:
        seg = self._create_segment(self._active.id + 1, data=data, count=count)
        self._segments.append(seg)
        self._need_roll = False

    def _abandon_active(self, good_size: int) -> None:
        """After a failed write or fsync: cut the segment back to its good length; continue in a new segment."""
        with contextlib.suppress(OSError):  # if this fails too, the scan at open truncates the rest
            os.ftruncate(self._fd, good_size)
        os.close(self._fd)
        self._fd = -1
        self._need_roll = True

    def _read_segment(self, seg: _Segment, pos: int, want: int, out: list[_Bytes],
                      where: list[int] | None = None,
                      blocks: list[tuple[int, _Bytes]] | None = None, whole: str | None = None) -> tuple[int, int]:
        """Append up to `want` point payloads from `seg` starting at `pos`; return the new position and the count.

        Block records are passed over; with `where` and `blocks`, each point's position and each block (its end,
        its payload) are collected too. With `whole` (an encoding name), the read stops before a joined block of
        that name whose points would not all fit (unless nothing was read yet), so reads cover whole appends.
        """
        size, got, skips = seg.size, 0, seg.skips
        chunk = max(64 << 10, min(want * 256, 8 << 20))
        with open(seg.path, "rb", buffering=0) as f:
            while pos < size and got < want:
                f.seek(pos)
                buf = f.read(min(chunk, size - pos))
                bpos, blen = 0, len(buf)
                while bpos < blen and got < want:
                    if skips and (pos + bpos) in skips:
                        bpos = skips[pos + bpos] - pos
                        continue
                    if bpos + REC_HEADER > blen:
                        if pos + bpos + REC_HEADER > size:
                            bpos = self._skip_new_corruption(seg, f, pos + bpos) - pos
                            continue
                        break
                    magic, length, crc = _REC.unpack_from(buf, bpos)
                    stop = bpos + REC_HEADER + length
                    if magic != REC_MAGIC or length > MAX_RECORD:
                        bpos = self._skip_new_corruption(seg, f, pos + bpos) - pos
                        continue
                    if stop > blen:
                        if pos + stop > size:
                            bpos = self._skip_new_corruption(seg, f, pos + bpos) - pos
                            continue
                        chunk = max(chunk, stop + REC_HEADER)
                        break
                    payload = buf[bpos + REC_HEADER:stop]
                    if zlib.crc32(payload) != crc:
                        bpos = self._skip_new_corruption(seg, f, pos + bpos) - pos
                        continue
                    if payload[:1] == _BLOCK_BYTE:
                        if whole is not None and out and block_name(payload) == whole:
                            n = block_count(payload)
                            if n is not None and got + n > want:
                                want = got  # stop here: its append goes whole into the next read
                                break
                        if blocks is not None:
                            blocks.append((pos + stop, payload))
                        bpos = stop
                        continue
                    out.append(payload)
                    if where is not None:
                        where.append(pos + bpos)
                    got += 1
                    bpos = stop
                pos += bpos
        return min(pos, size), got

    def _block_before(self, seg: _Segment, name: str, pos: int) -> list[tuple[int, _Bytes]]:
        """The last block of `name` before `pos` in `seg` (it may hold the points read from there), checked."""
        known = seg.blocks.get(name)
        if not known:
            return []
        k = bisect.bisect_left(known, (pos, 0)) - 1
        if k < 0:
            return []
        start, end = known[k]
        with open(seg.path, "rb", buffering=0) as f:
            f.seek(start)
            buf = f.read(end - start)
        if _valid_at(buf, 0, len(buf)) != end - start:
            return []  # gone bad since: its points go as points
        return [(end, buf[REC_HEADER:])]

    def _skip_new_corruption(self, seg: _Segment, f: Any, at: int) -> int:
        """A record that went bad after open: count it once, remember the skip, return where to go on."""
        f.seek(0)
        buf: bytes = f.read(seg.size)
        nxt = _resync(buf, at, seg.size)
        if nxt < 0:
            nxt = seg.size
        log.error("spool segment %s: corrupt record at %d skipped (%d bytes)", seg.path.name, at, nxt - at)
        seg.skips[at] = nxt
        seg.count = max(0, seg.count - 1)
        self._corrupt += 1
        return nxt

    def _save_offset(self, name: str, end: Offset, compacted: bool) -> None:
        seq = self._offset_seq[name] + 1
        raw = _SLOT.pack(_SLOT_MAGIC, seq, end.segment, end.pos, FLAG_COMPACTED if compacted else 0, 0)[:-4]
        raw += struct.pack("<I", zlib.crc32(raw))
        fd = self._offset_fds[name]
        _write_all(fd, raw, (seq % 2) * _SLOT_STRIDE)
        os.fdatasync(fd)
        self._offset_seq[name] = seq

    def _delete_passed(self) -> None:
        """Delete the segments before the oldest consumer's segment (never the active one)."""
        oldest = min(c.segment for c in self._consumers.values())
        while len(self._segments) > 1 and self._segments[0].id < oldest:
            seg = self._segments.pop(0)
            seg.path.unlink(missing_ok=True)

    def _release_abandoned(self) -> None:
        """Give back the space of an abandoned active segment that every consumer has passed.

        After a failed write the last segment is never appended to again, but it is not deleted either (it is
        the last one, and its id must stay the highest). On a full disk its space is what the next segment
        needs, so once it is consumed it is cut back to its header; offsets move to that header first, so a
        crash in between only replays nothing.
        """
        seg = self._active
        if not self._need_roll or seg.size <= SEG_HEADER:
            return
        if any(c.segment != seg.id or c.pos < seg.size for c in self._consumers.values()):
            return
        try:
            for name in self._consumers:
                self._save_offset(name, Offset(seg.id, SEG_HEADER), seg.compacted)
            os.truncate(seg.path, SEG_HEADER)
        except OSError as exc:
            log.warning("spool %s: cannot release segment %d: %s", self.path, seg.id, exc)
            return
        self._generation += 1  # a batch read before this acknowledges as the segment's start, like compaction
        seg.size, seg.count, seg.skips, seg.compacted_gen = SEG_HEADER, 0, {}, self._generation
        seg.blocks = {}
        for c in self._consumers.values():
            c.pos, c.index = SEG_HEADER, 0

    # ------------------------------------------------------------ overflow

    def _make_room(self, incoming: int) -> None:
        total = sum(s.size for s in self._segments)
        while total + incoming > self.max_bytes:
            freed = self._compact_oldest()
            if freed is None:
                now = time.monotonic()
                if now - self._last_full_log >= DROP_LOG_INTERVAL_S:
                    self._last_full_log = now
                    log.warning("spool %s is over max_bytes (%d > %d) with state changes and heartbeats only; "
                                "keeping them", self.path, total + incoming, self.max_bytes)
                return
            total -= freed

    def _compact_oldest(self) -> int | None:
        """Rewrite the oldest segment that holds samples without them; return the bytes freed, None if none."""
        seg = next((s for s in self._segments if not s.compacted), None)
        if seg is None:
            return None
        if seg is self._active:
            if seg.size == SEG_HEADER:
                return None
            try:
                self._roll()
            except OSError as exc:
                raise SpoolError(f"spool {self.path}: cannot start a new segment: {exc}") from exc
        payloads: list[_Bytes] = []
        try:
            self._read_segment(seg, SEG_HEADER, 1 << 62, payloads)
            kept = [p for p in payloads if not p.startswith(b"[0,")]
            data = _seg_header(True) + b"".join(encode_record(p) for p in kept)
            dropped = len(payloads) - len(kept)
            if kept:
                _write_file_atomic(seg.path, data)
        except OSError as exc:
            raise SpoolError(f"spool {self.path}: overflow compaction of segment {seg.id} failed: {exc}") from exc
        before = seg.size
        self._generation += 1
        seg.compacted, seg.compacted_gen, seg.skips, seg.blocks = True, self._generation, {}, {}
        seg.size, seg.count = (len(data), len(kept)) if kept else (0, 0)
        self._dropped += dropped
        self._dropped_unlogged += dropped
        for c in self._consumers.values():
            if c.segment == seg.id:
                c.pos, c.index = SEG_HEADER, 0
        if not kept:
            i = self._seg_index(seg.id)
            nxt = self._segments[i + 1]
            self._segments.pop(i)
            seg.path.unlink(missing_ok=True)
            for c in self._consumers.values():
                if c.segment == seg.id:
                    c.segment = nxt.id
        self._log_drops()
        return before - seg.size

    def _log_drops(self) -> None:
        now = time.monotonic()
        if self._dropped_unlogged and now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._flush_drop_log(now)

    def _flush_drop_log(self, now: float | None = None) -> None:
        if self._dropped_unlogged:
            log.warning("spool %s full (max_bytes %d): dropped the %d oldest samples (%d since start); "
                        "state changes and heartbeats kept", self.path, self.max_bytes, self._dropped_unlogged,
                        self._dropped)
            self._dropped_unlogged = 0
            self._last_drop_log = time.monotonic() if now is None else now
