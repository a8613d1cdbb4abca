"""`make run`: a real local Glance and the gateway in front of it, until Ctrl-C stops both.

Image data is kept in .state/glance between runs.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from localglance import GlanceServer  # noqa: E402  (needs the repo on sys.path first)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway-port", type=int, default=50051, help="gRPC port (default %(default)s)")
    parser.add_argument(
        "--glance-port", type=int, default=9292, help="local Glance port (default %(default)s)"
    )
    parser.add_argument("--log-level", default="INFO", help="gateway log level (default %(default)s)")
    args = parser.parse_args()

    # SIGTERM behaves like Ctrl-C so both servers stop cleanly either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with GlanceServer(port=args.glance_port, fresh=False) as glance:
        print(f"Glance ready at {glance.url} (data in {glance.state_dir})", flush=True)
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


if __name__ == "__main__":
    sys.exit(main())
