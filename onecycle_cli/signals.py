"""Ctrl-C and SIGTERM as requests, not crashes: `onecycle train ... ; kill -TERM <pid>`.

While a run trains, the first SIGINT or SIGTERM only sets a flag; the loop finishes the step it is
in, writes a checkpoint and marks the run `interrupted` (exit 130 or 143). A second SIGINT stops at
once, for a user who really means it.
"""

from __future__ import annotations

import signal
import threading

from .errors import EXIT_SIGINT, EXIT_SIGTERM


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
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
