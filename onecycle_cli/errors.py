"""Exceptions that the CLI turns into a one-line message and an exit code (`onecycle_cli/cli.py`).

Library code raises; only the CLI prints and exits. Each class carries the exit code of the
contract in DESIGN.md, so a shell script can tell bad input (2) from a diverged run (3).
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
# a cluster's warning before the time limit or a preemption (sbatch --signal=USR1@90; submitit sends USR2):
# checkpoint and stop, so that the same command, run again, continues
EXIT_SIGUSR1 = 138
EXIT_SIGUSR2 = 140


class OnecycleError(Exception):
    """Base class: an error the user can act on, shown as one line."""

    exit_code = EXIT_ERROR


class UsageError(OnecycleError):
    """Bad flags, config, paths or data: exit 2 before (or instead of) training."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config value is unknown, mistyped or impossible."""


class DataError(UsageError):
    """A dataset is missing, truncated or does not fit the model."""


class RunDirError(UsageError):
    """A run directory cannot be created, resumed or read."""


class DiskFull(RunDirError):
    """A write failed for want of space (ENOSPC, or a quota): one line naming the file it was for."""

    def __init__(self, path):
        super().__init__(f"no space left on {path}")
        self.path = path


class Diverged(OnecycleError):
    """Training produced a non-finite loss; everything recorded before it is kept. `summary` is the run's
    recorded summary (or the seeds'), which `--json` still prints."""

    exit_code = EXIT_DIVERGED
    summary: dict | None = None


class Interrupted(OnecycleError):
    """A signal stopped the work before training began; what was done is kept (a folder's cache, say)."""

    def __init__(self, message: str, exit_code: int = EXIT_SIGINT):
        super().__init__(message)
        self.exit_code = exit_code
