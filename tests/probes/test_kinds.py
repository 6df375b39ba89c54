"""The one list of probe kinds: every kind has its settings, its module, its one-shot command and its docs rows, and
no kind's module imports another kind."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import get_args

import pytest

from agent.probes import SETTINGS, kind
from slawatch.cli.probe import kind_help, register
from slawatch.config.loader import ConfigError, load
from slawatch.config.probes import PROBE_KINDS, PROBE_SETTINGS, ProbeBase

ROOT = Path(__file__).resolve().parents[2]
PROBES_DIR = ROOT / "agent" / "probes"
HELPERS = {"__init__", "base", "address", "httpclient", "options", "sipmessage", "snmpclient"}
"""The modules of agent/probes that are no kind: the registry and what kinds share."""


def _table_kinds(text: str, heading: str) -> list[str]:
    """The first column of the table under `heading`: the kinds it has a row for."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z]+)` \|", section, re.MULTILINE)


def test_the_kinds_come_from_the_settings_union() -> None:
    assert len(set(PROBE_KINDS)) == len(PROBE_KINDS) == len(PROBE_SETTINGS) >= 8
    for name, settings in zip(PROBE_KINDS, PROBE_SETTINGS, strict=True):
        assert issubclass(settings, ProbeBase)
        assert get_args(settings.model_fields["kind"].annotation) == (name,)
        assert SETTINGS[name] is settings
        assert kind_help(settings), f"{settings.__name__} has no docstring to be the kind's help"


@pytest.mark.parametrize("name", PROBE_KINDS)
def test_every_kind_has_its_module_and_one_shot_hooks(name: str) -> None:
    k = kind(name)
    assert (PROBES_DIR / f"{name}.py").is_file()
    assert callable(k.probe) and callable(k.add_arguments) and callable(k.settings_from_args)
    assert k.target and k.settings is SETTINGS[name]
    assert (k.warm is None) == (k.close is None), "a kind that warms something up must close it too"
    # The subcommand exists and lists the kind's own options.
    parser = argparse.ArgumentParser(prog="slawatch")
    register(parser.add_subparsers(dest="command"))
    sub = parser._subparsers._group_actions[0].choices["probe"]  # type: ignore[union-attr]
    kind_parser = sub._subparsers._group_actions[0].choices[name]
    usage = kind_parser.format_usage()
    assert k.target in usage and "--timeout" in usage


def test_there_is_no_kind_module_without_settings() -> None:
    modules = {p.stem for p in PROBES_DIR.glob("*.py")}
    assert modules - HELPERS == set(PROBE_KINDS)


@pytest.mark.parametrize("path", sorted(PROBES_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_no_probe_module_imports_a_kind(path: Path) -> None:
    """A kind module, or a helper, imports base and helpers, never a kind (the registry loads kinds by name)."""
    kinds = {f"agent.probes.{name}" for name in PROBE_KINDS}
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert not imported & kinds, f"{path.name} imports {sorted(imported & kinds)}"


def test_every_kind_has_a_docs_row() -> None:
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert _table_kinds(configuration, "## Probe kinds") == list(PROBE_KINDS)
    assert _table_kinds(readme, "## Probe kinds") == list(PROBE_KINDS)


def test_an_unknown_kind_names_every_kind(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("components:\n  - {name: a, class: sip, tier: gold, probes: [{kind: nope, target: x}]}\n")
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert f"(known kinds: {', '.join(PROBE_KINDS)})" in str(err.value.problems[0])
