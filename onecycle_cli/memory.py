"""How much host memory is free: `onecycle train --dataset synthetic`, and where a dataset's images live.

A few numbers in a config can ask for more memory than the machine has (a synthetic set of 512 px
images is 36 GB to generate). The kernel would then kill the process, or swap for an hour, with
nothing said; asking first turns that into one line that says how much was asked and how much
there is.
"""

from __future__ import annotations

import os

from .display import fmt_bytes
from .errors import DataError


def available() -> int | None:
    """Bytes of memory a new allocation can get without swapping (Linux MemAvailable), if known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check(need: int, what: str, fix: str) -> None:
    """DataError unless `need` bytes fit in the memory available now."""
    free = available()
    if free is not None and need > free:
        raise DataError(f"{what} needs about {fmt_bytes(need)} of memory, more than the {fmt_bytes(free)} available: "
                        f"{fix}")
