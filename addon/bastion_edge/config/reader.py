"""Reading rules.yaml: YAML in, plain values out, every error with its location and line.

The one way to read a section: a function `read(reader, value, path) -> T` built from
`Reader`'s checks, declared in a `Section` (the top-level key, what it sets). Messages name
the YAML location (`models."gpt-4o": expected a string ... (line 4)`) so `bastion-edge
check` and the hot reloader can say exactly what is wrong. Duplicate keys are refused:
YAML keeps the last one, which silently replaced a whole section.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

Path_ = tuple[str | int, ...]
T = TypeVar("T")
# libyaml's parser when PyYAML was built with it (its wheels are): the same nodes, marks
# and errors, at a tenth of the pure-Python parser's CPU (every start reads the rules).
SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RulesError(ValueError):
    """An invalid rules file. `location` is the YAML path, `line` 1-based or None."""

    def __init__(self, location: str, message: str, line: int | None = None) -> None:
        self.location = location
        self.line = line
        where = f" (line {line})" if line else ""
        super().__init__(f"{location}: {message}{where}" if location else f"{message}{where}")


def format_location(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML document: the plain tree and the line of every value and key."""

    tree: object
    lines: Mapping[Path_, int]  # path -> line of its value
    key_lines: Mapping[Path_, int]  # path -> line of its key (mapping entries only)


def read_yaml(data: bytes) -> Document:
    """Parse UTF-8 YAML once, refusing duplicate keys; RulesError on anything else."""
    try:
        loader = SafeLoader(data.decode("utf-8"))
        try:
            node = loader.get_single_node()
            lines: dict[Path_, int] = {}
            key_lines: dict[Path_, int] = {}
            _index(node, (), lines, key_lines)
            tree = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError as e:
        raise RulesError("", f"not UTF-8 text: {e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RulesError("", f"invalid YAML: {getattr(e, 'problem', e)}", line) from e
    return Document(tree, lines, key_lines)


def _index(node: yaml.Node | None, path: Path_, lines: dict[Path_, int],
           key_lines: dict[Path_, int], inside: frozenset[int] = frozenset()) -> None:
    if node is None:
        return
    if id(node) in inside:  # an alias of a node that contains it
        raise RulesError(format_location(path), "a YAML alias refers to a node containing "
                         "it (a recursive structure)", node.start_mark.line + 1)
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        inside = inside | {id(node)}
        for key_node, value_node in node.value:
            entry = (*path, str(key_node.value))
            line = key_node.start_mark.line + 1
            if entry in key_lines and isinstance(key_node, yaml.ScalarNode):
                raise RulesError(format_location(entry), f"duplicate key (first on line "
                                 f"{key_lines[entry]}); YAML would keep only the last one, "
                                 "so merge the two", line)
            key_lines[entry] = line
            _index(value_node, entry, lines, key_lines, inside)
    elif isinstance(node, yaml.SequenceNode):
        inside = inside | {id(node)}
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines, key_lines, inside)


class Reader:
    """The checks every section is read with; each failure is a RulesError with the line."""

    def __init__(self, lines: Mapping[Path_, int],
                 key_lines: Mapping[Path_, int] | None = None) -> None:
        self.lines = lines
        self.key_lines = key_lines or {}

    def fail(self, path: Path_, message: str) -> RulesError:
        return RulesError(format_location(path), message, self.lines.get(path))

    def mapping(self, value: object, path: Path_) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "expected a mapping")
        return value

    def only_keys(self, value: Mapping[str, Any], path: Path_, allowed: Sequence[str]) -> None:
        for key in value:
            if key not in allowed:
                where = (*path, str(key))
                raise RulesError(format_location(where),
                                 f"unknown key; expected one of {', '.join(allowed)}",
                                 self.key_lines.get(where, self.lines.get(where)))

    def string(self, value: object, path: Path_, what: str = "a string") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected {what}")
        return value

    def boolean(self, value: object, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false")
        return value

    def number(self, value: object, path: Path_) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(path, "expected a positive number")
        return float(value)

    def positive_integer(self, value: object, path: Path_) -> int:
        """A whole number >= 1; 0.5 or 2.0 are refused, never truncated."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(path, "expected a positive integer")
        return value

    def choice(self, value: object, path: Path_, options: Sequence[T]) -> T:
        for option in options:
            if value == option:
                return option
        raise self.fail(path, f"expected one of {', '.join(map(str, options))}")

    def strings(self, value: object, path: Path_) -> tuple[str, ...]:
        """A string or a list of strings."""
        items = value if isinstance(value, list) else [value]
        return tuple(self.string(v, (*path, i) if isinstance(value, list) else path)
                     for i, v in enumerate(items))

    def string_map(self, value: object, path: Path_) -> Mapping[str, str]:
        section = self.mapping(value, path)
        return {str(k): self.string(v, (*path, str(k))) for k, v in section.items()}

    def env_name(self, value: object, path: Path_) -> str:
        name = self.string(value, path, "an environment variable name")
        if not ENV_NAME.fullmatch(name):
            raise self.fail(path, f"expected an environment variable name, got {name!r}")
        return name


@dataclass(frozen=True, slots=True)
class Section:
    """One top-level key of rules.yaml: how it is read and the snapshot fields it sets.

    `read` returns {field name: value}; `null_is_default` reads `key: null` (or a bare
    `key:`) as "not given" instead of refusing it."""

    key: str
    read: Callable[[Reader, object, Path_], Mapping[str, object]]
    null_is_default: bool = False


def field(key: str, read: Callable[[Reader, object, Path_], object], *,
          name: str | None = None, null_is_default: bool = False) -> Section:
    """A section whose value is one snapshot field (`name`, by default the key)."""
    return Section(key, lambda r, v, p: {name or key: read(r, v, p)}, null_is_default)


def read_sections(reader: Reader, tree: object, sections: Sequence[Section]) -> dict[str, Any]:
    """Read the top-level mapping: every key must be a declared section."""
    top = reader.mapping(tree, ())
    reader.only_keys(top, (), [s.key for s in sections])
    found: dict[str, Any] = {}
    for section in sections:
        if section.key not in top or (section.null_is_default and top[section.key] is None):
            continue
        found.update(section.read(reader, top[section.key], (section.key,)))
    return found
