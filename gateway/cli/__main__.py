"""`glance-grpc` / `python -m gateway.cli`: parses the command line, runs the command, prints its result.

Exit status: 0 on success, 1 on any failure (one line `glance-grpc: error: ...` on stderr, never a traceback),
2 on a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway.cli import commands, transfer
from gateway.cli.options import build_parser, host_port
from gateway.cli.output import OutputError, emit
from gateway.client import Client, ClientError

PROG = "glance-grpc"

COMMANDS: dict[str, commands.Command] = {
    "list": commands.list_images,
    "show": commands.show,
    "download": transfer.download,
    "upload": transfer.upload,
    "create": transfer.upload,
    "update": commands.update,
    "set": commands.update,
    "delete": commands.delete,
    "tag": commands.tag,
    "member": commands.member,
    "stores": commands.stores,
    "deactivate": commands.deactivate,
    "reactivate": commands.reactivate,
    "usage": commands.usage,
    "stage": transfer.stage,
    "import": commands.import_image,
    "watch": commands.watch,
}


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe(error: ClientError) -> str:
    """`<CODE> <reason>: <details>`, with Glance's request id when known."""
    head = f"{error.code.name} {error.reason}" if error.reason else error.code.name
    line = f"{head}: {one_line(error.details)}" if error.details else head
    return f"{line} (request id {error.request_id})" if error.request_id else line


def fail(message: str, status: int = 1) -> int:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return status


def connect(args: argparse.Namespace) -> Client:
    host, port = host_port(args.address)
    root_certificates = None
    if args.os_cacert:
        with open(args.os_cacert, "rb") as pem:
            root_certificates = pem.read()
    return Client(
        host,
        port,
        token=args.os_auth_token,
        tls=args.tls,
        root_certificates=root_certificates,
        timeout=args.timeout,
    )


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with connect(args) as client:
            result = COMMANDS[args.command](args, client)
            if result is not None:
                emit(result, args.format, args.column, sys.stdout)
    except ClientError as error:
        return fail(describe(error))
    except OutputError as error:
        return fail(str(error), 2)
    except (commands.CommandError, ValueError, OSError) as error:
        return fail(str(error))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`glance-grpc list | head`): stop quietly, and keep Python from complaining
        # about the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
