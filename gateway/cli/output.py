"""Output formats like cliff's (the OpenStack CLI's): `--format table|json|yaml|value` and `--column/-c`.

A command returns either one record (`show`: a field/value table) or rows (`list`: one line per row). Column
names are the headings a user sees; `-c` matches them case-insensitively, with "_" and " " alike, so
`-c ID -c disk_format` works. Without PyYAML at run time the YAML is written here (the data is only strings,
numbers, booleans, None, lists and dicts).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

FORMATS = ("table", "json", "yaml", "value")


class OutputError(ValueError):
    """A usage error in the output options (an unknown column)."""


@dataclass(frozen=True)
class Record:
    """One object: its fields in order (`show`)."""

    fields: Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Rows:
    """A list of objects with the same columns (`list`)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


Result = Record | Rows


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def _pick(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Indexes of the wanted columns, in the order asked for; all of them when none are asked for."""
    if not wanted:
        return list(range(len(names)))
    by_name = {_norm(name): i for i, name in enumerate(names)}
    picked = []
    for want in wanted:
        if _norm(want) not in by_name:
            raise OutputError(f"no column {want!r}; columns: {', '.join(names)}")
        picked.append(by_name[_norm(want)])
    return picked


def select(result: Result, columns: Sequence[str]) -> Result:
    if isinstance(result, Record):
        names = [name for name, _ in result.fields]
        return Record([result.fields[i] for i in _pick(names, columns)])
    picked = _pick(result.columns, columns)
    return Rows([result.columns[i] for i in picked], [[row[i] for i in picked] for row in result.rows])


def text(value: Any) -> str:
    """A value as one cell of text: dicts as k='v' pairs (like `openstack image show`), lists comma-joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}='{v}'" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(text(item) for item in value)
    return str(value)


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [[cell.replace("\n", " ") for cell in row] for row in rows]
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(columns)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([rule, line(columns), rule, *(line(row) for row in rows), rule])


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid YAML double-quoted scalar; plain text stays plain when YAML reads it back.
    string = str(value)
    plain = (
        string
        and string == string.strip()
        and string.lower() not in ("null", "true", "false", "yes", "no", "on", "off", "~")
        and string[0] not in "-?:,[]{}#&*!|>'\"%@`0123456789.+"
        and ": " not in string
        and " #" not in string
        and string.isprintable()
    )
    return string if plain else json.dumps(string, ensure_ascii=False)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON-like data."""
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            return pad + "{}"
        out = []
        for key, item in value.items():
            head = f"{pad}{_yaml_scalar(str(key))}:"
            if isinstance(item, Mapping | list) and item:
                out.append(head + "\n" + to_yaml(item, indent + 2))
            else:
                out.append(f"{head} {to_yaml(item).strip()}")
        return "\n".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]"
        out = []
        for item in value:
            if isinstance(item, Mapping | list) and item:
                nested = to_yaml(item, indent + 2)
                out.append(f"{pad}- {nested[indent + 2 :]}")
            else:
                out.append(f"{pad}- {to_yaml(item).strip()}")
        return "\n".join(out)
    return pad + _yaml_scalar(value)


def render(result: Result, fmt: str, columns: Sequence[str] = ()) -> str:
    """The result as text in the format, without a trailing newline ("" for an empty value listing)."""
    result = select(result, columns)
    if isinstance(result, Record):
        if fmt == "table":
            return _table(["Field", "Value"], [[name, text(value)] for name, value in result.fields])
        if fmt == "value":
            return "\n".join(text(value) for _, value in result.fields)
        data: Any = dict(result.fields)
    else:
        if fmt == "table":
            return _table(result.columns, [[text(cell) for cell in row] for row in result.rows])
        if fmt == "value":
            return "\n".join(" ".join(text(cell) for cell in row) for row in result.rows)
        data = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        return to_yaml(data)
    raise OutputError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")


def emit(result: Result, fmt: str, columns: Sequence[str], out: TextIO) -> None:
    rendered = render(result, fmt, columns)
    if rendered:
        out.write(rendered + "\n")
    out.flush()
