"""Reads a config file and its contract: YAML, `${VAR}` expansion, validation, errors with file and line."""

from __future__ import annotations

import contextlib
import difflib
import gc
import os
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from slawatch.config.flowlines import FLOW_DEPTH, PLACEHOLDER, FlowLines, NotFlow, read_flow_lines
from slawatch.config.probes import PROBE_KINDS
from slawatch.config.settings import Component, Config, Contract, cross_check, shown
from slawatch.config.units import VALUE_SHOWN, Located

Loc = tuple[str | int, ...]
# libyaml's parser when present: a 10 000-component file loads in a fraction of the pure-Python time.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
M = TypeVar("M", bound=BaseModel)
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Limits checked on the parser's events, before any node or object is built: a few hundred bytes of YAML
# aliases can otherwise expand to billions of nodes, and deep nesting exhausts the recursion limit.
MAX_FILE_BYTES = 16 << 20
MAX_DEPTH = 64
ALIAS_NODES_MIN = 100_000  # nodes aliases may add: this many, or as many as the file itself holds


@dataclass(frozen=True, slots=True)
class Problem:
    """One located configuration error."""

    file: Path
    line: int | None
    loc: Loc
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        path = format_loc(self.loc)
        return f"{where}: {path}: {self.message}" if path else f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Loaded:
    path: Path
    config: Config
    contract: Contract


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and len(part) > VALUE_SHOWN:
            part = part[:VALUE_SHOWN - 1] + "…"
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load(path: str | Path, environ: Mapping[str, str] | None = None, *, for_good: bool = False) -> Loaded:
    """Load and validate a config file and the contract it names; raise ConfigError with every problem.

    `for_good`: the config lives as long as the process (a command that loads it once): what the load made is
    moved out of the collector's sight (gc.freeze) before the collector is back on. Else the collector's first
    pass after the load walks every object of it (0.4 s at 100 000 components), and its later full passes again."""
    with collector_paused(freeze=for_good):
        return _load(Path(path), environ)


@contextlib.contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """The cyclic garbage collector off while a config is read: the millions of dicts, strings and models of a
    large file made it run dozens of full passes over a growing heap (a fifth of a 100 000-component load). The
    load makes no cycles worth collecting; refcounting still frees everything as usual. With `freeze`, every
    object alive at the end is frozen (gc.freeze) before the collector is back on."""
    if not gc.isenabled():  # already paused (a load in another thread): leave it to that one
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        gc.enable()


def _load(path: Path, environ: Mapping[str, str] | None) -> Loaded:
    env = os.environ if environ is None else environ
    data, lines = _read_yaml(path, env)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(path, 1, (), "the file must be a mapping of keys (agent:, storage:, ...)")])
    config = _validate_config(data, lines, path, env)
    del data
    base = path.parent
    if not config.contract.is_absolute():
        config.contract = base / config.contract
    if config.storage.sqlite is not None and not config.storage.sqlite.path.is_absolute():
        config.storage.sqlite.path = base / config.storage.sqlite.path
    if config.storage.records is not None and not config.storage.records.is_absolute():
        config.storage.records = base / config.storage.records
    elif config.storage.records is None and config.storage.sqlite is None:  # InfluxDB alone: records beside it
        config.storage.records = base / config.storage.records_path
    if not config.storage.spool.path.is_absolute():
        config.storage.spool.path = base / config.storage.spool.path
    if config.report.archive is not None and not config.report.archive.is_absolute():
        config.report.archive = base / config.report.archive
    contract = load_contract(config.contract, env)
    problems = [Problem(path, _line_for(lines, loc), loc, msg) for loc, msg in cross_check(config, contract)]
    if problems:
        raise ConfigError(problems)
    return Loaded(path, config, contract)


def load_contract(path: Path, environ: Mapping[str, str] | None = None) -> Contract:
    if not path.exists():
        raise ConfigError([Problem(path, None, (), "contract file not found (set `contract:` in the config)")])
    data, lines = _read_yaml(path, os.environ if environ is None else environ)
    if not isinstance(data, dict):
        raise ConfigError([Problem(path, 1, (), "the contract must be a mapping (tiers:, classes:, ...)")])
    return _validate(Contract, data, lines, path)


