"""The command line of `glance-grpc`: global options (from the environment like the OpenStack CLI), the
subcommands and their options (the OpenStack CLI's names where one exists).

Environment: OS_AUTH_TOKEN (the Keystone token, `--os-auth-token`), GLANCE_GRPC_ADDRESS (the gateway's
host:port, `--address`), GLANCE_GRPC_TLS ("1" for TLS, `--tls`), OS_CACERT (`--os-cacert`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from gateway.cli.output import FORMATS

DEFAULT_ADDRESS = "localhost:50051"
VISIBILITIES = ("public", "private", "shared", "community")
STATUSES = ("queued", "saving", "active", "killed", "deleted", "pending_delete", "deactivated", "uploading",
            "importing")  # fmt: skip
SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at")


def key_value(text: str) -> tuple[str, str]:
    """`--property k=v` → (k, v); the value may be empty or contain "="."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def host_port(address: str) -> tuple[str, int]:
    """ "host:port" (or "[v6]:port") → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the gateway address must be host:port, not {address!r}")
    return host.strip("[]"), int(port)


def _formatting(parser: argparse.ArgumentParser, default: str = "table") -> None:
    group = parser.add_argument_group("output formatters")
    group.add_argument("-f", "--format", choices=FORMATS, default=default, help="the output format")
    group.add_argument(
        "-c", "--column", action="append", default=[], metavar="COLUMN", help="only this column (repeatable)"
    )


def _visibility(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    for name in VISIBILITIES:
        group.add_argument(
            f"--{name}", dest="visibility", action="store_const", const=name, help=f"make the image {name}"
        )


def _metadata(parser: argparse.ArgumentParser) -> None:
    """The image metadata options shared by `upload` and `update`."""
    parser.add_argument("--disk-format", help="disk format, e.g. raw, qcow2")
    parser.add_argument("--container-format", help="container format, e.g. bare")
    parser.add_argument("--min-disk", type=int, metavar="GIB", help="minimum disk size to boot, in GiB")
    parser.add_argument("--min-ram", type=int, metavar="MIB", help="minimum RAM to boot, in MiB")
    parser.add_argument(
        "--property", type=key_value, action="append", default=[], metavar="KEY=VALUE",
        help="a custom property (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--property-file", metavar="PATH", help="properties from a file (a JSON object or KEY=VALUE lines)"
    )
    _visibility(parser)
    protection = parser.add_mutually_exclusive_group()
    protection.add_argument("--protected", dest="protected", action="store_const", const=True)
    protection.add_argument("--unprotected", dest="protected", action="store_const", const=False)
    hiding = parser.add_mutually_exclusive_group()
    hiding.add_argument("--hidden", dest="hidden", action="store_const", const=True, help="unlisted")
    hiding.add_argument("--unhidden", dest="hidden", action="store_const", const=False)


def _image_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="list images (all pages)")
    _formatting(p)
    p.add_argument("--long", action="store_true", help="more columns")
    p.add_argument("--name")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--owner", "--project", dest="owner", metavar="PROJECT")
    p.add_argument("--tag", action="append", default=[], help="only images with this tag (repeatable)")
    p.add_argument("--property", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--disk-format")
    p.add_argument("--container-format")
    p.add_argument("--member-status", choices=("pending", "accepted", "rejected", "all"))
    p.add_argument("--sort", metavar="KEY[:asc|desc]", help=f"sort key: {', '.join(SORT_KEYS)}")
    p.add_argument("--limit", type=int, metavar="N", help="at most N images")
    _visibility(p)

    p = sub.add_parser("show", help="show an image's metadata")
    _formatting(p)
    p.add_argument("image", metavar="IMAGE", help="image id or URI")

    p = sub.add_parser("download", help="download an image's data (verified, resumable)")
    p.add_argument("image", metavar="IMAGE", help="image id or URI")
    p.add_argument("--file", metavar="PATH", help="write here (via PATH.part); default: stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("upload", aliases=["create"], help="create an image, with data from --file or stdin")
    _formatting(p)
    p.add_argument("--name", required=True)
    p.add_argument("--id", help="the new image's id (a UUID)")
    p.add_argument("--file", metavar="PATH", help="the data ('-' for stdin); none: a queued image")
    p.add_argument("--store", help="the store to put the data in")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _metadata(p)

    p = sub.add_parser("update", aliases=["set"], help="change an image's metadata")
    _formatting(p)
    p.add_argument("image", metavar="IMAGE", help="image id")
    p.add_argument("--name")
    p.add_argument("--remove-property", action="append", default=[], metavar="KEY")
    p.add_argument("--tag", action="append", default=[], help="add this tag (repeatable)")
    _metadata(p)

    p = sub.add_parser("delete", help="delete images")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image ids")


def _other_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tag", help="add or remove one tag")
    p.add_argument("action", choices=("add", "remove"))
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("tag", metavar="TAG")

    p = sub.add_parser("member", help="share an image with projects")
    members = p.add_subparsers(dest="member_command", required=True, metavar="ACTION")
    for action, helptext in (("list", "list the members"), ("show", "show one member"),
                             ("create", "share with a project"), ("set", "accept or reject"),
                             ("delete", "stop sharing with a project")):  # fmt: skip
        q = members.add_parser(action, help=helptext)
        q.add_argument("image", metavar="IMAGE")
        if action != "list":
            q.add_argument("member", metavar="PROJECT")
        if action == "set":
            q.add_argument("--status", required=True, choices=("accepted", "rejected", "pending"))
        if action != "delete":
            _formatting(q)

    p = sub.add_parser("stores", help="list the stores")
    _formatting(p)
    for name, helptext in (("deactivate", "make an image's data unavailable"),
                           ("reactivate", "make it available again")):  # fmt: skip
        p = sub.add_parser(name, help=helptext)
        p.add_argument("image", metavar="IMAGE")
    p = sub.add_parser("usage", help="the project's quota usage")
    _formatting(p)

    p = sub.add_parser("stage", help="stage data for a queued image (interoperable import)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--file", metavar="PATH", required=True, help="the data ('-' for stdin)")
    p.add_argument("--no-progress", action="store_true")
    _formatting(p)
    p = sub.add_parser("import", help="start an import")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument(
        "--method", default="glance-direct", choices=("glance-direct", "web-download", "copy-image")
    )
    p.add_argument("--uri", default="", help="for web-download")
    p.add_argument("--store", action="append", default=[], help="import into this store (repeatable)")
    p.add_argument("--all-stores", action="store_true")
    p.add_argument("--wait", action="store_true", help="watch the import until it ends")
    p = sub.add_parser("watch", help="follow an image's import until it ends")
    p.add_argument("image", metavar="IMAGE")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="glance-grpc",
        description="Glance images through glance-grpc-gateway.",
        epilog="Environment: OS_AUTH_TOKEN, GLANCE_GRPC_ADDRESS (host:port), GLANCE_GRPC_TLS, OS_CACERT.",
    )
    parser.add_argument(
        "--address", default=environ.get("GLANCE_GRPC_ADDRESS") or DEFAULT_ADDRESS,
        help="the gateway's host:port (env GLANCE_GRPC_ADDRESS; default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--os-auth-token", default=environ.get("OS_AUTH_TOKEN") or None, metavar="TOKEN",
        help="Keystone token (env OS_AUTH_TOKEN)",
    )  # fmt: skip
    parser.add_argument(
        "--tls", action="store_true", default=environ.get("GLANCE_GRPC_TLS", "").lower() in ("1", "true"),
        help="connect with TLS (env GLANCE_GRPC_TLS=1)",
    )  # fmt: skip
    parser.add_argument(
        "--os-cacert", default=environ.get("OS_CACERT") or None, metavar="PEM",
        help="CA bundle for TLS (env OS_CACERT)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="call deadline")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _image_commands(sub)
    _other_commands(sub)
    return parser
