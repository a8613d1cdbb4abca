import sys

import pytest

from gateway.malloc_arenas import cap_arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_arena_cap() -> None:
    assert cap_arenas() is True
