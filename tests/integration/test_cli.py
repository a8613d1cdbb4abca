"""`glance-grpc` (python -m gateway.cli) as a subprocess against the session gateway and its real Glance.

Every image gets an id chosen here and tracked by `new_image`, so it is deleted (straight in Glance) at
teardown whatever the CLI did.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from localglance import GlanceServer

from .support import (
    KIB,
    MIB,
    GatewayProcess,
    ImageTracker,
    glance_image,
    new_id,
    pseudo_random_chunks,
    sha512_hex,
    unique_name,
)

REPO = Path(__file__).resolve().parents[2]
DATA = b"".join(pseudo_random_chunks(seed=10, total=3 * MIB + 777))
TIMEOUT = 120


class Run:
    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()

    def json(self) -> Any:
        return json.loads(self.stdout)


Cli = Callable[..., Run]


def _env(address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "GLANCE_GRPC_"))}
    env["GLANCE_GRPC_ADDRESS"] = address
    env["PYTHONPATH"] = str(REPO)
    return env


def _command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


@pytest.fixture
def cli(gateway: GatewayProcess) -> Cli:
    """`cli("list", "-f", "json", stdin=b"")`: runs the CLI with GLANCE_GRPC_ADDRESS naming the session
    gateway."""

    def run(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> Run:
        done = subprocess.run(
            _command(args),
            cwd=REPO,
            env=_env(gateway.address) if env is None else env,
            input=stdin,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run


def run_with_terminal(args: Sequence[str], env: dict[str, str], stream: str) -> Run:
    """Runs the CLI with its stderr (stream="stderr") or stdout on a pseudo-terminal; the other one a pipe.
    Returns what the terminal got as that stream's bytes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
    with subprocess.Popen(_command(args), cwd=REPO, env=env, stdin=subprocess.DEVNULL, **pipes) as process:
        os.close(slave)
        seen = bytearray()
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            seen += data
        os.close(master)
        other = process.stdout if stream == "stderr" else process.stderr
        assert other is not None
        rest = other.read()
        returncode = process.wait(timeout=TIMEOUT)
    if stream == "stderr":
        return Run(returncode, rest, bytes(seen))
    return Run(returncode, bytes(seen), rest)


def error_line(run: Run) -> str:
    """The one line a failure prints (and checks it is one line, with no traceback)."""
    assert run.returncode == 1, (run.returncode, run.err)
    # A download that resumes says so first; the failure itself is one line.
    lines = [line for line in run.err.splitlines() if not line.startswith("glance-grpc: resuming ")]
    assert len(lines) == 1, run.err
    assert lines[0].startswith("glance-grpc: error: "), run.err
    assert "Traceback" not in run.err
    return lines[0]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(DATA)
    return path


@pytest.fixture
def uploaded(cli: Cli, new_image: ImageTracker, data_file: Path) -> dict[str, Any]:
    """An image uploaded through the CLI: its `show -f json` output."""
    image_id = new_id()
    new_image.track(image_id)
    run = cli(
        "upload", "--id", image_id, "--name", unique_name("cli"), "--file", str(data_file), "-f", "json"
    )
    assert run.returncode == 0, run.err
    image: dict[str, Any] = run.json()
    return image


