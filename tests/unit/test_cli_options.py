"""gateway.cli.options: the OpenStack CLI's option names, and defaults from the environment."""

from __future__ import annotations

import argparse

import pytest

from gateway.cli.options import build_parser, host_port, key_value


def test_environment_gives_the_address_and_token_and_flags_override_it() -> None:
    environ = {"GLANCE_GRPC_ADDRESS": "gw.example:6000", "OS_AUTH_TOKEN": "tok"}
    args = build_parser(environ).parse_args(["list"])
    assert (args.address, args.os_auth_token, args.tls) == ("gw.example:6000", "tok", False)
    args = build_parser(environ).parse_args(["--address", "other:1", "--os-auth-token", "t2", "list"])
    assert (args.address, args.os_auth_token) == ("other:1", "t2")
    args = build_parser({}).parse_args(["show", "x"])
    assert (args.address, args.os_auth_token) == ("localhost:50051", None)


def test_upload_takes_the_openstack_option_names() -> None:
    args = build_parser({}).parse_args(
        ["upload", "--name", "n", "--disk-format", "qcow2", "--container-format", "bare", "--file", "f.img",
         "--property", "a=b=c", "--property", "empty=", "--public", "--tag", "t", "-c", "id", "-f", "json"]
    )  # fmt: skip
    assert (args.name, args.disk_format, args.container_format, args.file) == ("n", "qcow2", "bare", "f.img")
    assert args.property == [("a", "b=c"), ("empty", "")]
    assert (args.visibility, args.tag, args.column, args.format) == ("public", ["t"], ["id"], "json")


def test_visibilities_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser({}).parse_args(["upload", "--name", "n", "--public", "--private"])


def test_key_value_and_host_port() -> None:
    assert key_value(" k =v") == ("k", "v")
    with pytest.raises(argparse.ArgumentTypeError):
        key_value("no-equals")
    assert host_port("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert host_port("[::1]:7") == ("::1", 7)
    for bad in ("nohost", ":1", "h:0", "h:99999", "h:x"):
        with pytest.raises(ValueError):
            host_port(bad)