def _read_yaml(path: Path, env: Mapping[str, str]) -> tuple[Any, Lines]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError([Problem(path, None, (), f"the file is {size / (1 << 20):.1f} MiB: "
                                                       f"more than the {MAX_FILE_BYTES >> 20} MiB a config may be")])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(path, None, (), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, None, (), f"cannot read the file: {exc}")]) from None
    if len(text) > MAX_FILE_BYTES:  # grew between stat() and read
        raise ConfigError([Problem(path, None, (), f"the file is more than the {MAX_FILE_BYTES >> 20} MiB "
                                                   "a config may be")])
    try:
        built = _build(text, path)
        if built is None:  # something the one-pass builder leaves to PyYAML's composer and constructor
            _check_shape(text, path)
            loader = _LOADER(text)
            try:
                node = loader.get_single_node()
                data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
            dollar = True
        else:
            data, dollar = built
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "syntax error"
        if "not allowed" in what or "expected <block end>" in what:
            what += " (check the indentation)"
        raise ConfigError([Problem(path, line, (), f"YAML syntax error{col}: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(path, None, (), f"YAML error: {exc}")]) from None
    lines = Lines(text)
    if dollar:
        problems: list[Problem] = []
        data = _expand(data, (), env, problems, lines, path)
        if problems:
            raise ConfigError(problems)
    return data, lines


class Lines:
    """Where each key and item of a file starts (location -> line), indexed only when an error needs it: a large
    file that loads cleanly never builds PyYAML's node tree."""

    def __init__(self, text: str) -> None:
        self._text: str | None = text
        self._lines: dict[Loc, int] = {}

    def _index(self) -> dict[Loc, int]:
        if self._text is not None:
            loader = _LOADER(self._text)
            try:
                node = loader.get_single_node()
            finally:
                loader.dispose()
            if node is not None:
                _index_lines(node, (), self._lines)
            self._text = None
        return self._lines

    def __contains__(self, loc: Loc) -> bool:
        return loc in self._index()

    def __getitem__(self, loc: Loc) -> int:
        return self._index()[loc]


# The scalar tags the one-pass builder constructs itself (through SafeLoader's own constructors).
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp"))


class _LeftToPyYAML(Exception):
    """Raised inside _build for what it leaves to PyYAML's composer and constructor."""


def _build(text: str, path: Path) -> tuple[Any, bool] | None:
    """The document's data from the parser's events in one pass, with _check_shape's limits applied on the way;
    (data, whether any string holds `${`). None for what it leaves to the composer: explicit tags, merge keys,
    non-scalar keys, undefined aliases, several documents.

    One-line flow mappings of a block sequence (a generated config's components) are read apart, without the
    parser's events (flowlines.py), and put in their places as the rest is built. Anything unusual on that way
    (an alias, an error, a line not where the parser puts it) and the file is built again whole from the
    parser's events, so the data, and every error with its line, are those of the file as written."""
    plain: dict[str, Any] = {}  # plain scalar -> its value: most are repeated (kind: tcp, class: san, ...)
    loader = _LOADER("")
    resolve: Any = loader.resolve
    constructors = loader.yaml_constructors

    def plain_value(token: str) -> Any:
        value = plain.get(token, _NO_KEY)
        if value is _NO_KEY:
            if token[:1] in _RESOLVED_FIRST:
                tag = resolve(yaml.ScalarNode, token, (True, False))
                if tag not in _PLAIN_TAGS:
                    raise NotFlow
                value = constructors[tag](loader, yaml.ScalarNode(tag, token))
            else:  # no implicit resolver for its first character: a string, as the resolver would say
                value = token
            plain[token] = value
        return value

    try:
        flow = read_flow_lines(text, plain_value)
    except NotFlow:
        flow = None
    finally:
        loader.dispose()
    if flow is not None:
        try:
            built = _build_events(flow.text, path, plain, flow)
        except Exception:  # built again from the file as written, which says it as before
            built = None
        if built is not None:
            return built
    return _build_events(text, path, plain, None)


# The first characters of a plain scalar that SafeLoader's implicit resolvers look at (else it is a string). SafeLoader
# has no resolver for any first character (key None); were one added, this would not be the shortcut it is.
_RESOLVED_FIRST = frozenset(key for key in _LOADER.yaml_implicit_resolvers if key is not None)


class _FlowMismatch(Exception):
    """A placeholder of flowlines.py met where its line's value cannot simply be put."""


def _build_events(text: str, path: Path, plain: dict[str, Any], flow: FlowLines | None) -> tuple[Any, bool] | None:
    """_build from the parser's events, with the values of `flow`'s lines put at their placeholders.

    PyYAML's composer would build a node (with two marks) per value first: for a file of 100 000 components
    that tree is most of the load's time and memory. Each collection is read by its own loop, scalars inline:
    the parser's 17 events per component are the cost left (~1 us each, two thirds of it making the event)."""
    loader = _LOADER(text)
    # (typed Any: the stubs leave these untyped)
    get_event: Any = loader.get_event
    resolve: Any = loader.resolve
    constructors = loader.yaml_constructors
    anchored: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded node count, as in _check_shape)
    open_anchors: list[str] = []  # anchors of the collections being read: an alias to one would contain itself
    nodes = extra = 0  # nodes written in the file; nodes aliases add
    dollar = flow is not None and flow.dollar
    placed = 0  # flow lines put in their places
    scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
    mapping_start, sequence_start = yaml.MappingStartEvent, yaml.SequenceStartEvent
    mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent

    def resolved(event: Any) -> Any:
        """A plain scalar's value, through SafeLoader's resolver and constructors (then kept in `plain`)."""
        nonlocal dollar
        if event.value[:1] not in _RESOLVED_FIRST:  # a string: see _RESOLVED_FIRST
            value = plain[event.value] = event.value
        else:
            tag = resolve(yaml.ScalarNode, event.value, event.implicit)
            if tag not in _PLAIN_TAGS:
                raise _LeftToPyYAML
            value = plain[event.value] = constructors[tag](loader, yaml.ScalarNode(
                tag, event.value, event.start_mark, event.end_mark, event.style))
        if isinstance(value, str) and "${" in value:
            dollar = True
        return value

    def scalar(event: Any) -> Any:
        nonlocal nodes, dollar
        nodes += 1
        tag = event.tag
        if tag is not None and tag != "!":
            raise _LeftToPyYAML
        if event.implicit[0]:
            value = plain.get(event.value, _NO_KEY)
            if value is _NO_KEY:
                value = resolved(event)
        else:  # quoted, block or tagged `!`: always a string
            value = event.value
            if "${" in value:
                dollar = True
        if event.anchor is not None:
            anchored[event.anchor] = (value, 1)
        return value

    def alias(event: Any, key: bool) -> Any:
        nonlocal extra
        if flow is not None:  # the node counts of the alias limits leave out the flow lines' nodes
            raise _FlowMismatch
        if event.anchor in open_anchors:
            line = event.start_mark.line + 1
            raise ConfigError([Problem(path, line, (), f"alias *{event.anchor} refers to a node "
                                                       "that contains it")])
        if event.anchor not in anchored:
            raise _LeftToPyYAML  # the composer reports the undefined alias with its line
        value, count = anchored[event.anchor]
        if key and isinstance(value, dict | list):  # PyYAML refuses it as an unhashable key
            raise _LeftToPyYAML
        extra += count
        if extra > ALIAS_NODES_MIN and extra > nodes:
            allowed = max(ALIAS_NODES_MIN, nodes)
            line = event.start_mark.line + 1
            raise ConfigError([Problem(path, line, (), f"YAML aliases expand to more than {allowed} nodes "
                                                       "beyond those written in the file: write the values out")])
        return value

    def flowed(event: Any, depth: int) -> list[Any]:
        """The values of the run of flow lines at this placeholder, which must be the next one, on its own line."""
        nonlocal placed
        assert flow is not None
        if (placed == len(flow.runs) or event.start_mark.line != flow.runs[placed][0] or event.style != '"'
                or depth + FLOW_DEPTH > MAX_DEPTH):
            raise _FlowMismatch
        placed += 1
        return flow.runs[placed - 1][1]

    def node(event: Any, depth: int) -> Any:
        kind = event.__class__
        if kind is scalar_event:
            return scalar(event)
        if kind is alias_event:
            return alias(event, False)
        return collection(event, depth)

    def collection(event: Any, depth: int) -> Any:
        nonlocal nodes, dollar
        if event.tag is not None and event.tag != "!":
            raise _LeftToPyYAML
        nodes += 1
        depth += 1
        if depth > MAX_DEPTH:
            line = event.start_mark.line + 1
            raise ConfigError([Problem(path, line, (), f"nested more than {MAX_DEPTH} levels deep")])
        anchor = event.anchor
        if anchor is not None:
            open_anchors.append(anchor)
            start = nodes + extra - 1
        # The scalar branch is `scalar()` written out: most events are scalars, and a call each costs a tenth.
        out: Any
        if event.__class__ is mapping_start:
            out = {}
            while (event := get_event()).__class__ is not mapping_end:
                if event.__class__ is scalar_event and event.tag is None and event.anchor is None:
                    nodes += 1
                    if event.implicit[0]:
                        key = plain.get(event.value, _NO_KEY)
                        if key is _NO_KEY:
                            key = resolved(event)
                    else:
                        key = event.value
                        if "${" in key:
                            dollar = True
                elif event.__class__ is alias_event:
                    key = alias(event, True)
                else:
                    key = node(event, depth)
                    if isinstance(key, dict | list):  # PyYAML refuses it as an unhashable key
                        raise _LeftToPyYAML
                event = get_event()
                if event.__class__ is scalar_event and event.tag is None and event.anchor is None:
                    nodes += 1
                    if event.implicit[0]:
                        value = plain.get(event.value, _NO_KEY)
                        if value is _NO_KEY:
                            value = resolved(event)
                    else:
                        value = event.value
                        if "${" in value:
                            dollar = True
                else:
                    value = node(event, depth)
                out[key] = value
        else:
            out = []
            append = out.append
            while (event := get_event()).__class__ is not sequence_end:
                if event.__class__ is scalar_event and event.tag is None and event.anchor is None:
                    nodes += 1
                    if event.implicit[0]:
                        value = plain.get(event.value, _NO_KEY)
                        if value is _NO_KEY:
                            value = resolved(event)
                    else:
                        value = event.value
                        if "${" in value:
                            dollar = True
                        elif value == PLACEHOLDER and flow is not None:
                            out.extend(flowed(event, depth))
                            continue
                    append(value)
                else:
                    append(node(event, depth))
        if anchor is not None:
            open_anchors.pop()
            anchored[anchor] = (out, nodes + extra - start)
        return out

    try:
        root: Any = None
        documents = 0
        while (event := get_event()) is not None:
            kind = event.__class__
            if kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    return None  # the composer says "expected a single document"
            elif kind is scalar_event or kind is alias_event or kind is mapping_start or kind is sequence_start:
                root = node(event, 0)
        if flow is not None and placed != len(flow.runs):
            raise _FlowMismatch  # a placeholder inside a string or block text: not a line of its own
        return root, dollar
    except _LeftToPyYAML:
        return None
    finally:
        loader.dispose()
        # node() and collection() call each other through their closures: a reference cycle holding the loader
        # (its copy of the text) and every scalar. The collector is paused during a load and the agent freezes
        # what is alive after one, so left to it that cycle would stay for good, once per reload.
        node = collection = None  # type: ignore[assignment]


_NO_KEY: Any = object()


def _check_shape(text: str, path: Path) -> None:
    """Refuse deep nesting and alias expansion before building anything, from the parser's events alone.

    Counts the nodes the document holds once aliases are expanded (an alias counts the nodes of what it
    names), which is what the line index, `${VAR}` expansion and validation would walk."""
    loader = _LOADER(text)
    try:
        sizes: dict[str, int] = {}  # anchor -> expanded node count
        open_nodes: list[tuple[str | None, int]] = []  # (anchor, expanded node count so far)
        nodes = expanded = 0
        while (event := loader.get_event()) is not None:  # type: ignore[no-untyped-call]
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                if event.anchor in (anchor for anchor, _ in open_nodes):
                    raise ConfigError([Problem(path, line, (), f"alias *{event.anchor} refers to a node "
                                                               "that contains it")])
                if event.anchor not in sizes:
                    return  # the composer reports the undefined alias with its line
                count = sizes[event.anchor]
            elif isinstance(event, yaml.ScalarEvent):
                count = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                nodes += 1
                expanded += 1
                open_nodes.append((event.anchor, 1))
                if len(open_nodes) > MAX_DEPTH:
                    raise ConfigError([Problem(path, line, (), f"nested more than {MAX_DEPTH} levels deep")])
                continue
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, count = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = count
                if open_nodes:
                    open_nodes[-1] = (open_nodes[-1][0], open_nodes[-1][1] + count)
                continue
            else:
                continue
            nodes += isinstance(event, yaml.ScalarEvent)
            expanded += count
            if open_nodes:
                open_nodes[-1] = (open_nodes[-1][0], open_nodes[-1][1] + count)
            allowed = max(ALIAS_NODES_MIN, nodes)
            if expanded - nodes > allowed:
                raise ConfigError([Problem(path, line, (), f"YAML aliases expand to more than {allowed} nodes "
                                                           "beyond those written in the file: write the values out")])
    finally:
        loader.dispose()


def _index_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                child = (*loc, key.value)
                lines[child] = key.start_mark.line + 1
                _index_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*loc, i), lines)


