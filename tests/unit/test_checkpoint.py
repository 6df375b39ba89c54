"""The state checkpoint beside the spool: what it keeps, its journal of changes, and that a damaged or foreign one
is ignored."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent import checkpoint
from agent.checkpoint import FILE_NAME, JOURNAL_NAME, Checkpoint, decode, encode, encode_row
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


# ---------------------------------------------------------------- the journal of changes


def saved_at(i: int) -> Saved:
    """Update i of a checkpoint under test: component c<i % 40>, stamped with i."""
    streaks = {"tcp": SavedStreak(i % 2 == 0, i % 5 + 1, i, i + 1, f"run {i}")} if i % 3 else {}
    return Saved(ComponentRef(f"c{i % 40}", "san", "gold", "acme"), i % 4 != 0, i, streaks)


def changes_at(i: int) -> dict[str, bytes | None]:
    """Update i: one component written again, and every 7th update one that leaves."""
    changes: dict[str, bytes | None] = {f"c{i % 40}": encode_row(saved_at(i))}
    if i % 7 == 0:
        changes[f"c{(i * 3 + 1) % 40}"] = None
    return changes


def expected_after(n: int) -> dict[str, Saved]:
    """What the checkpoint holds after updates 0 … n-1."""
    out: dict[str, Saved] = {}
    for i in range(n):
        for name, row in changes_at(i).items():
            if row is None:
                out.pop(name, None)
            else:
                out[name] = saved_at(i)
    return out


def test_a_checkpoint_of_the_format_before_the_journal_loads_the_same_states(tmp_path: Path) -> None:
    old = encode("agent-1", SAVED)  # the base alone, no generation: what agents wrote before the journal
    assert b"generation" not in old
    (tmp_path / FILE_NAME).write_bytes(old)
    ckpt = Checkpoint(tmp_path, "agent-1")
    assert ckpt.load() == {s.ref.component: s for s in SAVED}
    # the first write after it is a whole new base; what follows goes to the journal
    ckpt.update({s.ref.component: encode_row(s) for s in SAVED})
    ckpt.update({"ups-é": None})
    assert Checkpoint(tmp_path, "agent-1").load() == {s.ref.component: s for s in SAVED if s.ref.component != "ups-é"}


def test_a_change_is_appended_without_rewriting_the_base(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, "agent-1")
    ckpt.update({s.ref.component: encode_row(s) for s in SAVED})
    base = (tmp_path / FILE_NAME).read_bytes()
    changed = Saved(SAVED[1].ref, False, 99, {})
    assert ckpt.update({"ups-é": encode_row(changed), "pbx-01": encode_row(SAVED[0])})  # pbx-01 is unchanged
    assert not ckpt.update({"pbx-01": encode_row(SAVED[0])})  # nothing differs: no write at all
    assert (tmp_path / FILE_NAME).read_bytes() == base
    journal = (tmp_path / JOURNAL_NAME).read_bytes()
    assert journal.count(b"\n") == 2 and b"pbx-01" not in journal  # its header and one record of one entry
    want = {s.ref.component: s for s in SAVED} | {"ups-é": changed}
    assert Checkpoint(tmp_path, "agent-1").load() == want


def test_the_journal_is_folded_into_a_new_base_when_it_outgrows_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "MIN_COMPACT_BYTES", 0)
    ckpt = Checkpoint(tmp_path, "agent-1")
    for i in range(300):
        ckpt.update(changes_at(i))
        journal = tmp_path / JOURNAL_NAME
        journal_bytes = journal.stat().st_size if journal.exists() else 0
        assert journal_bytes <= 2 * (tmp_path / FILE_NAME).stat().st_size + 1024
    assert ckpt.compactions > 5
    assert Checkpoint(tmp_path, "agent-1").load() == expected_after(300)


def test_a_journal_cut_anywhere_loads_every_record_before_the_cut(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, "agent-1")
    for i in range(4):
        ckpt.update(changes_at(i))
    journal = (tmp_path / JOURNAL_NAME).read_bytes()
    ends = [j + 1 for j, b in enumerate(journal) if b == ord("\n")]  # header, then updates 1, 2, 3
    for cut in range(len(journal) + 1):
        (tmp_path / JOURNAL_NAME).write_bytes(journal[:cut])
        complete = sum(1 for end in ends[1:] if end <= cut)
        assert Checkpoint(tmp_path, "agent-1").load() == expected_after(1 + complete), cut
    damaged = bytearray(journal)
    damaged[ends[1] + 12] ^= 0x01  # inside update 2's record: it and what follows are not applied
    (tmp_path / JOURNAL_NAME).write_bytes(bytes(damaged))
    assert Checkpoint(tmp_path, "agent-1").load() == expected_after(2)


def test_a_journal_of_another_generation_is_not_applied(tmp_path: Path) -> None:
    """A crash between a new base and the removal of the old journal: the base already holds its records."""
    ckpt = Checkpoint(tmp_path, "agent-1")
    for i in range(3):
        ckpt.update(changes_at(i))
    stale = (tmp_path / JOURNAL_NAME).read_bytes()
    Checkpoint(tmp_path, "agent-1").save([saved_at(100)])  # a new base, one generation on
    (tmp_path / JOURNAL_NAME).write_bytes(stale)
    assert Checkpoint(tmp_path, "agent-1").load() == {"c20": saved_at(100)}


WRITER = """
import sys
from pathlib import Path
from agent import checkpoint
from tests.unit.test_checkpoint import changes_at
checkpoint.MIN_COMPACT_BYTES = 4096  # compactions every few dozen updates, so a kill lands in some
ckpt = checkpoint.Checkpoint(Path(sys.argv[1]), "agent-1")
i = 0
while True:
    ckpt.update(changes_at(i))
    i += 1
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
"""


@pytest.mark.parametrize("after", [5, 23, 61, 140])
def test_sigkill_at_any_instant_leaves_a_checkpoint_that_loads(tmp_path: Path, after: int) -> None:
    """A writer killed while appending or compacting: the checkpoint loads as of the last update it finished, or
    the one it was writing."""
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, cwd=root) as proc:
        assert proc.stdout is not None
        done = 0
        while done < after:
            line = proc.stdout.readline()
            assert line, "the writer ended"
            done = int(line)
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
    done = max([done, *(int(n) for n in rest.split())])
    loaded = Checkpoint(tmp_path, "agent-1").load()
    assert loaded in (expected_after(done), expected_after(done + 1))
