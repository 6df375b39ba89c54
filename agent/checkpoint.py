"""The agent's checkpoint beside its spool: each component's confirmed state and open streaks, for a restart.

One file, ``state.ckpt`` in the spool directory (whose LOCK makes it this agent's alone): a line
``SLWCKPT1 <crc32 hex>`` then a JSON document ``{"agent": ID, "components": [[component, class, tier,
customer, up, since_ms, {probe: [up, length, start_ms, last_ms, reason]}], ...]}``. It is replaced whole
(temporary file, fsync, rename, directory fsync), so a crash leaves the previous or the new version, never a
mix; a file that does not check out is ignored with a warning and the agent starts as if it had none.

Why a file rather than reading the last changes back from the spool or the store: the spool deletes what
every store has acknowledged, and the store may be a remote InfluxDB that is down when the agent starts;
the streak still in confirmation (the first failed run before a SIGKILL) is in neither.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

from agent.state import Saved, SavedStreak
from slawatch.model import ComponentRef

log = logging.getLogger(__name__)

FILE_NAME = "state.ckpt"
MAGIC = b"SLWCKPT1"


def encode_row(saved: Saved) -> bytes:
    """One component's entry of the checkpoint (kept encoded by the agent, which re-encodes only what changed)."""
    r = saved.ref
    streaks = {p: [t.up, t.length, t.start_ms, t.last_ms, t.reason] for p, t in saved.streaks.items()}
    row: list[object] = [r.component, r.klass, r.tier, r.customer, saved.up, saved.since_ms, streaks]
    if saved.degraded:  # an eighth element only when set: checkpoints written before it stay readable
        row.append(True)
    return json.dumps(row,
                      separators=(",", ":")).encode()


def encode_rows(agent: str, rows: Iterable[bytes]) -> bytes:
    payload = b'{"agent":%s,"components":[%s]}' % (json.dumps(agent).encode(), b",".join(rows))
    return MAGIC + b" %08x\n" % zlib.crc32(payload) + payload


def encode(agent: str, saved: Iterable[Saved]) -> bytes:
    return encode_rows(agent, (encode_row(s) for s in saved))


def decode(data: bytes) -> tuple[str, dict[str, Saved]]:
    """The agent id and the saved components of a checkpoint; ValueError when it does not check out."""
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
        for comp, klass, tier, customer, up, since, streaks, *more in doc["components"]:
            saved_streaks = {p: SavedStreak(bool(t[0]), int(t[1]), int(t[2]), int(t[3]), str(t[4]))
                             for p, t in streaks.items()}
            out[comp] = Saved(ComponentRef(comp, klass, tier, customer), up, since, saved_streaks,
                              more == [True])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"unexpected content: {exc}") from None
    if not isinstance(agent, str):
        raise ValueError("unexpected content: agent")
    return agent, out


class Checkpoint:
    """Reads and replaces the checkpoint file of one agent; `save` blocks on disk I/O (call it in a thread)."""

    def __init__(self, directory: Path, agent: str) -> None:
        self.path = Path(directory) / FILE_NAME
        self.agent = agent
        self.writes = 0
        # A write goes on in its thread when the task that awaited it is cancelled: never two at once.
        self._lock = threading.Lock()

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
            agent, saved = decode(data)
        except ValueError as exc:
            log.warning("ignoring the state checkpoint %s (%s): components start unconfirmed", self.path, exc)
            return {}
        if agent != self.agent:
            log.info("the state checkpoint %s is agent %s's, not %s's: components start unconfirmed",
                     self.path, agent, self.agent)
            return {}
        return saved

    def save(self, saved: Iterable[Saved]) -> None:
        """Replace the checkpoint durably; raises OSError."""
        self.write(encode(self.agent, saved))

    def write(self, data: bytes) -> None:
        """Replace the checkpoint durably with an encoded one (`encode_rows`); raises OSError."""
        with self._lock:
            self._replace(data)
        self.writes += 1

    def _replace(self, data: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
