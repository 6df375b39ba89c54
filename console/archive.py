"""The report archive as the console serves it: what `report.archive` holds (ARCHIVE/YYYY-MM/CUSTOMER.EXT), read from
the disk, so that every download is one of the listed files and never a path built from a request."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from slawatch.config.units import NAME_RE

MONTH_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
FORMATS: dict[str, str] = {"html": "text/html", "pdf": "application/pdf", "csv": "text/csv",
                           "json": "application/json"}
"""The archived formats the console offers, in the order it shows them, with their media types."""
MAX_FILES = 100_000
"""Files listed at most: the archive is pruned to the contract's retention, so this is only a guard."""


@dataclass(frozen=True, slots=True)
class Archived:
    """One archived report file: the month (YYYY-MM), the customer, the format, where it is and its size."""

    month: str
    customer: str
    fmt: str
    path: Path
    size: int

    @property
    def filename(self) -> str:
        return f"{self.customer}.{self.fmt}"

    @property
    def size_text(self) -> str:
        return size_text(self.size)


def size_text(size: int) -> str:
    """Bytes as a person reads them: 312 B, 4.1 KiB, 2.3 MiB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def parse_name(name: str) -> tuple[str, str] | None:
    """(customer, format) of an archived file's name, None for anything else (temp files, other formats)."""
    customer, dot, fmt = name.rpartition(".")
    if not dot or fmt not in FORMATS or not NAME_RE.fullmatch(customer) or customer.startswith("."):
        return None
    return customer, fmt


def listing(root: Path | None) -> list[Archived]:
    """Every archived report under `root`: newest month first, then by customer and format. Only regular files
    directly in a month's folder count; a symbolic link, there or as the folder, is left out, so nothing outside
    the archive is ever listed. Blocking: call it in a thread."""
    if root is None:
        return []
    found: list[Archived] = []
    try:
        folders = sorted(root.iterdir(), reverse=True)
    except OSError:
        return []
    for folder in folders:
        if not MONTH_RE.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for path in entries:
            parsed = parse_name(path.name)
            if parsed is None:
                continue
            try:
                st = path.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            found.append(Archived(folder.name, parsed[0], parsed[1], path, st.st_size))
            if len(found) >= MAX_FILES:
                return _ordered(found)
    return _ordered(found)


def _ordered(items: Iterable[Archived]) -> list[Archived]:
    order = list(FORMATS)
    return sorted(items, key=lambda a: (_neg_month(a.month), a.customer, order.index(a.fmt)))


def _neg_month(month: str) -> int:
    return -int(month.replace("-", ""))


def find(items: Sequence[Archived], month: str, filename: str) -> Archived | None:
    """The listed file `filename` of `month`, None when the listing has no such file."""
    return next((a for a in items if a.month == month and a.filename == filename), None)


def by_month(items: Iterable[Archived]) -> list[tuple[str, list[tuple[str, list[Archived]]]]]:
    """[(month, [(customer, [files in format order])])], newest month first (the order `listing` gives)."""
    months: dict[str, dict[str, list[Archived]]] = {}
    for a in items:
        months.setdefault(a.month, {}).setdefault(a.customer, []).append(a)
    return [(month, list(customers.items())) for month, customers in months.items()]