def test_upload_with_properties_from_a_file(
    cli: Cli, new_image: ImageTracker, data_file: Path, tmp_path: Path, glance: GlanceServer
) -> None:
    properties = tmp_path / "properties.json"
    properties.write_text(json.dumps({"os_distro": "cirros", "build": 7, "note": "from a file"}))
    image_id, name = new_id(), unique_name("cli")
    new_image.track(image_id)
    run = cli(
        "upload", "--id", image_id, "--name", name, "--disk-format", "raw", "--container-format", "bare",
        "--file", str(data_file), "--property-file", str(properties), "--property", "note=flag wins",
        "--property", "arch=x86_64", "--tag", "a", "--tag", "b", "--public", "--min-ram", "64", "-f", "json",
    )  # fmt: skip
    assert run.returncode == 0, run.err
    assert run.err == ""  # no progress bar: stderr is not a terminal
    image = run.json()
    assert (image["id"], image["name"], image["status"], image["size"]) == (
        image_id,
        name,
        "active",
        len(DATA),
    )
    assert image["os_hash_algo"] == "sha512" and image["os_hash_value"] == sha512_hex(DATA)
    assert image["properties"] == {"os_distro": "cirros", "build": "7", "note": "flag wins", "arch": "x86_64"}
    assert image["tags"] == ["a", "b"] and image["visibility"] == "public" and image["min_ram"] == 64
    stored = glance_image(glance.url, image_id)
    assert stored is not None and stored["os_distro"] == "cirros" and stored["arch"] == "x86_64"
    assert stored["disk_format"] == "raw" and stored["container_format"] == "bare"


def test_upload_from_stdin_and_download_to_stdout(cli: Cli, new_image: ImageTracker) -> None:
    image_id = new_id()
    new_image.track(image_id)
    data = DATA[: 700 * KIB]
    run = cli(
        "upload", "--id", image_id, "--name", unique_name("cli"), "--file", "-", "-f", "json", stdin=data
    )
    assert run.returncode == 0, run.err
    image = run.json()
    assert (image["size"], image["os_hash_value"]) == (len(data), sha512_hex(data))
    assert (image["disk_format"], image["container_format"]) == (
        "raw",
        "bare",
    )  # the OpenStack CLI's defaults
    assert cli("download", image_id, "--file", "-").stdout == data


def test_list_in_every_format(cli: Cli, uploaded: dict[str, Any]) -> None:
    name, image_id = uploaded["name"], uploaded["id"]
    listed = cli("list", "--name", name, "-f", "json")
    assert listed.returncode == 0, listed.err
    assert listed.json() == [{"ID": image_id, "Name": name, "Status": "active"}]

    table = cli("list", "--name", name).out.splitlines()
    assert table[0].startswith("+-") and table[2] == table[0] == table[4]
    assert [cell.strip() for cell in table[1].split("|")[1:-1]] == ["ID", "Name", "Status"]
    assert [cell.strip() for cell in table[3].split("|")[1:-1]] == [image_id, name, "active"]
    assert len(table) == 5

    value = cli("list", "--name", name, "-f", "value", "-c", "ID")
    assert value.out == image_id + "\n"

    long = cli("list", "--long", "--name", name, "-f", "json", "-c", "ID", "-c", "disk_format", "-c", "Size")
    assert long.json() == [{"ID": image_id, "Disk Format": "raw", "Size": len(DATA)}]


def test_show_as_json_yaml_and_values(cli: Cli, uploaded: dict[str, Any]) -> None:
    image_id = uploaded["id"]
    shown = cli("show", image_id, "-f", "yaml")
    assert shown.returncode == 0, shown.err
    assert yaml.safe_load(shown.out) == uploaded
    assert cli("show", uploaded["uri"], "-f", "value", "-c", "name", "-c", "size").out.splitlines() == [
        uploaded["name"],
        str(len(DATA)),
    ]
    table = cli("show", image_id).out
    assert "| id " in table and image_id in table and "| os_hash_value" in table


