"""Command line: install | start | stop | run | status | token."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .config import AUTH_MODES, read_port
from .keystone import KeystoneServer
from .keystone_config import USER_PROJECTS, USER_ROLES
from .keystone_tokens import recorded_keystone, recorded_tokens, stop_recorded_keystone
from .log import info
from .paths import DEFAULT_STATE_DIR, DEFAULT_VENV_DIR
from .ports import HOST
from .server import GlanceServer, recorded_master, stop_recorded
from .venv import ensure_venv

DESCRIPTION = """\
Run a real OpenStack Glance 33.0.0 (Images API v2, SQLite, two file stores
'file' and 'file2') under uWSGI on 127.0.0.1; with --auth keystone, also a real
Keystone 30.0.0 with seeded projects and users (state in <state>/keystone).
Both are installed into one venv on first use (one to two minutes).
"""


class _Shutdown(BaseException):
    """Raised from the SIGTERM/SIGHUP handler so `run` unwinds and stops Glance."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"localglance: error: {exc}", file=sys.stderr)
        return 1
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localglance",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    install = sub.add_parser("install", help="only create/complete the venv (Glance, Keystone, uWSGI)")
    _add_venv(install)
    install.set_defaults(func=cmd_install)

    start = sub.add_parser(
        "start",
        help="start in the background; prints '<master pid> <url>' (and 'keystone <pid> <url>') on stdout",
        description="Start Glance in the background and print '<uWSGI master pid> <url>' on stdout "
        "(with --auth keystone a second line 'keystone <pid> <url>'). "
        "Wipes the data (DB and stores) unless --keep-data; Keystone always starts from its seeded state.",
    )
    _add_server_options(start, keep_data_default=False)
    start.set_defaults(func=cmd_start)

    run = sub.add_parser(
        "run",
        help="start in the foreground; Ctrl-C/SIGTERM stops it (keeps data by default)",
        description="Start Glance in the foreground until Ctrl-C, SIGTERM or SIGHUP, then stop it cleanly. "
        "Keeps the data (DB and stores) across runs unless --fresh.",
    )
    _add_server_options(run, keep_data_default=True)
    run.set_defaults(func=cmd_run)

    stop = sub.add_parser("stop", help="stop the instance recorded in the state dir (uwsgi.pid)")
    _add_state(stop)
    stop.add_argument(
        "--timeout", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL (default: 10)"
    )
    stop.set_defaults(func=cmd_stop)

    status = sub.add_parser(
        "status",
        help="print '<pid> <url>' (and 'keystone <pid> <url>') and exit 0 if running, else exit 1",
    )
    _add_state(status)
    status.set_defaults(func=cmd_status)

    token = sub.add_parser(
        "token",
        help="print a project-scoped token of a seeded user (needs --auth keystone)",
        description="Print the token of user <project>-<role>, scoped to <project>, from the Keystone "
        f"started with --auth keystone. Projects: {', '.join(USER_PROJECTS)}; roles: "
        f"{', '.join(USER_ROLES)}; 'gamma member' (a tight image quota); 'admin admin' is the bootstrap "
        "admin.",
    )
    _add_state(token)
    token.add_argument("project")
    token.add_argument("role")
    token.set_defaults(func=cmd_token)
    return parser


def _add_venv(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV_DIR, help=f"Glance's venv (default: {DEFAULT_VENV_DIR})"
    )


def _add_state(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"state dir: etc/, data/, logs, uwsgi.pid (default: {DEFAULT_STATE_DIR})",
    )


