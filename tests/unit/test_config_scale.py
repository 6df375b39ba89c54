"""The config loader's one-pass YAML builder and large configs: the same data as PyYAML, errors at their exact lines."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from slawatch.config import loader
from slawatch.config.loader import ConfigError, bundled_contract, load

SAME_AS_PYYAML = [
    "",
    "a: 1",
    "- 1\n- two\n- 3.5\n- true\n- ~\n- null\n-\n",
    "a: yes\nb: off\nc: 0x1F\nd: 0o17\ne: 1_000\nf: 190:20:30\ng: .inf\nh: -.NaN\n"
    "i: 2026-11-26\nj: 2026-11-26T03:00:00Z",
    'q: "yes"\nr: \'1\'\ns: "${X}"\nt: |\n  block\n  text\nu: >\n  folded\n  text\n',
    "base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: [*b, *b]\n",
    "s: &s scalar\nt: *s\n",
    "dup: 1\nother: 2\ndup: 3\n",
    "1: int key\n2026-01-01: date key\nnull: null key\ntrue: bool key\n",
    "nested: {a: {b: {c: [[], {}, [{}]]}}}",
    "--- \na: 1\n...\n",
    "just a scalar",
    "! 12: non-specific tag\nk: ! 13\n",
]

# What the builder leaves to PyYAML (it answers None), and PyYAML then builds or refuses as before.
LEFT_TO_PYYAML = [
    "a: !!str 12",
    "base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2\n",
    "? [1, 2]\n: complex key\n",
    "a: *undefined",
    "a: 1\n---\nb: 2\n",
    "a: !custom 1",
    "a: =",
]


@pytest.mark.parametrize("text", SAME_AS_PYYAML)
def test_builder_gives_what_pyyaml_gives(text: str) -> None:
    built = loader._build(text, Path("t.yaml"))
    assert built is not None
    data, dollar = built
    assert data == yaml.safe_load(text)
    assert dollar == ("${" in text)


@pytest.mark.parametrize("text", LEFT_TO_PYYAML)
def test_builder_leaves_tags_merges_complex_keys_and_bad_documents_to_pyyaml(text: str) -> None:
    assert loader._build(text, Path("t.yaml")) is None


def test_aliases_share_one_object_as_pyyaml_does() -> None:
    built = loader._build("base: &b {x: 1}\none: *b\ntwo: *b\n", Path("t.yaml"))
    assert built is not None
    assert built[0]["one"] is built[0]["two"]


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False), st.text(max_size=12))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=25)


@settings(max_examples=150, deadline=None)
@given(documents, st.booleans(), st.sampled_from([None, '"', "'"]))
def test_builder_matches_pyyaml_on_any_dumped_document(doc: Any, flow: bool, style: str | None) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, default_style=style, allow_unicode=True)
    built = loader._build(text, Path("t.yaml"))
    if built is None:  # the dumper wrote an explicit tag (!!null "", !!int "1"): PyYAML builds that
        assert "!!" in text
    else:
        assert built[0] == yaml.safe_load(text)


def test_builder_keeps_the_alias_and_depth_limits() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6))
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        loader._build(bomb, Path("t.yaml"))
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        loader._build("a: " + "[" * 70 + "]" * 70, Path("t.yaml"))


def _config(tmp_path: Path, n: int, bad: dict[int, str] | None = None) -> Path:
    rows = []
    for i in range(n):
        row = f'  - {{name: c{i}, class: san, customer: cust-{i % 3}, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}'
        rows.append((bad or {}).get(i, row))
    path = tmp_path / "big.yaml"
    path.write_text(f"contract: {bundled_contract()}\ncustomers:\n  - {{name: cust-0, tier: gold}}\n"
                    "  - {name: cust-1, tier: base}\n  - {name: cust-2, tier: silver}\n"
                    "components:\n" + "\n".join(rows) + "\n")
    return path


def test_a_large_config_loads_with_each_component_s_customer(tmp_path: Path) -> None:
    n = loader.COMPONENTS_CHUNK * 2 + 7  # validated in chunks
    config = load(_config(tmp_path, n)).config
    assert len(config.components) == n
    assert [config.tier_of(c) for c in config.components[:4]] == ["gold", "base", "silver", "gold"]
    assert config.components[-1].name == f"c{n - 1}"
    assert config.components[-1].probes[0].interval_s == config.defaults.interval_s


@pytest.mark.parametrize("where", [5, loader.COMPONENTS_CHUNK + 3])
def test_errors_in_a_large_config_are_at_their_exact_lines(tmp_path: Path, where: int) -> None:
    n = loader.COMPONENTS_CHUNK * 2 + 7
    bad = {where: f'  - {{name: c{where}, class: san, customer: nobody, probes: [{{kind: tcp, target: "x"}}]}}',
           n - 1: f"  - {{name: c{n - 1}, class: san, tier: gold, probes: [{{kind: nope}}]}}"}
    with pytest.raises(ConfigError) as info:
        load(_config(tmp_path, n, bad))
    first_component_line = 7  # contract, customers: and three, components:
    got = {(p.line, str(p).split(": ", 1)[1]) for p in info.value.problems}
    message = f"components[{where}].probes[0].target: 'x' has no port: write host:port"
    assert (first_component_line + where, message) in got
    assert any(line == first_component_line + n - 1 and f"components[{n - 1}].probes[0]" in text
               and "unknown probe kind 'nope'" in text for line, text in got)


def test_cross_check_errors_in_a_large_config_are_at_their_exact_lines(tmp_path: Path) -> None:
    n = loader.COMPONENTS_CHUNK + 11
    where = n - 3
    bad = {where: f'  - {{name: c{where}, class: san, customer: nobody, probes: [{{kind: tcp, target: "h:9"}}]}}'}
    with pytest.raises(ConfigError) as info:
        load(_config(tmp_path, n, bad))
    [problem] = info.value.problems
    assert problem.line == 7 + where
    assert str(problem).endswith(f"components[{where}].customer: unknown customer 'nobody' "
                                 "(customers: cust-0, cust-1, cust-2)")


def test_customer_lookup_follows_the_list(tmp_path: Path) -> None:
    config = load(_config(tmp_path, 3)).config
    first = config.customer("cust-1")
    assert first is not None and first.tier == "base"
    assert config.customer("nobody") is None
    config.customers = config.customers[:1]
    assert config.customer("cust-1") is None
    assert config.customer("cust-0") is config.customers[0]


@settings(max_examples=100, deadline=None)
@given(documents, documents, st.booleans())
def test_builder_matches_pyyaml_with_anchors_and_aliases(shared: Any, other: Any, flow: bool) -> None:
    # The same object twice in what is dumped: PyYAML writes it once with an anchor and then an alias.
    doc = {"a": shared, "b": [shared, other, shared], "c": {"d": shared}}
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)
    built = loader._build(text, Path("t.yaml"))
    if built is None:
        assert "!!" in text
    else:
        assert built[0] == yaml.safe_load(text)


def test_the_collector_is_paused_while_loading_and_running_again_after(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = loader._validate_config

    def spy(*args: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*args)

    monkeypatch.setattr(loader, "_validate_config", spy)
    load(_config(tmp_path, 3))
    with pytest.raises(ConfigError):
        load(_config(tmp_path, 3, {1: "  - {name: bad name}"}))
    assert seen == [False, False]
    assert gc.isenabled()


def test_a_load_leaves_no_cyclic_garbage(tmp_path: Path) -> None:
    """What a load leaves must be freed by reference counts: the agent freezes what is alive after a reload of a
    large config (gc.freeze), so a cycle left by the loader (its closures held the parser, a copy of the text, and
    every scalar) would stay for good, once per reload."""
    path = _config(tmp_path, 200)
    gc.collect()
    gc.disable()
    try:
        load(path)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_filled_probe_timing_counts_as_set_and_what_was_written_stays(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"contract: {bundled_contract()}\ndefaults: {{interval_s: 90}}\ncomponents:\n"
                    "  - {name: a, class: san, tier: gold, timeout_s: 3, probes: [{kind: tcp, target: 'h:1'},\n"
                    "     {kind: tcp, name: b, target: 'h:2', interval_s: 20, retry_interval_s: 5}]}\n")
    first, second = load(path).config.components[0].probes
    assert first.model_fields_set == {"kind", "target", "interval_s", "timeout_s", "retry_interval_s"}
    assert (first.interval_s, first.timeout_s, first.retry_interval_s) == (90, 3, None)
    assert second.model_fields_set == {"kind", "name", "target", "interval_s", "timeout_s", "retry_interval_s"}
    assert (second.interval_s, second.timeout_s, second.retry_interval_s) == (20, 3, 5)
    second.max_read_bytes = 10  # an assignment later still marks its field
    assert "max_read_bytes" in second.model_fields_set
