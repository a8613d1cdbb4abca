"""The command line and environment of `python -m gateway`, made from `config.OPTIONS` and `config.Settings`.

A bad value, on the command line or in an environment variable, is a usage error (exit 2) naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from gateway.config import OPTIONS, Option, Settings

BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}

_FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def _boolean(text: str) -> bool:
    try:
        return BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"not a boolean: {text!r} (true or false)") from None


def _converter(field_name: str) -> Callable[[str], Any]:
    """The type a Settings field takes from a string (its annotation, with `| None` dropped)."""
    annotation = str(_FIELDS[field_name].type)
    for name, convert in (("int", int), ("float", float), ("bool", _boolean)):
        if annotation.startswith(name):
            return convert
    return str


class _Parser(argparse.ArgumentParser):
    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        # argparse only says "invalid _boolean value"; name the type the way a user reads it.
        if action.type is _boolean:
            try:
                return _boolean(arg_string)
            except ValueError as exc:
                raise argparse.ArgumentError(action, str(exc)) from None
        return super()._get_value(action, arg_string)


def build_parser(environ: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; defaults come from the environment where set. A bad environment value is a usage
    error naming the variable."""
    environ = dict(os.environ) if environ is None else environ
    parser = _Parser(
        prog="python -m gateway",
        description="gRPC gateway for OpenStack Glance images (glance.gateway.v1.ImageService). Every option "
        "can also be set by its environment variable; the command line wins.",
    )
    for option in OPTIONS:
        convert = _converter(option.field)
        default = _FIELDS[option.field].default
        if option.env in environ:
            default = _from_environment(parser, option, convert, environ[option.env])
        parser.add_argument(
            option.flag,
            dest=option.field,
            type=convert,
            default=default,
            choices=option.choices,
            help=f"{option.help} (env {option.env}, default %(default)s)",
        )
    return parser


def _from_environment(
    parser: argparse.ArgumentParser, option: Option, convert: Callable[[str], Any], text: str
) -> Any:
    try:
        value = convert(text)
    except ValueError:
        parser.error(f"environment variable {option.env}={text!r} is not a valid {option.flag} value")
    if option.choices and value not in option.choices:
        parser.error(f"environment variable {option.env}={text!r}: choose from {', '.join(option.choices)}")
    return value


def parse_settings(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        return Settings(**vars(args))
    except ValueError as exc:
        parser.error(str(exc))
