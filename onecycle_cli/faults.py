"""Fault injection for the robustness tests: `ONECYCLE_FAULT=eval:SIGTERM onecycle train ...`.

No test can time a signal from outside to land inside an evaluation, or between a checkpoint's
write and its rename. So, when ONECYCLE_FAULT names a point, the process sends itself that signal
when it gets there: a real signal, met by the same handlers as a user's Ctrl-C or kill.

    ONECYCLE_FAULT=POINT[@N]:SIGNAL[,...]   the Nth time POINT is reached (default the first); a
                                            list sends each (a second Ctrl-C at a chosen moment)
    points: step (inside a training step, after the backward pass), eval (inside an evaluation),
            checkpoint (a checkpoint written to its temporary file, not yet renamed into place),
            sweep (inside a step of a range test, after the optimizer's step),
            read (a file from outside about to be opened: safe_files.open_regular),
            tracker (a tracker's run opened and recorded in trackers.json, nothing sent to it yet)
    ONECYCLE_FAULT=oom>N                    not a signal: every trial step of `--accum-steps auto` on a
                                            micro-batch above N images raises torch's OutOfMemoryError
                                            (batch_finder.py), on any device

Unset, as everywhere outside the tests, `fault()` is a dictionary lookup and a comparison.
"""

from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


def fault(point: str) -> None:
    specs = os.environ.get("ONECYCLE_FAULT")
    if not specs:
        return
    _seen[point] = _seen.get(point, 0) + 1
    for spec in specs.split(","):
        where, _, name = spec.partition(":")
        target, _, nth = where.partition("@")
        if target == point and _seen[point] == int(nth or 1):
            os.kill(os.getpid(), getattr(signal, name))
