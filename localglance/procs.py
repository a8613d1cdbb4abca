"""Process-group helpers that read /proc directly (Linux only, stdlib only)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgid: int


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces or parentheses; fields resume after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(pid=pid, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]))


def all_stats() -> list[ProcStat]:
    stats = (read_stat(int(entry.name)) for entry in PROC.iterdir() if entry.name.isdigit())
    return [s for s in stats if s is not None]


def live_group_members(pgid: int) -> list[int]:
    """Pids in the group that are still running (zombies excluded: they hold no port)."""
    return [s.pid for s in all_stats() if s.pgid == pgid and s.state not in ("Z", "X")]


def children_of(pid: int) -> list[int]:
    return sorted(s.pid for s in all_stats() if s.ppid == pid and s.state not in ("Z", "X"))


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while live_group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate_group(pgid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL whatever is left (a worker still importing ignores SIGTERM)."""
    if not live_group_members(pgid):
        return
    signal_group(pgid, signal.SIGTERM)
    # A paused (SIGSTOPped) group only acts on SIGTERM once continued.
    signal_group(pgid, signal.SIGCONT)
    if wait_group_gone(pgid, timeout):
        return
    signal_group(pgid, signal.SIGKILL)
    if not wait_group_gone(pgid, 5.0):
        raise RuntimeError(f"process group {pgid} survived SIGKILL: {live_group_members(pgid)}")


def recorded_leader(pidfile: Path, ini: Path) -> int | None:
    """The live uWSGI master that `pidfile` names and that was started with `ini`.

    The command line is checked too, so a recycled pid is never signalled.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    stat = read_stat(pid)
    if stat is None or stat.state in ("Z", "X") or str(ini) not in cmdline(pid):
        return None
    return pid


def stop_recorded_leader(pidfile: Path, ini: Path, timeout: float) -> int | None:
    """Stop the group of the master recorded in `pidfile`; return its pid, or None if none was running."""
    pid = recorded_leader(pidfile, ini)
    if pid is not None:
        stat = read_stat(pid)
        # We always start uWSGI as a group leader; refuse to killpg someone else's group.
        if stat is not None and stat.pgid != pid:
            raise RuntimeError(f"pid {pid} is not a process group leader; not started by localglance")
        terminate_group(pid, timeout)
    pidfile.unlink(missing_ok=True)
    return pid
