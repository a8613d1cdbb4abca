"""Progress bars for uploads and downloads, on stderr, only when stderr is a terminal.

Why tqdm and not rich: tqdm is one small pure-Python package with no dependencies of its own (an 80 KiB
wheel), and its default bar already shows what a transfer needs: bytes done, percentage, speed and ETA.
rich would bring markdown-it-py, mdurl and Pygments (several MiB) into every install of the gateway for a bar
we do not style. tqdm ships no type hints, so it stays behind the small typed `Progress` class below.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Self, TextIO

from tqdm import tqdm  # type: ignore[import-untyped]


class Progress:
    """A byte counter drawn as a bar (bytes, %, speed, ETA) when enabled; a no-op otherwise.

    `total` None draws a counter with speed but no percentage (stdin of unknown length).
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        initial: int = 0,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        stream = sys.stderr if stream is None else stream
        self.enabled = is_terminal(stream) if enabled is None else enabled
        self._bar: Any = None
        if self.enabled:
            self._bar = tqdm(
                desc=description,
                total=total,
                initial=initial,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=stream,
                dynamic_ncols=True,
                leave=True,
                miniters=1,
                mininterval=0.1,
            )

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
