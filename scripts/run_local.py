"""`make run`: a real local Glance and the gateway in front of it, until Ctrl-C stops both.

Image data is kept in .state/glance between runs. Without options Glance runs without authentication (every
caller is admin). With --keystone a real Keystone runs too, Glance validates the X-Auth-Token of every call
against it (upstream default policies), and the seeded users can get tokens:
`python -m localglance token alpha member` (projects alpha and beta; roles reader, member, admin).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from localglance import GlanceServer, KeystoneServer  # noqa: E402  (needs the repo on sys.path first)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateway-port", type=int, default=50051, help="gRPC port (default %(default)s)")
    parser.add_argument(
        "--glance-port", type=int, default=9292, help="local Glance port (default %(default)s)"
    )
    parser.add_argument("--log-level", default="INFO", help="gateway log level (default %(default)s)")
    parser.add_argument(
        "--keystone",
        action="store_true",
        help="also run a real Keystone (any free port) and make Glance validate tokens against it",
    )
    args = parser.parse_args()

    # SIGTERM behaves like Ctrl-C so every server stops cleanly either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.ExitStack() as servers:
        keystone = servers.enter_context(KeystoneServer()) if args.keystone else None
        auth = "keystone" if keystone is not None else "noauth"
        glance = servers.enter_context(
            GlanceServer(port=args.glance_port, fresh=False, auth=auth, keystone=keystone)
        )
        print(f"Glance ready at {glance.url} (data in {glance.state_dir})", flush=True)
        if keystone is not None:
            print_keystone_help(keystone, args.gateway_port)
        gateway = subprocess.Popen(
            [
                sys.executable, "-m", "gateway",
                "--port", str(args.gateway_port),
                "--glance-url", glance.url,
                "--log-level", args.log_level,
            ],
            cwd=REPO,
        )  # fmt: skip
        try:
            return gateway.wait()
        except KeyboardInterrupt:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=15)
            return 0
    return 0


def print_keystone_help(keystone: KeystoneServer, gateway_port: int) -> None:
    # Only how to get a token, never a token or a password.
    print(
        f"Keystone ready at {keystone.url} (identity API {keystone.identity_url})\n"
        "Tokens of the seeded users (projects alpha, beta; roles reader, member, admin;\n"
        "'admin admin' is the Keystone admin), to send as gRPC metadata x-auth-token:\n"
        f"  TOKEN=$(cd {REPO} && {sys.executable} -m localglance token alpha member)\n"
        f'  grpcurl -plaintext -H "x-auth-token: $TOKEN" 127.0.0.1:{gateway_port} '
        "glance.gateway.v1.ImageService/ListImages",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
