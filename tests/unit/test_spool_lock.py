"""The spool's LOCK names its holder: a second opener is told which process has the spool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.spool import Spool, SpoolError


def test_lock_file_holds_the_pid_and_a_second_opener_is_told_it(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool", 1 << 20)
    try:
        assert (tmp_path / "spool" / "LOCK").read_text() == f"{os.getpid()}\n"
        with pytest.raises(SpoolError) as err:
            Spool(tmp_path / "spool", 1 << 20)
        assert str(err.value) == f"spool {tmp_path / 'spool'} is in use by process {os.getpid()}"
    finally:
        first.close()
    Spool(tmp_path / "spool", 1 << 20).close()  # released with the spool


def test_a_stale_or_foreign_lock_file_is_rewritten(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "LOCK").write_text("99999999 left by an older version\n")
    sp = Spool(tmp_path / "spool", 1 << 20)
    try:
        assert (tmp_path / "spool" / "LOCK").read_text() == f"{os.getpid()}\n"
    finally:
        sp.close()
