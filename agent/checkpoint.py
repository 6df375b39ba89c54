"""The agent's checkpoint beside its spool: each component's confirmed state and open streaks, for a restart.

Two files in the spool directory (whose LOCK makes them this agent's alone). ``state.ckpt``, the base: a line
``SLWCKPT1 <crc32 hex>`` then a JSON document ``{"agent": ID, "generation": G, "components": [[component, class,
tier, customer, up, since_ms, {probe: [up, length, start_ms, last_ms, reason]}], ...]}``, replaced whole
(temporary file, fsync, rename, directory fsync), so a crash leaves the previous or the new version, never a mix;
G is a random number each base draws. ``state.journal``, what changed since: a line ``SLWJRNL1 G`` then one line
per write, ``<crc32 hex> {"set": [entry, ...], "del": [component, ...]}``, appended and fdatasync'ed — a confirmed
change costs the entries it touched, not the whole file. A load applies the journal's records in order onto the
base of the same generation, up to the first that does not check out (a write torn by a crash); a base that does
not check out is ignored with a warning and the agent starts as if it had none. When the journal outgrows the
base, the next write is a new base of a new generation, which leaves the old journal unread until it is removed.
(A base without a generation, written before the journal existed, is generation 0 and has no journal.)

Why a file rather than reading the last changes back from the spool or the store: the spool deletes what
every store has acknowledged, and the store may be a remote InfluxDB that is down when the agent starts;
the streak still in confirmation (the first failed run before a SIGKILL) is in neither.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.state import Saved, SavedStreak
from slawatch.model import ComponentRef

log = logging.getLogger(__name__)

FILE_NAME = "state.ckpt"
JOURNAL_NAME = "state.journal"
MAGIC = b"SLWCKPT1"
JOURNAL_MAGIC = b"SLWJRNL1"
MIN_COMPACT_BYTES = 64 * 1024
"""The journal may grow to the base's size, and at least to this, before the next write replaces the base."""


def encode_row(saved: Saved) -> bytes:
    """One component's entry of the checkpoint (kept encoded by the agent, which re-encodes only what changed)."""
    r = saved.ref
    streaks = {p: [t.up, t.length, t.start_ms, t.last_ms, t.reason] for p, t in saved.streaks.items()}
    row: list[object] = [r.component, r.klass, r.tier, r.customer, saved.up, saved.since_ms, streaks]
    if saved.degraded:  # an eighth element only when set: checkpoints written before it stay readable
        row.append(True)
    return json.dumps(row,
                      separators=(",", ":")).encode()


def encode_rows(agent: str, rows: Iterable[bytes], generation: int = 0) -> bytes:
    gen = b',"generation":%d' % generation if generation else b""
    payload = b'{"agent":%s%s,"components":[%s]}' % (json.dumps(agent).encode(), gen, b",".join(rows))
    return MAGIC + b" %08x\n" % zlib.crc32(payload) + payload


def encode(agent: str, saved: Iterable[Saved]) -> bytes:
    return encode_rows(agent, (encode_row(s) for s in saved))


def encode_record(rows: Iterable[bytes], removed: Iterable[str]) -> bytes:
    """One journal line: the entries written again and the components that left the checkpoint."""
    payload = b'{"set":[%s],"del":%s}' % (b",".join(rows), json.dumps(list(removed)).encode())
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _decode_row(row: list[Any]) -> Saved:
    comp, klass, tier, customer, up, since, streaks, *more = row
    saved_streaks = {p: SavedStreak(bool(t[0]), int(t[1]), int(t[2]), int(t[3]), str(t[4]))
                     for p, t in streaks.items()}
    return Saved(ComponentRef(comp, klass, tier, customer), up, since, saved_streaks, more == [True])


def decode(data: bytes) -> tuple[str, dict[str, Saved]]:
    """The agent id and the saved components of a base; ValueError when it does not check out."""
    agent, _generation, saved = decode_base(data)
    return agent, saved


def decode_base(data: bytes) -> tuple[str, int, dict[str, Saved]]:
    """The agent id, the generation and the saved components of a base; ValueError when it does not check out."""
    head, sep, payload = data.partition(b"\n")
    if not sep or head[:len(MAGIC)] != MAGIC:
        raise ValueError("not a slawatch checkpoint")
    try:
        crc = int(head[len(MAGIC):].strip(), 16)
    except ValueError:
        raise ValueError("bad checksum line") from None
    if zlib.crc32(payload) != crc:
        raise ValueError("checksum mismatch")
    doc = json.loads(payload)
    out: dict[str, Saved] = {}
    try:
        agent = doc["agent"]
        generation = doc.get("generation", 0)
        for row in doc["components"]:
            saved = _decode_row(row)
            out[saved.ref.component] = saved
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"unexpected content: {exc}") from None
    if not isinstance(agent, str) or not isinstance(generation, int):
        raise ValueError("unexpected content: agent")
    return agent, generation, out


