import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway.workers import MULTIPROC_DIR, ensure_port_free, metrics_directory, shell_exit_code

REPO = Path(__file__).resolve().parents[2]


def test_exit_codes_read_like_a_shell_reports_them() -> None:
    assert shell_exit_code(0) == 0
    assert shell_exit_code(3) == 3
    assert shell_exit_code(-signal.SIGKILL) == 137
    assert shell_exit_code(-signal.SIGTERM) == 143


def test_a_listening_port_is_refused_even_when_it_allows_reuse(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as listener:
        # As gRPC's workers bind: the check must not join them the way another worker would.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            ensure_port_free("127.0.0.1", port)
    assert exited.value.code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    ensure_port_free("127.0.0.1", port)  # free again once closed


def test_metrics_directory_is_fresh_set_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_DIR, "/somewhere/else")
    with metrics_directory(True) as path:
        assert path is not None and os.environ[MULTIPROC_DIR] == path
        assert os.listdir(path) == []
        Path(path, "counter_1.db").write_bytes(b"x")
    assert not Path(path).exists()
    assert os.environ[MULTIPROC_DIR] == "/somewhere/else"
    with metrics_directory(False) as nothing:
        assert nothing is None and os.environ[MULTIPROC_DIR] == "/somewhere/else"


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a failed test kills the workers too
    )


def test_the_parent_imports_neither_grpc_nor_prometheus_client() -> None:
    # prometheus_client must first be imported after PROMETHEUS_MULTIPROC_DIR is set, and gRPC only after the
    # fork; gateway.__main__ (the parent's code) must not import them, nor the server that does.
    probe = _python(
        """
        import sys
        import gateway.__main__, gateway.workers
        heavy = ("grpc", "prometheus_client", "uvloop", "gateway.server", "gateway.metrics")
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    output, _ = probe.communicate(timeout=60)
    assert output.strip().splitlines()[-1] == "[]", output


SUPERVISED = """
    import logging, signal, sys, time
    from gateway.config import Settings
    from gateway.workers import run_workers

    logging.basicConfig(level="INFO")

    def serve_one(settings):
        if sys.argv[1] == "crash":
            raise SystemExit(3)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        print("serving", flush=True)
        while not stop:
            time.sleep(0.01)

    settings = Settings(glance_url="http://127.0.0.1:9", port=int(sys.argv[2]), workers=3)
    sys.exit(run_workers(settings, serve_one))
"""


def _supervised(mode: str) -> subprocess.Popen[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return _python(SUPERVISED, mode, str(port))


def _read_until(process: subprocess.Popen[str], text: str, count: int, timeout: float = 30.0) -> str:
    """The process's output until `text` has appeared `count` times; on timeout the whole process group is
    killed and the test fails with what arrived (a hang must never stall the suite)."""
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while seen.count(text.encode()) < count:
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([descriptor], [], [], max(remaining, 0))
        chunk = os.read(descriptor, 65536) if readable else b""
        if not chunk:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"{text!r} appeared {seen.count(text.encode())} of {count} times:\n{seen.decode()}")
        seen += chunk
    return seen.decode()


def test_sigterm_reaches_every_worker_and_a_clean_drain_exits_0() -> None:
    parent = _supervised("serve")
    started = _read_until(parent, "serving", 3)
    parent.send_signal(signal.SIGTERM)
    try:
        output, _ = parent.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 0, started + output


def test_a_worker_exiting_unasked_stops_the_others_and_sets_the_exit_code() -> None:
    parent = _supervised("crash")
    output, _ = parent.communicate(timeout=30)
    assert parent.returncode == 3, output
    assert "exited unasked with code 3" in output