def _expand(value: Any, loc: Loc, env: Mapping[str, str], problems: list[Problem],
            lines: Lines, path: Path) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(path, _line_for(lines, loc), loc,
                                    f"environment variable {name} is not set"))
            return ""
        return _ENV_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand(v, (*loc, k), env, problems, lines, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*loc, i), env, problems, lines, path) for i, v in enumerate(value)]
    return value


def _line_for(lines: Lines | dict[Loc, int], loc: Loc) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


COMPONENTS_CHUNK = 2000
_COMPONENTS: TypeAdapter[list[Component]] = TypeAdapter(list[Component])


def _validate_config(data: dict[str, Any], lines: Lines, path: Path, env: Mapping[str, str]) -> Config:
    """Config.model_validate, with a long list of components validated a chunk at a time, each chunk's mappings
    let go as its models are made: the file's data and every model are not both held at once (100 000
    components: ~90 MB less at the peak). Any error: the file is read and validated whole again, so every
    problem is reported as the one-piece validation reports it."""
    components = data.get("components")
    if not isinstance(components, list) or len(components) <= COMPONENTS_CHUNK:
        return _validate(Config, data, lines, path)
    models: list[Component] = []
    try:
        for start in range(0, len(components), COMPONENTS_CHUNK):
            models.extend(_COMPONENTS.validate_python(components[start:start + COMPONENTS_CHUNK]))
            components[start:start + COMPONENTS_CHUNK] = [None] * min(COMPONENTS_CHUNK, len(components) - start)
        # Component instances are taken as they are (pydantic does not validate a model instance again).
        return Config.model_validate({**data, "components": models})
    except ValidationError:
        pass
    del models, components
    data.clear()
    whole, lines = _read_yaml(path, env)
    return _validate(Config, whole, lines, path)


