"""The state checkpoint beside the spool: what it keeps, and that a damaged or foreign one is ignored."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.checkpoint import FILE_NAME, Checkpoint, decode, encode
from agent.state import Saved, SavedStreak
from slawatch.model import ComponentRef

SAVED = [
    Saved(ComponentRef("pbx-01", "sip", "gold", "acme"), False, 1_000,
          {"options": SavedStreak(False, 4, 1_000, 4_000, "SIP 503 Service Unavailable"),
           "register": SavedStreak(True, 1, 4_100, 4_100, "")}),
    Saved(ComponentRef("ups-é", "power", "", ""), True, 5, {}),
    Saved(ComponentRef("ups-2", "power", "gold", "acme"), True, 7, {}, degraded=True),
    Saved(ComponentRef("new", "san", "base", "x"), None, None, {"tcp": SavedStreak(True, 1, 9, 9, "")}),
]


def test_round_trip() -> None:
    agent, saved = decode(encode("agent-1", SAVED))
    assert agent == "agent-1"
    assert saved == {s.ref.component: s for s in SAVED}


def test_save_then_load(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, "agent-1")
    assert ckpt.load() == {}
    ckpt.save(SAVED)
    ckpt.save(SAVED[:1])
    assert Checkpoint(tmp_path, "agent-1").load() == {"pbx-01": SAVED[0]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]  # no temporary file left


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_checkpoint_is_ignored_with_a_warning(tmp_path: Path, damage: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    Checkpoint(tmp_path, "agent-1").save(SAVED)
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x01
    elif damage == "truncate":
        del data[len(data) // 2:]
    else:
        data[:] = b"\x00garbage"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, "agent.checkpoint"):
        assert Checkpoint(tmp_path, "agent-1").load() == {}
    assert "ignoring the state checkpoint" in caplog.text


def test_another_agents_checkpoint_is_not_taken(tmp_path: Path) -> None:
    Checkpoint(tmp_path, "agent-1").save(SAVED)
    assert Checkpoint(tmp_path, "agent-2").load() == {}


def test_valid_checksum_but_wrong_shape_is_ignored(tmp_path: Path) -> None:
    import zlib

    payload = b'{"agent":"agent-1","components":[["x",1]]}'
    (tmp_path / FILE_NAME).write_bytes(b"SLWCKPT1 %08x\n" % zlib.crc32(payload) + payload)
    assert Checkpoint(tmp_path, "agent-1").load() == {}
