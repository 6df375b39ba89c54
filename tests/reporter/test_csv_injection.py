"""CSV cells that a spreadsheet would run as formulas are neutralised; numbers stay numbers."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import pytest

from reporter.render import CSV_COLUMNS, csv_text, render_csv
from tests.reporter.april import fixed_report

HOSTILE = ["=cmd|' /C calc'!A0", "+SUM(A1:A9)", "-2+3", "@SUM(1)", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_formula_start_gets_a_quote(text: str) -> None:
    assert csv_text(text) == "'" + text


@pytest.mark.parametrize("text", ["core-router", "gold", "", "2026-04", "a=b", "x-1"])
def test_other_text_is_unchanged(text: str) -> None:
    assert csv_text(text) == text


async def test_no_cell_of_the_emailed_csv_starts_a_formula(tmp_path: Path) -> None:
    """Names from a store written before names were validated, or a report made in code, still render safely."""
    report = await fixed_report(tmp_path)
    first = report.components[0]
    hostile = dataclasses.replace(first, name=HOSTILE[2], klass=HOSTILE[1], tier=HOSTILE[0], customer=HOSTILE[3])
    report = dataclasses.replace(report, label="=HYPERLINK(\"http://127.0.0.1/\")",
                                 components=(hostile, *report.components[1:]))
    rows = list(csv.reader(io.StringIO(render_csv(report), newline="")))
    row = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert (row["period"], row["tier"], row["component"], row["class"], row["customer"]) == (
        "'=HYPERLINK(\"http://127.0.0.1/\")", "'" + HOSTILE[0], "'-2+3", "'+SUM(A1:A9)", "'@SUM(1)")
    assert row["error_budget_s"] == "-40.8"  # a negative number is a number, not a formula
    for r in rows[1:]:
        for column, cell in zip(CSV_COLUMNS, r, strict=True):
            if column != "error_budget_s":
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
