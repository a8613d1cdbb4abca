"""The data commands of `glance-grpc`: download (verified, resumable, via PATH.part), upload and stage.

download --file PATH writes PATH.part and renames it to PATH only once the hash of the whole file matches the
image's (os_hash_value, or the MD5 checksum of an image without one). A .part left by an earlier run is
re-hashed and the download goes on from its length; a mismatch keeps the .part and fails. Without --file the
data goes to stdout, verified by the gateway, and never to a terminal.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from gateway.cli.commands import CommandError, image_record, metadata_of
from gateway.cli.output import Result
from gateway.cli.progress import Progress, is_terminal
from gateway.client import Client, ServiceUnavailable

BLOCK = 1024 * 1024
# Fresh GetImage calls after the client's own resumes gave up (UNAVAILABLE) or a stream ended short.
RETRIES = 3


def _progress(args: argparse.Namespace, description: str, total: int | None, initial: int = 0) -> Progress:
    return Progress(description, total, initial=initial, enabled=False if args.no_progress else None)


def _stream(client: Client, image_id: str, offset: int) -> Iterator[bytes]:
    """The image's data from `offset` on, unverified (the caller hashes the whole file itself)."""
    _, chunks = client.get_image(image_id, offset=offset, verify="none")
    yield from chunks


def _rehash(part: Path, hasher: Any) -> int:
    """Feeds an existing .part to the hasher; returns its length."""
    length = 0
    with part.open("rb") as existing:
        while block := existing.read(BLOCK):
            hasher.update(block)
            length += len(block)
    return length


def download_to_file(args: argparse.Namespace, client: Client) -> None:
    path = Path(args.file)
    part = path.with_name(path.name + ".part")
    meta = client.get_image_meta(args.image)
    size: int | None = meta.get("size")
    algo = meta.get("os_hash_algo") or ("md5" if meta.get("checksum") else "")
    expected = meta.get("os_hash_value") if meta.get("os_hash_algo") else meta.get("checksum")
    if size is None or not algo or not expected:
        raise CommandError(f"image {meta['id']} has no data to download (status {meta.get('status')})")
    hasher = hashlib.new(algo)
    offset = _rehash(part, hasher) if part.exists() else 0
    if offset > size:
        raise CommandError(f"{part} is longer than the image ({offset} > {size} bytes): remove it and retry")
    if offset:
        print(f"glance-grpc: resuming {part} at {offset} of {size} bytes", file=sys.stderr, flush=True)
    attempts = 0
    with part.open("ab") as out, _progress(args, path.name, size, offset) as bar:
        while offset < size:
            try:
                for chunk in _stream(client, meta["id"], offset):
                    out.write(chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
                    bar.update(len(chunk))
            except ServiceUnavailable:
                # The client resumed as often as it would; a fresh call goes on from what is on disk.
                attempts += 1
                if attempts > RETRIES:
                    raise
                continue
            if offset < size:
                attempts += 1
                if attempts > RETRIES:
                    raise CommandError(f"image {meta['id']}: the data ended at {offset} of {size} bytes")
        out.flush()
        os.fsync(out.fileno())
    if offset != size:
        raise CommandError(f"{part} has {offset} bytes, the image {size}: remove it and retry")
    digest = hasher.hexdigest()
    if digest != expected:
        raise CommandError(
            f"{part} does not match the image's {algo} (got {digest[:16]}..., expected {expected[:16]}...);"
            f" kept {part}: remove it and retry"
        )
    os.replace(part, path)


def download(args: argparse.Namespace, client: Client) -> None:
    if args.file is not None and args.file != "-":
        download_to_file(args, client)
        return
    if is_terminal(sys.stdout):
        raise CommandError(
            "refusing to write image data to a terminal: use --file PATH or redirect the output"
        )
    out = sys.stdout.buffer
    meta, chunks = client.get_image(args.image)  # verified by the gateway as it streams
    with _progress(args, meta.get("name") or meta["id"], meta.get("size")) as bar:
        for chunk in chunks:
            out.write(chunk)
            bar.update(len(chunk))
    out.flush()


def _open_data(path: str) -> tuple[BinaryIO, int | None]:
    """The data source of upload/stage and its size when known (a regular file)."""
    if path == "-":
        if is_terminal(sys.stdin):
            raise CommandError("refusing to read image data from a terminal: use --file PATH or a pipe")
        source: BinaryIO = sys.stdin.buffer
    else:
        source = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    info = os.fstat(source.fileno())
    return source, info.st_size if stat.S_ISREG(info.st_mode) else None


def _chunks(source: BinaryIO, bar: Progress) -> Iterator[bytes]:
    while block := source.read(BLOCK):
        bar.update(len(block))
        yield block


def upload(args: argparse.Namespace, client: Client) -> Result:
    meta = metadata_of(args)
    meta["name"] = args.name
    for key in ("id", "store"):
        if getattr(args, key):
            meta[key] = getattr(args, key)
    if args.tag:
        meta["tags"] = args.tag
    if args.file is None:
        return image_record(client.add_image(meta))  # a queued image: no data yet
    # The OpenStack CLI's defaults for an image with data.
    meta.setdefault("disk_format", "raw")
    meta.setdefault("container_format", "bare")
    source, size = _open_data(args.file)
    with source, _progress(args, args.name, size) as bar:
        if size is not None:
            meta["size"] = size  # the gateway then refuses a stream of any other length
        # The client streams the chunks and ends with the SHA-512 it computed (UploadFinish).
        image = client.add_image(meta, _chunks(source, bar))
    return image_record(image)


def stage(args: argparse.Namespace, client: Client) -> Result:
    source, size = _open_data(args.file)
    with source, _progress(args, args.image, size) as bar:
        image = client.stage_image_data(args.image, _chunks(source, bar), size)
    return image_record(image)