def _add_server_options(parser: argparse.ArgumentParser, keep_data_default: bool) -> None:
    parser.add_argument(
        "--port", type=int, default=9292, help="loopback port, 0 = any free one (default: 9292)"
    )
    _add_state(parser)
    _add_venv(parser)
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--keep-data",
        dest="keep_data",
        action="store_true",
        default=keep_data_default,
        help="keep the DB and image stores from earlier runs" + (" (default)" if keep_data_default else ""),
    )
    data.add_argument(
        "--fresh",
        dest="keep_data",
        action="store_false",
        help="wipe the DB and image stores first" + ("" if keep_data_default else " (default)"),
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="uWSGI workers = max parallel requests (default: 2)"
    )
    parser.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="noauth",
        help="noauth: every caller is admin; headers: identity from X-Identity-Status/X-Roles/"
        "X-Project-Id/X-User-Id with upstream policies; keystone: also start a real Keystone and "
        "validate X-Auth-Token against it, upstream policies (default: noauth)",
    )
    parser.add_argument(
        "--keystone-port",
        type=int,
        default=0,
        help="Keystone's loopback port with --auth keystone, 0 = any free one (default: 0)",
    )
    parser.add_argument(
        "--socket-timeout",
        type=int,
        default=10,
        help="uWSGI socket-timeout in seconds; a stalled upload gets 500 after it (default: 10)",
    )
    parser.add_argument(
        "--no-format-check",
        dest="format_check",
        action="store_false",
        help="set [image_format] require_image_format_match = false",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=60.0,
        help="seconds to wait until every worker is ready (default: 60)",
    )


def _keystone_from(args: argparse.Namespace) -> KeystoneServer | None:
    if args.auth != "keystone":
        return None
    return KeystoneServer(
        port=args.keystone_port or None, state_dir=args.state / "keystone", venv_dir=args.venv
    )


def _server_from(args: argparse.Namespace, keystone: KeystoneServer | None) -> GlanceServer:
    return GlanceServer(
        port=args.port or None,
        state_dir=args.state,
        venv_dir=args.venv,
        fresh=not args.keep_data,
        processes=args.processes,
        auth=args.auth,
        socket_timeout=args.socket_timeout,
        format_check=args.format_check,
        keystone=keystone,
    )


def cmd_install(args: argparse.Namespace) -> int:
    info(f"venv ready: {ensure_venv(args.venv)}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    keystone = _keystone_from(args)
    if keystone is not None:
        keystone.start(timeout=args.start_timeout)
    try:
        server = _server_from(args, keystone)
        server.start(timeout=args.start_timeout)
    except BaseException:
        if keystone is not None:
            keystone.stop()
        raise
    pid = server.pid
    server.detach()
    print(f"{pid} {server.url}", flush=True)
    if keystone is not None:
        print(f"keystone {keystone.pid} {keystone.url}", flush=True)
        keystone.detach()
        _how_to_get_a_token(args.state)
    return 0


def _how_to_get_a_token(state: Path) -> None:
    info(f"a token: python -m localglance token --state {state} alpha member  (sent as X-Auth-Token)")


def cmd_stop(args: argparse.Namespace) -> int:
    pid = stop_recorded(args.state, timeout=args.timeout)
    info(f"stopped pid {pid}" if pid is not None else f"nothing running from {args.state}")
    # After Glance, which may still be validating tokens against it.
    keystone_pid = stop_recorded_keystone(args.state / "keystone", timeout=args.timeout)
    if keystone_pid is not None:
        info(f"stopped keystone pid {keystone_pid}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    pid = recorded_master(args.state.resolve())
    if pid is None:
        info(f"nothing running from {args.state}")
        return 1
    print(f"{pid} http://{HOST}:{read_port(args.state / 'etc' / 'glance-uwsgi.ini')}", flush=True)
    keystone = recorded_keystone(args.state / "keystone")
    if keystone is not None:
        print(f"keystone {keystone[0]} {keystone[1]}", flush=True)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    try:
        token = recorded_tokens(args.state / "keystone").token(args.project, args.role)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    print(token, flush=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    keystone = _keystone_from(args)
    server = _server_from(args, keystone)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_shutdown)
    try:
        if keystone is not None:
            keystone.start(timeout=args.start_timeout)
        server.start(timeout=args.start_timeout)
        print(f"{server.pid} {server.url}", flush=True)
        if keystone is not None:
            print(f"keystone {keystone.pid} {keystone.url}", flush=True)
            _how_to_get_a_token(args.state)
        while server.is_running() and (keystone is None or keystone.is_running()):
            time.sleep(0.5)
        died = server if not server.is_running() or keystone is None else keystone
        info(f"uWSGI exited unexpectedly\n{died.log_tail()}")
        return 1
    except (KeyboardInterrupt, _Shutdown):
        info("stopping")
        return 0
    finally:
        # A second Ctrl-C must not abort the cleanup half way.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
        if keystone is not None:
            keystone.stop()


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown(signum)