def _validate(model: type[M], data: dict[str, Any], lines: Lines, path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems: dict[Loc, list[str]] = {}
        for err, loc, message in _located(data, exc.errors()):
            problems.setdefault(loc, [])
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(model, data, loc[:-1])
                close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
                if close:
                    message += f" (did you mean {close[0]!r}?)"
                elif allowed:
                    message += f" (allowed: {', '.join(allowed)})"
            if message not in problems[loc]:
                problems[loc].append(message)
        raise ConfigError([Problem(path, _line_for(lines, loc), loc, " or ".join(msgs))
                           for loc, msgs in problems.items()]) from None


def _located(data: Any, errors: list[Any]) -> list[tuple[Any, Loc, str]]:
    """(error, location in the file, message) for each error; a validator that found several problems (Located)
    gives one entry per problem, at its own place."""
    out: list[tuple[Any, Loc, str]] = []
    for err in errors:
        located = (err.get("ctx") or {}).get("error")
        if err["type"] == "value_error" and isinstance(located, Located):
            out.extend((err, _data_loc(data, (*err["loc"], *where)), message) for where, message in located.problems)
            continue
        loc = _data_loc(data, err["loc"])
        out.append((err, loc, _message(err, secret=bool(loc) and loc[-1] in _SECRET_KEYS)))
    return out


def _data_loc(data: Any, loc: tuple[Any, ...]) -> Loc:
    """Drop the parts of a pydantic location that name union members rather than keys in the file."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if part < len(node) else None
        elif isinstance(node, dict):
            if part in node:
                out.append(part)
                node = node[part]
            elif isinstance(part, str) and (part == node.get("kind") or not _looks_like_key(part)):
                continue
            else:
                out.append(part)  # a missing or unknown key
                node = None
        elif isinstance(part, str) and not _looks_like_key(part):
            continue
        else:
            out.append(part)
            node = None
    return tuple(out)


def _allowed_keys(model: type[BaseModel], data: Any, loc: Loc) -> list[str]:
    """The keys the model at `loc` accepts, for "did you mean" hints."""
    node: Any = data
    annotation: Any = model
    for part in loc:
        if isinstance(part, int):
            origin = get_origin(annotation)
            if origin is not list:
                return []
            annotation = get_args(annotation)[0]
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        current = _model_in(annotation, node)
        field = None if current is None else next(
            (f for name, f in current.model_fields.items() if (f.alias or name) == part), None)
        if field is None:
            return []
        annotation = _strip_optional(field.annotation)
        node = node.get(part) if isinstance(node, dict) else None
    current = _model_in(annotation, node)
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items() if not f.exclude]


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_in(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The model class an annotation holds (through Optional, list, dict, Annotated and `kind` unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Union, types.UnionType) or origin is Annotated:
        models = [m for m in (_model_in(a, node) for a in args) if m is not None]
        if len(models) > 1 and isinstance(node, dict):
            kind = node.get("kind")
            models = [m for m in models if "kind" in m.model_fields
                      and kind in get_args(m.model_fields["kind"].annotation)] or models[:1]
        return models[0] if models else None
    return None


def _looks_like_key(part: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) is not None and part not in (
        "int", "str", "float", "bool", "list", "dict", "none")


_TYPE_WORDS = {
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be text", "list_type": "must be a list", "dict_type": "must be a mapping of keys",
    "model_type": "must be a mapping of keys", "model_attributes_type": "must be a mapping of keys",
}


def _secret_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """The keys, anywhere under `model`, whose value is a secret: an error never repeats their value."""
    seen.add(model)
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        todo: list[Any] = [field.annotation]
        while todo:
            annotation = todo.pop()
            if annotation is SecretStr:
                keys.add(field.alias or name)
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if annotation not in seen:
                    keys |= _secret_keys(annotation, seen)
            else:
                todo.extend(get_args(annotation))
    return keys


_SECRET_KEYS = frozenset(_secret_keys(Config, set()) | _secret_keys(Contract, set()))


def _message(err: Any, *, secret: bool = False) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if secret and kind not in ("missing", "extra_forbidden", "value_error"):
        # A secret of the wrong type is still a secret: say what is wrong, never what was written.
        return ("must be text (put it in quotes; the value is not shown)" if kind == "string_type"
                else "bad value (not shown: this is a secret)")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return f"unknown probe kind {shown(ctx.get('tag'))} (known kinds: {', '.join(PROBE_KINDS)})"
    if kind == "union_tag_not_found":
        return f"missing `kind` (one of: {', '.join(PROBE_KINDS)})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {shown(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"greater_than": "greater than", "greater_than_equal": "at least",
                 "less_than": "less than", "less_than_equal": "at most"}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {words} {limit}, got {shown(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {shown(value)}"
    if kind == "string_pattern_mismatch":
        return f"bad value {shown(value)}: use letters, digits and - _ . : only" if "A-Za-z0-9_.:-" in str(
            ctx.get("pattern")) else f"bad value {shown(value)} (must match {ctx.get('pattern')})"
    if kind == "too_short":
        return "must not be empty"
    if kind in _TYPE_WORDS:
        return f"{_TYPE_WORDS[kind]}, got {shown(value)}"
    msg = str(err["msg"])
    return msg[0].lower() + msg[1:] if msg else kind


def bundled_contract() -> Path:
    """The contract shipped with slawatch (config/contract.yaml), installed or in a checkout."""
    try:
        candidate = Path(str(files("slawatch.defaults").joinpath("contract.yaml")))
        if candidate.is_file():
            return candidate
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "config" / "contract.yaml"