def test_download_to_a_file(cli: Cli, uploaded: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    run = cli("download", uploaded["id"], "--file", str(target))
    assert run.returncode == 0, run.err
    assert run.err == "" and run.out == ""
    assert target.read_bytes() == DATA
    assert not (tmp_path / "out.img.part").exists()


def test_download_resumes_from_a_partial_file(cli: Cli, uploaded: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    half = len(DATA) // 2 + 11
    (tmp_path / "out.img.part").write_bytes(DATA[:half])
    run = cli("download", uploaded["id"], "--file", str(target))
    assert run.returncode == 0, run.err
    assert f"resuming {tmp_path / 'out.img.part'} at {half} of {len(DATA)} bytes" in run.err
    assert target.read_bytes() == DATA
    assert not (tmp_path / "out.img.part").exists()


def test_a_corrupt_partial_file_is_detected_and_kept(
    cli: Cli, uploaded: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "out.img"
    part = tmp_path / "out.img.part"
    wrong = bytearray(DATA[: len(DATA) // 2])
    wrong[100] ^= 0xFF
    part.write_bytes(wrong)
    run = cli("download", uploaded["id"], "--file", str(target))
    assert run.err.startswith("glance-grpc: resuming ")
    line = error_line(run)
    assert "does not match the image's sha512" in line and str(part) in line
    assert not target.exists()
    kept = part.read_bytes()
    assert len(kept) == len(DATA) and kept[len(wrong) :] == DATA[len(wrong) :]


def test_download_streams_to_a_pipe_and_refuses_a_terminal(
    cli: Cli, gateway: GatewayProcess, uploaded: dict[str, Any]
) -> None:
    piped = cli("download", uploaded["id"])
    assert piped.returncode == 0, piped.err
    assert piped.stdout == DATA

    on_terminal = run_with_terminal(["download", uploaded["id"]], _env(gateway.address), "stdout")
    assert on_terminal.returncode == 1
    assert on_terminal.stdout == b""  # not one byte of image data reached the terminal
    assert "refusing to write image data to a terminal" in error_line(on_terminal)


def test_progress_bars_only_on_a_terminal(
    cli: Cli, gateway: GatewayProcess, new_image: ImageTracker, data_file: Path, tmp_path: Path
) -> None:
    env = _env(gateway.address)
    image_id = new_id()
    new_image.track(image_id)
    upload = [
        "upload",
        "--id",
        image_id,
        "--name",
        unique_name("cli"),
        "--file",
        str(data_file),
        "-f",
        "json",
    ]
    up = run_with_terminal(upload, env, "stderr")
    assert up.returncode == 0, up.err
    assert "100%|" in up.err and "3.00M/3.00M" in up.err and "/s]" in up.err  # bar, size, speed
    assert json.loads(up.stdout)["id"] == image_id

    target = tmp_path / "out.img"
    down = run_with_terminal(["download", image_id, "--file", str(target)], env, "stderr")
    assert down.returncode == 0, down.err
    assert "100%|" in down.err and "out.img" in down.err
    assert target.read_bytes() == DATA

    target.unlink()
    quiet = cli("download", image_id, "--file", str(target))
    assert quiet.returncode == 0 and quiet.stderr == b""
    off = run_with_terminal(["download", image_id, "--file", str(target), "--no-progress"], env, "stderr")
    assert off.returncode == 0 and "%|" not in off.err


def test_update(cli: Cli, new_image: ImageTracker) -> None:
    image = new_image(properties={"distro": "cirros", "kept": "yes"})
    run = cli(
        "update", image.id, "--name", "renamed", "--property", "arch=arm64", "--remove-property", "distro",
        "--tag", "t1", "--protected", "-f", "json",
    )  # fmt: skip
    assert run.returncode == 0, run.err
    changed = run.json()
    assert changed["name"] == "renamed" and changed["protected"] is True and changed["tags"] == ["t1"]
    assert changed["properties"] == {"kept": "yes", "arch": "arm64"}
    assert cli("update", image.id, "--unprotected", "-f", "value", "-c", "protected").out == "False\n"
    nothing = cli("update", image.id)
    assert "nothing to update" in error_line(nothing)


def test_delete_then_show_is_not_found(cli: Cli, uploaded: dict[str, Any]) -> None:
    run = cli("delete", uploaded["id"])
    assert run.returncode == 0, run.err
    assert run.out == "" and run.err == ""
    line = error_line(cli("show", uploaded["id"]))
    assert line.startswith("glance-grpc: error: NOT_FOUND ")


def test_errors_are_one_line(cli: Cli, gateway: GatewayProcess) -> None:
    missing = new_id()
    line = error_line(cli("show", missing))
    # <code> <ErrorInfo reason>: <details> (Glance's request id)
    assert re.fullmatch(
        rf"glance-grpc: error: NOT_FOUND [A-Z_]+: .*{missing}.* \(request id req-[0-9a-f-]{{36}}\)", line
    )
    # The flag overrides the environment; nothing listens on port 1.
    env = _env("127.0.0.1:1")
    assert error_line(cli("list", env=env)).startswith("glance-grpc: error: UNAVAILABLE")
    assert cli("--address", gateway.address, "list", "--limit", "1", env=env).returncode == 0
    bad_column = cli("show", missing, "-c", "nope")
    assert bad_column.returncode == 1  # the call fails before the column is looked at
    usage = cli("list", "-f", "xml")
    assert usage.returncode == 2 and "invalid choice" in usage.err


def test_tags_deactivate_reactivate_stores_and_usage(cli: Cli, uploaded: dict[str, Any]) -> None:
    image_id = uploaded["id"]
    assert cli("tag", "add", image_id, "blue").returncode == 0
    assert cli("show", image_id, "-f", "json").json()["tags"] == ["blue"]
    assert cli("tag", "remove", image_id, "blue").returncode == 0
    assert "NOT_FOUND" in error_line(cli("tag", "remove", image_id, "blue"))

    assert cli("deactivate", image_id).returncode == 0
    assert cli("show", image_id, "-f", "value", "-c", "status").out == "deactivated\n"
    assert cli("reactivate", image_id).returncode == 0
    assert cli("show", image_id, "-f", "value", "-c", "status").out == "active\n"

    stores = cli("stores", "-f", "json")
    assert stores.returncode == 0, stores.err
    assert isinstance(stores.json(), list)
    usage = cli("usage", "-f", "json")
    assert usage.returncode == 0, usage.err
    assert all(set(row) == {"Resource", "Usage", "Limit"} for row in usage.json())


def test_members(cli: Cli, new_image: ImageTracker) -> None:
    image_id = new_id()
    new_image.track(image_id)
    created = cli("upload", "--id", image_id, "--name", unique_name("cli"), "--shared", "-f", "json")
    assert created.returncode == 0, created.err
    assert created.json()["status"] == "queued"
    member = cli("member", "create", image_id, "project-b", "-f", "json")
    assert member.returncode == 0, member.err
    assert member.json()["status"] == "pending"
    listed = cli("member", "list", image_id, "-f", "json").json()
    assert listed == [{"Image ID": image_id, "Member ID": "project-b", "Status": "pending"}]
    assert cli("member", "delete", image_id, "project-b").returncode == 0
    assert cli("member", "list", image_id, "-f", "value").out == ""


def test_stage_import_and_watch(cli: Cli, new_image: ImageTracker, tmp_path: Path) -> None:
    data = DATA[: 512 * KIB]
    (tmp_path / "staged.img").write_bytes(data)
    image_id = new_id()
    new_image.track(image_id)
    queued = cli("upload", "--id", image_id, "--name", unique_name("cli"), "--disk-format", "raw",
                 "--container-format", "bare", "-f", "json")  # fmt: skip
    assert queued.returncode == 0, queued.err
    staged = cli("stage", image_id, "--file", str(tmp_path / "staged.img"), "-f", "json")
    assert staged.returncode == 0, staged.err
    assert staged.json()["status"] == "uploading"
    imported = cli("import", image_id, "--wait")
    assert imported.returncode == 0, imported.err
    assert imported.out.splitlines()[-1] == "active succeeded"
    target = tmp_path / "back.img"
    assert cli("download", image_id, "--file", str(target)).returncode == 0
    assert target.read_bytes() == data
