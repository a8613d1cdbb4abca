"""The metadata commands of `glance-grpc`: list, show, update, delete, tags, members, stores, deactivate,
reactivate, usage, import and watch. Each takes the parsed arguments and a `gateway.client.Client` and returns
what to print (or None). The data transfers (upload, download, stage) are in `transfer.py`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.cli.output import Record, Result, Rows
from gateway.client import Client

# (heading, key) pairs: `openstack image list` and `openstack image list --long`.
LIST_COLUMNS = (("ID", "id"), ("Name", "name"), ("Status", "status"))
LONG_COLUMNS = (
    ("ID", "id"), ("Name", "name"), ("Disk Format", "disk_format"), ("Container Format", "container_format"),
    ("Size", "size"), ("Checksum", "checksum"), ("Status", "status"), ("Visibility", "visibility"),
    ("Protected", "protected"), ("Project", "owner"), ("Tags", "tags"),
)  # fmt: skip
STORE_COLUMNS = (
    ("ID", "id"),
    ("Description", "description"),
    ("Default", "is_default"),
    ("Read Only", "read_only"),
)
MEMBER_COLUMNS = (("Image ID", "image_id"), ("Member ID", "member_id"), ("Status", "status"))
# ListImages sorts by create_time / update_time; users know Glance's created_at / updated_at.
SORT_ALIASES = {"created_at": "create_time", "updated_at": "update_time"}


class CommandError(Exception):
    """A failure the command explains itself (exit 1, one line on stderr)."""


Command = Callable[[argparse.Namespace, Client], Result | None]


def image_record(meta: Mapping[str, Any]) -> Record:
    """An image as `openstack image show` shows it: every field, sorted by name."""
    return Record(sorted(meta.items()))


def rows(columns: Iterable[tuple[str, str]], items: Iterable[Mapping[str, Any]]) -> Rows:
    columns = list(columns)
    headings = [heading for heading, _ in columns]
    return Rows(headings, [[item.get(key) for _, key in columns] for item in items])


def read_properties(path: str) -> dict[str, str]:
    """A property file: a JSON object, or KEY=VALUE lines (blank lines and # comments skipped)."""
    raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    if raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path}: not a JSON object: {exc}") from None
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    properties = {}
    for number, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        properties[key.strip()] = value.strip()
    return properties


def properties_of(args: argparse.Namespace) -> dict[str, str]:
    """--property-file first, then each --property (which wins)."""
    properties = read_properties(args.property_file) if args.property_file else {}
    properties.update(dict(args.property))
    return properties


def metadata_of(args: argparse.Namespace) -> dict[str, Any]:
    """The metadata options of upload and update as the client's metadata keys (unset ones left out)."""
    meta: dict[str, Any] = {
        "disk_format": args.disk_format,
        "container_format": args.container_format,
        "min_disk": args.min_disk,
        "min_ram": args.min_ram,
        "visibility": args.visibility,
        "protected": args.protected,
        "hidden": args.hidden,
    }
    meta = {key: value for key, value in meta.items() if value is not None}
    properties = properties_of(args)
    if properties:
        meta["properties"] = properties
    return meta


def list_images(args: argparse.Namespace, client: Client) -> Result:
    filters: dict[str, Any] = {
        "name": args.name,
        "status": args.status,
        "owner": args.owner,
        "visibility": args.visibility,
        "disk_format": args.disk_format,
        "container_format": args.container_format,
        "member_status": args.member_status,
        "tags": args.tag or None,
        "properties": dict(args.property) or None,
    }
    if args.sort:
        key, _, direction = args.sort.partition(":")
        filters["sort_key"] = SORT_ALIASES.get(key, key)
        if direction:
            filters["sort_dir"] = direction
    if args.limit is not None:
        if args.limit < 0:
            raise CommandError("--limit must be 0 or more")
        filters["page_size"] = min(max(args.limit, 1), 500)
    filters = {key: value for key, value in filters.items() if value is not None}
    images = client.get_images_detailed(**filters) if args.long else client.get_images(**filters)
    if args.limit is not None:
        images = itertools.islice(images, args.limit)
    return rows(LONG_COLUMNS if args.long else LIST_COLUMNS, images)


def show(args: argparse.Namespace, client: Client) -> Result:
    return image_record(client.get_image_meta(args.image))


def update(args: argparse.Namespace, client: Client) -> Result:
    meta = metadata_of(args)
    if args.name is not None:
        meta["name"] = args.name
    for key in args.remove_property:
        meta.setdefault("properties", {})[key] = None  # the client removes a property set to None
    if not meta and not args.tag:
        raise CommandError("nothing to update: give --name, --property, --tag, ...")
    image = client.update_image(args.image, meta) if meta else None
    for tag in args.tag:
        client.add_tag(args.image, tag)
    if image is None or args.tag:
        image = client.get_image_meta(args.image)
    return image_record(image)


def delete(args: argparse.Namespace, client: Client) -> None:
    for image_id in args.images:
        client.delete_image(image_id)


def tag(args: argparse.Namespace, client: Client) -> None:
    if args.action == "add":
        client.add_tag(args.image, args.tag)
    else:
        client.remove_tag(args.image, args.tag)


def member(args: argparse.Namespace, client: Client) -> Result | None:
    action = args.member_command
    if action == "list":
        return rows(MEMBER_COLUMNS, client.get_members(args.image))
    if action == "delete":
        client.delete_member(args.image, args.member)
        return None
    if action == "create":
        found = client.add_member(args.image, args.member)
    elif action == "set":
        found = client.update_member(args.image, args.member, args.status)
    else:
        found = client.get_member(args.image, args.member)
    return Record(list(found.items()))


def stores(args: argparse.Namespace, client: Client) -> Result:
    return rows(STORE_COLUMNS, client.get_stores())


def deactivate(args: argparse.Namespace, client: Client) -> None:
    client.deactivate_image(args.image)


def reactivate(args: argparse.Namespace, client: Client) -> None:
    client.reactivate_image(args.image)


def usage(args: argparse.Namespace, client: Client) -> Result:
    quotas = client.get_quota_usage()
    return Rows(
        ["Resource", "Usage", "Limit"],
        [[name, quota["usage"], quota["limit"]] for name, quota in sorted(quotas.items())],
    )


def watch(args: argparse.Namespace, client: Client) -> None:
    """Follows the import, one line per change on stdout; exit 1 when it failed."""
    state = ""
    for step in client.watch_import(args.image):
        state = step["state"] or "none"
        line = f"{step['image']['status']} {state}"
        if step["importing_to_stores"]:
            line += " importing-to=" + ",".join(step["importing_to_stores"])
        if step["failed_stores"]:
            line += " failed=" + ",".join(step["failed_stores"])
        print(line, flush=True)
    if state == "failed":
        raise CommandError(f"the import of image {args.image} failed")


def import_image(args: argparse.Namespace, client: Client) -> None:
    options: dict[str, Any] = {"stores": args.store, "all_stores": args.all_stores}
    if args.uri:
        options["uri"] = args.uri
    client.import_image(args.image, args.method, **options)
    if args.wait:
        watch(args, client)
