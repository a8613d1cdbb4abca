"""gateway.cli.output: cliff-like table/json/yaml/value output and column selection."""

from __future__ import annotations

import json

import pytest
import yaml

from gateway.cli.output import OutputError, Record, Rows, render, text, to_yaml

IMAGE = Record(
    [
        ("id", "5e1c"),
        ("name", "cirros"),
        ("size", 13),
        ("properties", {"os_distro": "cirros", "arch": "x86_64"}),
        ("tags", ["a", "b"]),
        ("protected", False),
        ("virtual_size", None),
    ]
)
LISTING = Rows(["ID", "Name", "Disk Format"], [["1", "one", "raw"], ["2", "two words", "qcow2"]])


def test_a_record_as_a_field_value_table() -> None:
    assert render(IMAGE, "table", ["id", "properties", "tags"]).splitlines() == [
        "+------------+-----------------------------------+",
        "| Field      | Value                             |",
        "+------------+-----------------------------------+",
        "| id         | 5e1c                              |",
        "| properties | arch='x86_64', os_distro='cirros' |",
        "| tags       | a, b                              |",
        "+------------+-----------------------------------+",
    ]


def test_rows_as_a_table_and_as_values() -> None:
    assert render(LISTING, "table").splitlines()[1] == "| ID | Name      | Disk Format |"
    assert render(LISTING, "value", ["name", "ID"]) == "one 1\ntwo words 2"
    assert render(Rows(["ID"], []), "value") == ""


def test_json_keeps_types_and_columns_match_loosely() -> None:
    assert json.loads(render(IMAGE, "json", ["ID", "Size", "Tags"])) == {
        "id": "5e1c",
        "size": 13,
        "tags": ["a", "b"],
    }
    assert json.loads(render(LISTING, "json", ["disk_format", "disk-format"])) == [
        {"Disk Format": "raw"},
        {"Disk Format": "qcow2"},
    ]


def test_unknown_columns_and_formats_are_usage_errors() -> None:
    with pytest.raises(OutputError, match="no column 'nope'; columns: ID, Name, Disk Format"):
        render(LISTING, "json", ["nope"])
    with pytest.raises(OutputError, match="unknown format"):
        render(LISTING, "xml")


@pytest.mark.parametrize(
    "value",
    [
        {"id": "x", "properties": {"a": "1", "b: c": "- d", "empty": ""}, "tags": [], "size": None},
        [{"ID": "1", "Name": "yes"}, {"ID": "2", "Name": "#not a comment"}],
        {"nested": [[1, 2], {"k": [True, False, 1.5]}], "quote": 'it\'s "quoted"', "multi": "a\nb"},
        {"looks": ["007", "1e3", "null", "~", "true", " padded ", "é ü"], "empty": {}},
    ],
)
def test_yaml_reads_back_as_the_same_data(value: object) -> None:
    assert yaml.safe_load(to_yaml(value)) == value


def test_text_of_cells() -> None:
    assert (text(None), text(True), text([1, "b"]), text({"b": 2, "a": 1})) == (
        "",
        "True",
        "1, b",
        "a='1', b='2'",
    )