def apply_journal(data: bytes, generation: int, saved: dict[str, Saved]) -> int:
    """Apply a journal's records to the components of its base (in place), up to the first that does not check
    out; how many were applied. A journal of another generation applies nothing."""
    head, sep, rest = data.partition(b"\n")
    if not sep or head != JOURNAL_MAGIC + b" %d" % generation:
        return 0
    applied = 0
    for line in rest.split(b"\n")[:-1]:  # the last piece has no newline: empty, or a torn write
        crc, _, payload = line.partition(b" ")
        try:
            if len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
                break
            record = json.loads(payload)
            changed = [_decode_row(row) for row in record["set"]]
            removed = [str(name) for name in record["del"]]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            break
        for name in removed:
            saved.pop(name, None)
        for s in changed:
            saved[s.ref.component] = s
        applied += 1
    return applied


class Checkpoint:
    """Reads and writes the checkpoint files of one agent; `save` and `update` block on disk I/O (call them in a
    thread)."""

    def __init__(self, directory: Path, agent: str) -> None:
        self.path = Path(directory) / FILE_NAME
        self.journal_path = Path(directory) / JOURNAL_NAME
        self.agent = agent
        self.writes = 0
        self.compactions = 0
        # A write goes on in its thread when the task that awaited it is cancelled: never two at once.
        self._lock = threading.Lock()
        self._rows: dict[str, bytes] = {}  # the entries on disk (base + journal), as `update` wrote them
        self._generation = 0  # of the base on disk
        self._base_bytes = 0
        self._journal_bytes: int | None = None  # None: the next `update` writes a base (nothing written yet)

    def load(self) -> dict[str, Saved]:
        """The saved components, or none when there is no usable checkpoint (said in a log line)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the state checkpoint %s, starting without it: %s", self.path, exc)
            return {}
        try:
            agent, generation, saved = decode_base(data)
        except ValueError as exc:
            log.warning("ignoring the state checkpoint %s (%s): components start unconfirmed", self.path, exc)
            return {}
        if agent != self.agent:
            log.info("the state checkpoint %s is agent %s's, not %s's: components start unconfirmed",
                     self.path, agent, self.agent)
            return {}
        self._generation = generation
        try:
            journal = self.journal_path.read_bytes()
        except FileNotFoundError:
            return saved
        except OSError as exc:
            log.warning("cannot read the state journal %s, taking the checkpoint without it: %s",
                        self.journal_path, exc)
            return saved
        apply_journal(journal, generation, saved)
        return saved

    def save(self, saved: Iterable[Saved]) -> None:
        """Replace the checkpoint durably with these components (a new base); raises OSError."""
        with self._lock:
            self._rows = {s.ref.component: encode_row(s) for s in saved}
            self._compact()
        self.writes += 1

    def update(self, changes: Mapping[str, bytes | None]) -> bool:
        """Write what changed (component -> its entry from `encode_row`, or None when it leaves the checkpoint),
        durably: appended to the journal, or as a new base when the journal has grown to the base's size or when
        this is the first write. False when nothing differed from what is on disk (no write); raises OSError."""
        with self._lock:
            changed = {n: r for n, r in changes.items() if r is not None and self._rows.get(n) != r}
            removed = [n for n, r in changes.items() if r is None and n in self._rows]
            if not changed and not removed and self._journal_bytes is not None:
                return False
            for name in removed:
                del self._rows[name]
            self._rows.update(changed)
            if self._journal_bytes is None or self._journal_bytes > max(self._base_bytes, MIN_COMPACT_BYTES):
                self._compact()
            else:
                self._append(encode_record(changed.values(), removed))
        self.writes += 1
        return True

    def _compact(self) -> None:
        """A new base of a new generation from the entries kept; the old journal goes (unread if it stays)."""
        # Random, not counted on: an agent that could not read the old base must not reuse its journal's number.
        generation = secrets.randbits(62) + 1
        data = encode_rows(self.agent, self._rows.values(), generation)
        self._journal_bytes = None
        self._replace(data)
        self._generation, self._base_bytes, self._journal_bytes = generation, len(data), 0
        self._drop_journal()
        self.compactions += 1

    def _append(self, record: bytes) -> None:
        assert self._journal_bytes is not None
        if self._journal_bytes == 0:  # a new journal for the current base: its header, and its directory entry
            header = JOURNAL_MAGIC + b" %d\n" % self._generation
            self._journal_bytes = None
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, header + record)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._fsync_directory()
            self._journal_bytes = len(header) + len(record)
            return
        # None until the record is on disk: a failed append leaves the next write a new base
        journal_bytes, self._journal_bytes = self._journal_bytes, None
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND)
        try:
            _write_all(fd, record)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self._journal_bytes = journal_bytes + len(record)

    def _drop_journal(self) -> None:
        self.journal_path.unlink(missing_ok=True)

    def _replace(self, data: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
