"""Members started warm: each still its own process, forked from a server that has imported torch,
onecycle and matplotlib once, instead of a fresh `python -m onecycle_cli` paying for them every time.

A fresh process spends about 3 s of a 2-core CPU before its first step: importing torch, the
torch._dynamo that torch's optimisers import when the first one is built, and pyplot for the run's
pictures. For the bundled 3-vs-7 experiment that is as long as the training, so a 2-wide grid of
fresh processes was slower than the same runs one after another in one process (benchmarks/grid.py:
1.21x). Forked from a warm server (multiprocessing's forkserver, Linux and macOS), a member starts in
milliseconds; it is still a process of its own (its pid in its meta.json, its own session, its own
signals, its own exit code), with its own environment, working directory, stdout and stderr.

The server imports but never runs torch (no thread pool), so the threads a member sets still hold.
Only CPU members are forked: CUDA cannot be used in a process forked from one that has touched it,
and nothing proves that no import of the server's ever asks torch about CUDA; a GPU member is a
fresh process, whose 3 s are nothing beside its minutes of training. ONECYCLE_GRID_FRESH=1 starts
every member fresh.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import signal
import sys
from pathlib import Path

# imported once in the server: what every member would otherwise import itself
PRELOAD = ["onecycle_cli.cli", "onecycle_cli.train", "onecycle_cli.lr_find", "onecycle_cli.runs.report",
           "torch._dynamo", "matplotlib.pyplot"]


def available() -> bool:
    return ("forkserver" in multiprocessing.get_all_start_methods()
            and os.environ.get("ONECYCLE_GRID_FRESH", "") in ("", "0"))


_context = None


def context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def member_main(argv: list[str], cwd: str, env: dict, out: str, log: str) -> None:
    """In the forked member: what `python -m onecycle_cli ARGV` with this env, cwd, stdout and stderr would be."""
    os.setsid()  # its own session, as a fresh member's: a Ctrl-C reaches it only through the grid
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    null = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    stderr = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    for fd, target in ((null, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    for s in (signal.SIGINT, signal.SIGTERM):  # the server's own dispositions are not a member's
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    import torch
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # read by torch at import, which the server did before this env
        torch.set_num_threads(int(threads))
    sys.argv = ["onecycle", *argv]
    # the program run by name, as `python -m onecycle_cli` runs it (its modules already imported by the server)
    runpy.run_module("onecycle_cli", run_name="__main__", alter_sys=True)


def prestart(gpus: list[str]) -> None:
    """The server started now, importing while the grid validates its members (it is ready sooner); not
    where the members will be fresh processes on GPUs."""
    if available() and not gpus:
        context()
        from multiprocessing import forkserver
        forkserver.ensure_running()


class Member:
    """A forked member, with the little of subprocess.Popen the grid uses: pid, poll, wait, send_signal."""

    def __init__(self, argv: list[str], cwd: str, env: dict, out: Path, log: Path):
        self._process = context().Process(target=member_main, args=(argv, cwd, env, str(out), str(log)),
                                          name="onecycle-member")
        self._process.start()
        self.pid = self._process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self) -> int:
        self._process.join()
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)
