"""The report archive keeps the contract's retention and no longer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from reporter.monthly import prune_archive

DAY_S = 86_400


def test_months_older_than_the_retention_go(tmp_path: Path) -> None:
    for name in ("2025-12", "2026-04", "2026-05", "2026-10", "notes", "2026-13"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "acme.json").write_text("{}")
    now_ms = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp() * 1000)
    # 180 days before 2026-11-22 is 2026-05-26: April ended before, May ended after (2026-06-01)
    assert prune_archive(tmp_path, 180 * DAY_S, now_ms) == ["2025-12", "2026-04"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-05", "2026-10", "2026-13", "notes"]


def test_missing_archive_is_nothing_to_do(tmp_path: Path) -> None:
    assert prune_archive(tmp_path / "nope", 180 * DAY_S, 0) == []
