"""Ctrl-C and SIGTERM as requests, not crashes: `onecycle train ... ; kill -TERM <pid>`.

While a run trains, the first SIGINT or SIGTERM only sets a flag; the loop finishes the step it is
in, writes a checkpoint and marks the run `interrupted` (exit 130 or 143). A second SIGINT stops at
once, for a user who really means it.
"""

from __future__ import annotations

import signal
import threading

from .errors import EXIT_SIGINT, EXIT_SIGTERM

STOPS = (signal.SIGINT, signal.SIGTERM)


def install(handler) -> dict[int, object]:
    """SIGINT and SIGTERM to `handler` (only the main thread may set handlers); what they had, for `restore`."""
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
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT

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
