"""Ctrl-C and SIGTERM as requests, not crashes: `onecycle train ... ; kill -TERM <pid>`.

While a run trains, the first SIGINT or SIGTERM only sets a flag; the loop finishes the step it is
in, writes a checkpoint and marks the run `interrupted` (exit 130 or 143). A second SIGINT stops at
once, for a user who really means it.

SIGUSR1 and SIGUSR2 are what a cluster sends before a job's time limit or a preemption
(`sbatch --signal=USR1@90`; submitit uses USR2): they stop the same way, exit 138 / 140, and the
same command run again continues from the checkpoint (`onecycle grid --index K`, `train --resume`).
"""

from __future__ import annotations

import signal
import threading

from .errors import EXIT_SIGINT, EXIT_SIGTERM, EXIT_SIGUSR1, EXIT_SIGUSR2

EXIT_CODES = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}
for _name, _code in (("SIGUSR1", EXIT_SIGUSR1), ("SIGUSR2", EXIT_SIGUSR2)):  # not on Windows
    if hasattr(signal, _name):
        EXIT_CODES[getattr(signal, _name)] = _code
STOPS = tuple(EXIT_CODES)


def exit_code_of(signum: int | None) -> int:
    """The exit code of a run stopped by `signum`: 128 + its number, as a shell reports it."""
    return EXIT_CODES.get(signum, EXIT_SIGINT)


def install(handler) -> dict[int, object]:
    """SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 to `handler` (only the main thread may set handlers); what they
    had, for `restore`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in STOPS}


def restore(previous: dict[int, object]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


class StopFlag:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.signum)

    def pending(self) -> int:
        """The exit code a stop asks for, 0 while none is asked for: what long library work polls."""
        return self.exit_code if self.requested else 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C
        self.signum = self.signum or signum

    def __enter__(self) -> "StopFlag":
        self._previous = install(self._handle)
        return self

    def __exit__(self, *exc) -> None:
        restore(self._previous)
        self._previous = {}
