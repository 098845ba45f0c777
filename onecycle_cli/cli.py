"""The command line: `onecycle find`, `onecycle train` and the commands around them.

Each command parses its flags, resolves the config, calls one plain function and prints. Every
named flag is a config key in disguise (`--epochs` is `train.epochs`), so flags, `--set`, the
environment and YAML are validated by the same schema and fail with the same one-line messages.

Only typer and what the commands share are imported here: each command imports what it needs when
it runs, so `--help`, `config`, `runs`, `init`, `presets` and shell completion never load torch.
"""

from __future__ import annotations

import errno
import inspect
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from . import completion
from .errors import EXIT_USAGE, Diverged, OnecycleError, UsageError

try:  # typer 0.2x carries its own copy of click; older typer uses click itself
    from typer._click.exceptions import NoArgsIsHelpError
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError as ClickUsageError
    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:  # click < 8.2 prints the help and exits by itself: nothing raises it. Not an alias
        class NoArgsIsHelpError(Exception):  # of UsageError, whose handler below it would then never reach
            pass


# --help is click's plain layout, not Typer's rich panels: at 80 columns those split a metavar mid-word
# (FLOAT|find|FIND_R / UN), squeeze the descriptions into 18 characters, cut text off with "…" and show
# <bool> for every flag. Click's never splits a metavar (a long one gets its description on the line below)
# and wraps the descriptions. Typer's rich_markup_mode=None would do it too, but only from typer 0.12.5 on
# (pyproject allows 0.12), so the classes below call click's formatter themselves. The help texts are plain
# text, with no rich markup or escapes in them.
HELP_WIDTH = 120  # click's own cap is 80: a wider terminal gets up to 120 columns of help, no more


def _completion_help(items: list) -> list:
    """Option and command completions with their help as zsh and fish show it (completion._help): one line
    of 70 characters at most, escaped for Typer (0.16 on), which renders it as rich markup, wrapping a longer
    one into lines that fish takes for candidates, and would swallow the [timm] of onecycle[timm]."""
    for item in items:
        if item.help:
            item.help = completion._help(item.help)
    return items


class OnecycleCommand(TyperCommand):
    """A command whose --help is click's plain layout (see HELP_WIDTH)."""

    def format_help(self, ctx, formatter) -> None:
        super(TyperCommand, self).format_help(ctx, formatter)  # click's own, past Typer's rich one

    def format_options(self, ctx, formatter) -> None:
        """Typer's Arguments and Options sections, an argument named by its metavar alone: typer 0.2x
        adds its type (RUN_DIR <path>, RUN... <list[str]>)."""
        sections: dict[str, list] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                sections["Arguments"].append((param.metavar or record[0], record[1]))
            else:
                sections["Options"].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def shell_complete(self, ctx, incomplete):
        return _completion_help(super().shell_complete(ctx, incomplete))


class OnecycleGroup(TyperGroup):
    """Turns every error, click's own included, into one line on stderr and the contract's exit code.
    Its --help is click's plain layout, as the commands' (see HELP_WIDTH)."""

    def format_help(self, ctx, formatter) -> None:
        super(TyperGroup, self).format_help(ctx, formatter)  # click's own, past Typer's rich one

    def format_commands(self, ctx, formatter) -> None:
        """Each command with the first paragraph of its help, whole and wrapped: click's cuts it to the
        first sentence or with "..." where it is longer than the line."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                text = command.short_help or inspect.cleandoc(command.help or "").partition("\f")[0]
                rows.append((name, " ".join(text.split("\n\n")[0].split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx, incomplete):
        return _completion_help(super().shell_complete(ctx, incomplete))

    def _main_shell_completion(self, ctx_args, prog_name, complete_var=None):
        # a malformed request from the shell completes nothing, quietly (see completion.answer)
        completion.answer(lambda: super(OnecycleGroup, self)._main_shell_completion(ctx_args, prog_name, complete_var),
                          complete_var or f"_{prog_name}_COMPLETE".replace("-", "_").upper())

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        # what meta.json records, however onecycle was started: the commands read it from their context
        extra.setdefault("obj", {"argv": ["onecycle", *args]})
        try:
            if len(args) == 2 and args[0] in ("--show-completion", "--install-completion") and args[1] in SHELLS:
                rv = _completion_for(*args)
            else:
                rv = super().main(args, "onecycle", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.Exit as e:
            code = e.exit_code
        except NoArgsIsHelpError as e:  # `onecycle` or `onecycle data` alone: the help, on stdout
            print(e.format_message())  # click's message is the help itself
            code = 0
        except ClickUsageError as e:
            where = e.ctx.command_path if e.ctx else "onecycle"
            _error(f"{e.format_message()} (see {where} --help)", where)
            code = EXIT_USAGE
        except typer.Abort:
            code = 130
        except OnecycleError as e:
            _error(str(e))
            code = e.exit_code
        except KeyboardInterrupt:
            _error("interrupted")
            code = 130
        except Exception as e:  # a bug of ours: still one line, with the whole story on request
            if os.environ.get("ONECYCLE_DEBUG"):
                traceback.print_exc()
            code = _environment_error(e)
            if code is None:
                _error(f"unexpected error: {type(e).__name__}: {e} (set ONECYCLE_DEBUG=1 for the traceback)")
                code = 1
        sys.stdout.flush()
        sys.exit(code)


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _completion_for(option: str, shell: str) -> int:
    """`--show-completion zsh`: Typer's script for the shell named. Typer's own flag asks the process
    tree which shell runs it and would ignore the name: wrong for a zsh user in a bash script, and
    unanswerable in a Dockerfile's `RUN`."""
    from typer.completion import get_completion_script, install
    if option == "--show-completion":
        sys.stdout.write(get_completion_script(prog_name="onecycle", complete_var="_ONECYCLE_COMPLETE", shell=shell)
                         + "\n")
    else:
        shell, path = install(shell=shell, prog_name="onecycle", complete_var="_ONECYCLE_COMPLETE")
        sys.stderr.write(f"{shell} completion installed in {path}; it takes effect in a new terminal\n")
    return 0


def _environment_error(e: Exception) -> int | None:
    """A full disk or a path too long met where no writer named it first: the usual line, exit 2."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        _error(f"no space left on {e.filename or 'the disk'}")
        return EXIT_USAGE
    if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
        _error(f"{e.filename}: a path or a part of it is longer than the file system takes")
        return EXIT_USAGE
    return None


def _error(message: str, where: str = "onecycle") -> None:
    from .safe_text import one_line  # messages carry paths and values from outside: no control codes
    sys.stderr.write(f"{where}: error: " + one_line(message) + "\n")
    sys.stderr.flush()


def _say(text: object) -> None:
    """A line on stdout for people and scripts (a path, a message), control characters escaped."""
    from .safe_text import plain
    sys.stdout.write(plain(text) + "\n")


# add_completion: Typer's --install-completion / --show-completion for bash, zsh and fish
app = typer.Typer(cls=OnecycleGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"max_content_width": HELP_WIDTH},
                  help="LR range tests and 1cycle training for image classifiers, headless and reproducible.")
data_app = typer.Typer(cls=OnecycleGroup, no_args_is_help=True, help="Check or fetch the datasets a config needs.")
app.add_typer(data_app, name="data")


def _path(value):
    """Callback of every path flag and argument: a path no file system can hold (a part over 255
    bytes, a NUL) is refused by name before any work, not met as an OSError deep inside."""
    from .safe_files import path_problem
    for item in value if isinstance(value, list) else [value]:
        problem = path_problem(str(item)) if item not in (None, "") else None
        if problem:
            text = str(item) if len(str(item)) <= 60 else f"{str(item)[:40]}...({len(str(item)):,} characters)"
            raise typer.BadParameter(f"{text!r}: the path has {problem}")
    return value


# -- options shared by the commands: each names the config key it sets ------------------------------
Config_ = Annotated[Optional[str], typer.Option("--config", "-c", metavar="PATH|NAME", callback=_path,
                                                help="YAML file, or a shipped preset: cifar, mnist, mnist_sample, "
                                                     "folder (onecycle presets).",
                                                autocompletion=completion.config_names)]
Set_ = Annotated[Optional[list[str]], typer.Option("--set", metavar="SECTION.KEY=VALUE",
                                                   help="Override any config key (repeatable).",
                                                   autocompletion=completion.config_keys)]
Epochs_ = Annotated[Optional[str], typer.Option("--epochs", metavar="INT", help="train.epochs")]
BatchSize_ = Annotated[Optional[str], typer.Option("--batch-size", metavar="INT", help="train.batch_size")]
AccumSteps_ = Annotated[Optional[str], typer.Option("--accum-steps", metavar="INT", help=(
    "train.accum_steps: split each batch into INT micro-batches, one optimiser step (the same experiment on "
    "a smaller card)."))]
DataDir_ = Annotated[Optional[str], typer.Option("--data-dir", metavar="PATH", help="data.root (or ONECYCLE_DATA)")]
Seed_ = Annotated[Optional[str], typer.Option("--seed", metavar="INT", help="train.seed")]
Device_ = Annotated[Optional[str], typer.Option("--device", metavar="auto|cpu|cuda[:N]", help="train.device")]
RunsDir_ = Annotated[Optional[str], typer.Option("--runs-dir", metavar="PATH", help="run.root (or ONECYCLE_RUNS)")]
Dataset_ = Annotated[Optional[str], typer.Option("--dataset", metavar="NAME", help="data.dataset")]
Model_ = Annotated[Optional[str], typer.Option("--model", metavar="NAME", help=(
    "model.name: resnet20 .. resnet110, simple_cnn, tv:NAME for any torchvision classification model, or "
    "timm:NAME for any timm model (needs onecycle[timm]); onecycle config lists where the names come from"))]
Precision_ = Annotated[Optional[str], typer.Option("--precision", metavar="auto|bf16|fp16|fp32",
                                                   help="train.precision")]
Log_ = Annotated[Optional[str], typer.Option("--log", "--log-to", metavar="mlflow,wandb,tensorboard", help=(
    "run.log: trackers that get the run's records too (each an extra: pip install \"onecycle[mlflow]\"). "
    "Under torchrun write --log-to: torchrun's own parser takes --log for its --log-dir."))]
Json_ = Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON object on stdout.")]
JsonReport_ = Annotated[bool, typer.Option("--json", help="Print the data report as one JSON object on stdout.")]
JsonSchedule_ = Annotated[bool, typer.Option("--json", help="Print the schedule's summary as one JSON object.")]
JsonCompare_ = Annotated[bool, typer.Option("--json", help="Print the comparison as one JSON object on stdout.")]
Progress_ = Annotated[str, typer.Option("--progress", metavar="auto|rich|plain|none", help=(
    "A bar on a terminal (rich), a line every half minute and at each epoch's end in a log (plain), or "
    "nothing; auto: rich on a terminal, else plain."))]


def _named(**flags) -> dict[str, tuple[str, object]]:
    """{config key: (flag, value)} for the named flags that were given."""
    keys = {"epochs": "train.epochs", "batch_size": "train.batch_size", "data_dir": "data.root",
            "seed": "train.seed", "device": "train.device", "runs_dir": "run.root", "dataset": "data.dataset",
            "model": "model.name", "precision": "train.precision", "max_lr": "schedule.max_lr",
            "schedule": "schedule.name", "compile": "train.compile", "activation_stats": "train.activation_stats",
            "tensorboard": "run.tensorboard", "log": "run.log", "num_it": "find.num_it",
            "val_batches": "find.val_batches",
            "start_lr": "find.start_lr", "end_lr": "find.end_lr", "suggest": "find.suggest", "freeze": "find.freeze",
            "init": "model.init", "accum_steps": "train.accum_steps"}
    return {keys[name]: ("--" + name.replace("_", "-"), value) for name, value in flags.items() if value is not None}


def _argv(ctx: typer.Context) -> list[str] | None:
    """The command as typed, as OnecycleGroup.main received it (None when invoked otherwise)."""
    obj = ctx.find_root().obj
    return obj.get("argv") if isinstance(obj, dict) else None


def _emit(summary: dict, as_json: bool) -> None:
    if as_json:
        from .runs.directory import to_json
        sys.stdout.write(to_json(summary, indent=None) + "\n")


def _display(progress: str = "auto"):
    from .display import PROGRESS, Display
    if progress not in PROGRESS:
        raise UsageError(f"--progress {progress!r}: expected {', '.join(PROGRESS[:-1])} or {PROGRESS[-1]}")
    rank = int(os.environ.get("RANK", "0"))
    return Display(enabled=rank == 0, progress=progress)


def _check_trackers(resolved) -> None:
    """run.log's trackers installed, or exit 2 naming the extra, before any work."""
    from .trackers import check_installed
    check_installed(resolved.config.run.log)


def _resolve(config: str | None = None, sets: list[str] | None = None, flags: dict | None = None, **kwargs):
    """config.resolve, then what it has to tell the user (a preset standing in for a missing file) on stderr."""
    from .config import resolve
    resolved = resolve(config, sets, flags, **kwargs)
    if resolved.notes:
        display = _display()
        for note in resolved.notes:
            display.warn(note)
    return resolved


# -- find ---------------------------------------------------------------------------------------------
@app.command(cls=OnecycleCommand)
def find(ctx: typer.Context, config: Config_ = None, set_: Set_ = None,
         sweep: Annotated[Optional[str], typer.Option("--sweep", metavar="KEY=V1,V2,...",
                          help="One curve per value of weight_decay, momentum or batch_size.")] = None,
         num_it: Annotated[Optional[str], typer.Option("--num-it", metavar="INT", help="find.num_it")] = None,
         start_lr: Annotated[Optional[str], typer.Option("--start-lr", metavar="FLOAT", help="find.start_lr")] = None,
         end_lr: Annotated[Optional[str], typer.Option("--end-lr", metavar="FLOAT", help="find.end_lr")] = None,
         val_batches: Annotated[Optional[str], typer.Option("--val-batches", metavar="INT",
                                help="Score each step on N held-out batches (Smith's variant).")] = None,
         suggest: Annotated[Optional[str], typer.Option("--suggest", metavar="floor|basin|valley|steep|minimum|slide",
                            help="find.suggest: the one train --max-lr uses")] = None,
         freeze: Annotated[Optional[bool], typer.Option(
             "--freeze", help="find.freeze: sweep the head alone, the body frozen (as before fine-tuning).")] = None,
         batch_size: BatchSize_ = None, accum_steps: AccumSteps_ = None, data_dir: DataDir_ = None,
         seed: Seed_ = None, device: Device_ = None,
         runs_dir: RunsDir_ = None, dataset: Dataset_ = None, model: Model_ = None, precision: Precision_ = None,
         log: Log_ = None, progress: Progress_ = "auto", json_: Json_ = False) -> int:
    """LR range test: grow the LR from start_lr to end_lr over num_it batches and suggest a max_lr."""
    started = time.time()
    from .lr_find import find_run, parse_sweep
    from .signals import StopFlag
    parsed = parse_sweep(sweep) if sweep is not None else None
    resolved = _resolve(config, set_, _named(num_it=num_it, start_lr=start_lr, end_lr=end_lr, val_batches=val_batches,
                                             suggest=suggest, freeze=freeze, batch_size=batch_size,
                                             accum_steps=accum_steps, data_dir=data_dir,
                                             seed=seed, device=device, runs_dir=runs_dir, dataset=dataset, model=model,
                                             precision=precision, log=log))
    _check_trackers(resolved)
    from .dist import init_distributed, shutdown
    dist = init_distributed(resolved.config.train.device)
    display = _display(progress)
    with StopFlag() as stop:
        run, summary = find_run(resolved, display, stop, dist, parsed, started=started, argv=_argv(ctx))
    shutdown()  # after an error the process's exit lets go of the group: the other ranks may never arrive
    display.print(f"run: {run.path}")
    if dist.main:
        _emit(summary, json_)
    return stop.exit_code if summary["status"] == "interrupted" else 0


# -- train --------------------------------------------------------------------------------------------
@app.command(cls=OnecycleCommand)
def train(ctx: typer.Context, config: Config_ = None, set_: Set_ = None,
          max_lr: Annotated[Optional[str], typer.Option("--max-lr", metavar="FLOAT|find|FIND_RUN", callback=_path,
                            help="schedule.max_lr: a number, 'find' (range test first), or a find run's "
                                 "directory.")] = None,
          epochs: Epochs_ = None, batch_size: BatchSize_ = None, accum_steps: AccumSteps_ = None,
          data_dir: DataDir_ = None, seed: Seed_ = None,
          device: Device_ = None, runs_dir: RunsDir_ = None, dataset: Dataset_ = None, model: Model_ = None,
          schedule: Annotated[Optional[str], typer.Option("--schedule", metavar="onecycle|constant|step|cosine",
                              help="schedule.name")] = None,
          precision: Precision_ = None,
          compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="train.compile")] = None,
          activation_stats: Annotated[Optional[bool], typer.Option(
              "--activation-stats", help="Record per-layer activation statistics and histograms.")] = None,
          tensorboard: Annotated[Optional[bool], typer.Option(
              "--tensorboard", help="Also write TensorBoard event files (needs onecycle[tensorboard]).")] = None,
          log: Log_ = None,
          seeds: Annotated[Optional[str], typer.Option("--seeds", metavar="N|S1,S2,...",
                           help="Run N seeds (or these seeds) and report mean ± std accuracy.")] = None,
          resume: Annotated[Optional[Path], typer.Option("--resume", metavar="RUN_DIR", callback=_path,
                            help="Continue an interrupted run from its checkpoint.",
                            autocompletion=completion.resumable_runs)] = None,
          init: Annotated[Optional[str], typer.Option("--init", metavar="RUN_DIR", callback=_path, help=(
              "model.init: start from a finished run's weights (every tensor whose shape fits; the head only "
              "for the same classes)."), autocompletion=completion.run_dirs)] = None,
          suggest: Annotated[Optional[str], typer.Option("--suggest", metavar="floor|basin|valley|steep|minimum|slide",
                             help="Which suggestion --max-lr find or FIND_RUN uses (find.suggest).")] = None,
          progress: Progress_ = "auto", json_: Json_ = False) -> int:
    """1cycle fit (or a baseline schedule), recorded in runs/<id>/ with checkpoints and plots."""
    started = time.time()
    from .signals import StopFlag
    from .train import max_lr_flag, train_run, train_seeds
    value, source, find_first = max_lr_flag(max_lr, suggest)
    flags = _named(epochs=epochs, batch_size=batch_size, accum_steps=accum_steps, data_dir=data_dir, seed=seed,
                   device=device,
                   runs_dir=runs_dir, dataset=dataset, model=model, schedule=schedule, precision=precision,
                   compile=compile, activation_stats=activation_stats, tensorboard=tensorboard, suggest=suggest,
                   max_lr=value, init=init, log=log)
    if resume is not None:
        if config is not None or seeds is not None or find_first:
            raise UsageError("--resume continues a run with its own config.yaml: it takes no --config, --seeds "
                             "or --max-lr find")
        saved_config = Path(resume) / "config.yaml"
        if not saved_config.is_file():
            from .runs.directory import RunDir
            RunDir.open(resume)  # says which: no such directory, or not a onecycle run
        resolved = _resolve(sets=set_, flags=flags, from_file=saved_config)
    else:
        resolved = _resolve(config, set_, flags)
    seed_list = _parse_seeds(seeds, resolved.config.train.seed) if seeds is not None else None
    if seed_list is not None and seed is not None:
        raise UsageError("conflicting flags: --seed and --seeds; give one")
    _check_trackers(resolved)
    from .dist import init_distributed, shutdown
    dist = init_distributed(resolved.config.train.device)
    display = _display(progress)
    with StopFlag() as stop:
        try:
            if seed_list is not None:
                summary = train_seeds(resolved, seed_list, display, stop, dist, max_lr_source=source,
                                      find_first=find_first, argv=_argv(ctx))
            else:
                run, summary = train_run(resolved, display, stop, dist, max_lr_source=source, find_first=find_first,
                                         resume=resume, started=started, argv=_argv(ctx))
                display.print(f"run: {run.path}  ({summary['status']}: {summary['stop_reason']})")
        except Diverged as e:  # exit 3, and a script reading --json still gets the recorded summary
            if dist.main and e.summary is not None:
                _emit(e.summary, json_)
            raise
    shutdown()  # after an error the process's exit lets go of the group: the other ranks may never arrive
    if dist.main:
        _emit(summary, json_)
    return stop.exit_code if summary["status"] == "interrupted" else 0


MAX_SEEDS = 1000  # each seed is a whole training run; a typo of a few digits must not queue millions


def _parse_seeds(text: str, base: int) -> list[int]:
    """--seeds as its list of seeds, every one checked before the first trains."""
    from .config import SEED_MAX
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",")]
        else:
            count = int(text)
            seeds = list(range(base, base + count)) if count <= MAX_SEEDS else []
            if count > MAX_SEEDS:
                raise UsageError(f"--seeds {text}: expected at most {MAX_SEEDS} seeds (each is a whole training run)")
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: expected a count (--seeds 3) or distinct seeds >= 0 (--seeds 0,1,2)")
    if len(seeds) > MAX_SEEDS:
        raise UsageError(f"--seeds: {len(seeds)} seeds, expected at most {MAX_SEEDS} (each is a whole training run)")
    above = next((s for s in seeds if s > SEED_MAX), None)
    if above is not None:
        raise UsageError(f"--seeds {text!r}: seed {above} is above {SEED_MAX}, the largest train.seed "
                         f"(numpy's generator takes no more)")
    return seeds


# -- grid ---------------------------------------------------------------------------------------------
@app.command("grid", cls=OnecycleCommand)
def grid_cmd(ctx: typer.Context, config: Config_ = None, set_: Set_ = None,
             vary: Annotated[Optional[list[str]], typer.Option(
                 "--vary", metavar="KEY=V1,V2,...", help="Values of any config key (repeatable): the members are "
                 "every combination, times the seeds.", autocompletion=completion.config_keys)] = None,
             seeds: Annotated[Optional[str], typer.Option("--seeds", metavar="N|S1,S2,...",
                              help="Run every point with N seeds (or these seeds).")] = None,
             around: Annotated[Optional[str], typer.Option(
                 "--around", metavar="find", help="Run the range test once, then vary schedule.max_lr over its "
                 "suggestion x --factors.")] = None,
             factors: Annotated[Optional[str], typer.Option(
                 "--factors", metavar="F1,F2,...", help="--around find's multiples of the suggestion "
                 "(default 1/4,1/2,1,2,4).")] = None,
             parallel: Annotated[Optional[int], typer.Option(
                 "--parallel", min=1, metavar="N", help="Members at a time, each its own process (default: the "
                 "visible GPUs, else 1); on the CPU each gets cores // N threads. With --launcher: the job "
                 "array's tasks at a time.")] = None,
             resume: Annotated[Optional[Path], typer.Option(
                 "--resume", metavar="GRID_DIR", callback=_path, help="Run what a grid has not completed: "
                 "interrupted members continue from their checkpoints.")] = None,
             count: Annotated[bool, typer.Option(
                 "--count", help="Print the number of members and exit (for sbatch --array=0-$((N-1))).")] = False,
             index: Annotated[Optional[str], typer.Option(
                 "--index", metavar="K|slurm", help="Run member K alone into --grid-dir (slurm: "
                 "SLURM_ARRAY_TASK_ID); run again after SIGUSR1 (exit 138) to continue it.")] = None,
             grid_dir: Annotated[Optional[Path], typer.Option(
                 "--grid-dir", metavar="DIR", callback=_path, help="The grid directory the --index tasks (or "
                 "--launcher's jobs) share; made by whichever comes first.")] = None,
             collect: Annotated[Optional[Path], typer.Option(
                 "--collect", metavar="GRID_DIR", callback=_path, help="Rebuild grid.json, grid.csv, grid.png "
                 "and report.html from the members there now.")] = None,
             launcher: Annotated[Optional[str], typer.Option(
                 "--launcher", metavar="slurm|local", help="Send the members out as one submitit job array "
                 "(pip install 'onecycle[slurm]'); local: submitit's local executor, on this machine.")] = None,
             slurm: Annotated[Optional[list[str]], typer.Option(
                 "--slurm", metavar="KEY=VALUE", help="A submitit/SLURM parameter (repeatable), e.g. "
                 "partition=gpu, timeout_min=240, gpus_per_node=1.")] = None,
             max_lr: Annotated[Optional[str], typer.Option("--max-lr", metavar="FLOAT",
                               help="schedule.max_lr (a number)")] = None,
             epochs: Epochs_ = None, batch_size: BatchSize_ = None, accum_steps: AccumSteps_ = None,
             data_dir: DataDir_ = None, seed: Seed_ = None, device: Device_ = None, runs_dir: RunsDir_ = None,
             dataset: Dataset_ = None, model: Model_ = None,
             schedule: Annotated[Optional[str], typer.Option("--schedule", metavar="onecycle|constant|step|cosine",
                                 help="schedule.name")] = None,
             precision: Precision_ = None, log: Log_ = None,
             json_: Annotated[bool, typer.Option("--json", help="Print grid.json on stdout at the end.")] = False
             ) -> int:
    """Train every combination of --vary values and --seeds, N at a time, into one grid directory.

    Each member is an ordinary `onecycle train` run (its own process and run directory); the grid
    directory (runs/<timestamp>-grid-<config>/) holds grid.json, grid.csv, grid.png and report.html.
    On a cluster: --count, then one --index K --grid-dir DIR per array task, then --collect DIR; or
    --launcher slurm to do all three through submitit.

    Exit codes: 0 every member completed; 3 some diverged (none failed); 1 some failed (or, for
    --collect, are not done); 2 a bad spec or config (nothing run); 130 / 143 interrupted by SIGINT /
    SIGTERM, 138 / 140 by SIGUSR1 / SIGUSR2 (passed on to the running members, which checkpoint:
    continue with --resume GRID_DIR, or the same --index command).
    """
    started = time.time()
    from .grid import array, command
    display = _display()
    named = {"epochs": epochs, "batch_size": batch_size, "accum_steps": accum_steps, "data_dir": data_dir,
             "device": device,
             "runs_dir": runs_dir, "dataset": dataset, "model": model, "precision": precision,
             "schedule": schedule, "max_lr": max_lr, "log": log}
    spec_flags = {**named, "config": config, "set": set_, "vary": vary, "seeds": seeds, "around": around,
                  "factors": factors, "seed": seed}
    modes = {"--resume": resume, "--collect": collect, "--count": count, "--index": index, "--launcher": launcher}
    chosen = [flag for flag, value in modes.items() if value]
    if len(chosen) > 1:
        raise UsageError(f"conflicting flags: {' and '.join(chosen)}; give one")
    if grid_dir is not None and not (index or launcher):
        raise UsageError("--grid-dir names the directory that --index tasks or --launcher's jobs share; "
                         "give it with one of those")
    if slurm and not launcher:
        raise UsageError("--slurm KEY=VALUE goes with --launcher slurm")
    if parallel is not None and (index or count or collect):
        raise UsageError(f"--parallel: {chosen[0]} runs no members side by side; give no --parallel")
    if resume is not None or collect is not None:
        flag, path = ("--resume", resume) if resume is not None else ("--collect", collect)
        given = [f"--{n.replace('_', '-')}" for n, v in spec_flags.items() if v]
        if given:
            raise UsageError(f"{flag} takes the grid as grid.json gives it: it takes no {', '.join(given)}")
        if collect is not None:
            grid, code = array.collect(collect, display)
        else:
            grid, code = command.resume(resume, parallel, display)
        command.say_findings(grid, started, display, json_)
        return code
    if not (count or index or launcher):
        from .grid import launch, warm
        warm.prestart(launch.visible_gpus(device or "auto"))  # the members' server imports while this validates
    flags = _named(**named)
    if max_lr is not None and max_lr == "find":
        raise UsageError("--max-lr find: a grid takes a number here; --around find runs the range test once "
                         "and varies max_lr around its suggestion")
    base = _resolve(config, set_, {**flags, **_named(seed=seed)})  # the config alone first: its own errors
    _check_trackers(base)
    seed_list = _parse_seeds(seeds, base.config.train.seed) if seeds is not None else [base.config.train.seed]
    if seeds is not None and seed is not None:
        raise UsageError("conflicting flags: --seed and --seeds; give one")
    given = command.Given(config, set_ or [], flags, vary or [], seed_list, around, factors, _argv(ctx))
    if count:
        return command.count(given)
    if index is not None:
        if grid_dir is None:
            raise UsageError("--index K runs one member into the grid directory its array shares: give --grid-dir DIR")
        return command.index(given, index, grid_dir, display)
    if launcher is not None:
        from .grid import submit
        grid, code = submit.launch_array(given, launcher, slurm or [], parallel, grid_dir, display)
    else:
        grid, code = command.start(given, parallel, display)
    command.say_findings(grid, started, display, json_)
    return code


# -- config, presets, init, schedule, plot ------------------------------------------------------------
@app.command("config", cls=OnecycleCommand)
def config_cmd(config: Config_ = None, set_: Set_ = None,
               max_lr: Annotated[Optional[str], typer.Option("--max-lr", metavar="FLOAT",
                                                             help="schedule.max_lr")] = None,
               epochs: Epochs_ = None, batch_size: BatchSize_ = None, data_dir: DataDir_ = None,
               seed: Seed_ = None, device: Device_ = None, runs_dir: RunsDir_ = None,
               list_: Annotated[bool, typer.Option("--list", help="List the shipped presets instead "
                                                   "(as onecycle presets does).")] = False,
               json_: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False) -> int:
    """Print the resolved config (defaults < YAML < environment < flags) and exit.

    Keys that the chosen dataset, model, optimiser and schedule never read keep their values (the
    output loads back as a config) and carry a `# not read` comment saying when they would be.
    """
    if list_:
        return presets_cmd(json_=json_)
    from .config import COMMANDS, MODEL_NAMES_HELP, to_yaml
    resolved = _resolve(config, set_, _named(max_lr=max_lr, epochs=epochs, batch_size=batch_size, data_dir=data_dir,
                                             seed=seed, device=device, runs_dir=runs_dir))
    if json_:
        sys.stdout.write(json.dumps(resolved.config.model_dump(mode="json")) + "\n")
    else:
        _say(f"# resolved from {resolved.path}")
        _say(f"# model.name: {MODEL_NAMES_HELP}")
        sys.stdout.write(to_yaml(resolved.config, COMMANDS))
    return 0


@app.command("presets", cls=OnecycleCommand)
def presets_cmd(json_: Annotated[bool, typer.Option("--json", help="Print the presets as one JSON list on stdout.")]
                = False) -> int:
    """List the shipped presets, one line each: the names --config and init take."""
    from .presets import listing
    rows = listing()
    if json_:
        sys.stdout.write(json.dumps(rows) + "\n")
        return 0
    width = max(len(r["name"]) for r in rows)
    display = _display()
    for r in rows:  # plain text: rich would read a [ in a description as markup
        display.print(f"{r['name']:<{width}}  {r['description']}", markup=False)
    return 0


@app.command("init", cls=OnecycleCommand)
def init_cmd(name: Annotated[str, typer.Argument(metavar="[NAME]", help="A shipped preset (onecycle presets).",
                                                 autocompletion=completion.preset_names)] = "cifar",
             path: Annotated[Optional[str], typer.Argument(metavar="[PATH]", callback=_path,
                                                           help="The file to write, or a folder "
                                                           "to write NAME.yaml into (default: ./NAME.yaml).")] = None,
             force: Annotated[bool, typer.Option("--force", help="Replace a file already there.")] = False) -> int:
    """Write an editable copy of a preset, comments and all: onecycle init cifar -> ./cifar.yaml."""
    from .presets import write_copy
    written = write_copy(name, path, force)
    import shlex
    _display().print(f"wrote {written}: edit it, then onecycle train --config {shlex.quote(str(written))}",
                     markup=False)
    return 0


MAX_PREVIEW_STEPS = 2_000_000  # the real scheduler, stepped once per step: about 10 s at this size


@app.command("schedule", cls=OnecycleCommand)
def schedule_cmd(config: Config_ = None, set_: Set_ = None,
                 max_lr: Annotated[Optional[str], typer.Option("--max-lr", metavar="FLOAT",
                                                               help="schedule.max_lr")] = None,
                 epochs: Epochs_ = None, batch_size: BatchSize_ = None, data_dir: DataDir_ = None,
                 schedule: Annotated[Optional[str], typer.Option("--schedule", metavar="onecycle|constant|step|cosine",
                                                                 help="schedule.name")] = None,
                 steps_per_epoch: Annotated[Optional[int], typer.Option(
                     "--steps-per-epoch", min=1, metavar="N",
                     help="Override the count taken from the dataset's known size.")] = None,
                 out: Annotated[Path, typer.Option("--out", metavar="PATH", callback=_path,
                                                   help="Where to write the PNG.")] = Path("schedule.png"),
                 json_: JsonSchedule_ = False) -> int:
    """Preview the LR and momentum of every step (each parameter group's, and both cycles of fine-tuning),
    without touching any data."""
    from .datasets import train_size
    from .models.groups import group_names
    from .runs.plots import schedule_figure
    from .schedules import check_lengths, cycle_phase_changes, cycles, preview_cycles
    resolved = _resolve(config, set_, _named(max_lr=max_lr, epochs=epochs, batch_size=batch_size, data_dir=data_dir,
                                             schedule=schedule))
    cfg = resolved.config
    if out.is_dir() or not out.parent.is_dir():  # found now, not after stepping through the schedule
        raise UsageError(f"--out {out}: " + (f"a directory; expected a file name such as {out / 'schedule.png'}"
                                             if out.is_dir() else f"the folder {out.parent} does not exist"))
    per_epoch = steps_per_epoch or train_size(cfg.data) // cfg.train.batch_size
    if per_epoch < 1:
        raise UsageError(f"train.batch_size = {cfg.train.batch_size} is larger than the {train_size(cfg.data)} "
                         f"training images of {cfg.data.dataset!r}")
    groups = group_names(cfg.model.name)
    check_lengths(cfg, per_epoch)
    plan = cycles(cfg, len(groups))
    total = per_epoch * sum(c.epochs for c in plan)
    if total > MAX_PREVIEW_STEPS:
        raise UsageError(f"a {total:,}-step schedule ({total // per_epoch:,} epochs x {per_epoch:,} steps) is more "
                         f"than the {MAX_PREVIEW_STEPS:,} steps a preview walks through: lower --epochs or "
                         f"--steps-per-epoch")
    momentum = cfg.optim.betas[0] if cfg.optim.name == "adamw" else cfg.optim.momentum
    group_lrs, moms = preview_cycles(plan, per_epoch, cfg.optim.name, momentum)
    lrs = group_lrs[-1]  # the head's, as steps.csv's lr column
    phases = cycle_phase_changes(plan, per_epoch)
    peak = max(range(total), key=lambda i: lrs[i])
    shown = {f"lr_{i} ({name})": g for i, (name, g) in enumerate(zip(groups, group_lrs))} if len(set(
        round(v, 15) for c in plan for v in c.max_lrs)) > 1 or len(plan) > 1 else lrs
    schedule_figure(range(total), shown, moms, out, title=f"{resolved.name}: {cfg.schedule.name}"
                    f"{f' ({cfg.schedule.shape})' if cfg.schedule.name == 'onecycle' else ''}"
                    f"{', fine_tune' if len(plan) > 1 else ''}, {total} steps", phases=phases)
    summary = {"config": resolved.name, "schedule": cfg.schedule.name, "shape": cfg.schedule.shape,
               "steps": total, "steps_per_epoch": per_epoch, "epochs": cfg.train.epochs,
               "freeze_epochs": cfg.train.freeze_epochs,
               "start_lr": lrs[0], "peak_lr": lrs[peak], "peak_step": peak, "final_lr": lrs[-1],
               "momentum": {"start": moms[0], "at_peak": moms[peak], "final": moms[-1]},
               "phases": [{"name": n, "step": s} for n, s in phases], "png": str(out),
               "groups": [{"name": name, "start_lr": g[0], "peak_lr": max(g), "final_lr": g[-1]}
                          for name, g in zip(groups, group_lrs)],
               "cycles": [{"name": c.name, "epochs": c.epochs, "frozen": c.frozen, "max_lrs": list(c.max_lrs),
                           "pct_start": c.schedule.pct_start, "div": c.schedule.div} for c in plan]}
    display = _display()
    display.table(f"{resolved.name}: {summary['schedule']} over {total} steps ({per_epoch} per epoch)",
                  ["", "step", "lr", "momentum"],
                  [["start", 0, f"{lrs[0]:.3e}", f"{moms[0]:.3f}"],
                   ["peak", peak, f"{lrs[peak]:.3e}", f"{moms[peak]:.3f}"],
                   ["final", total - 1, f"{lrs[-1]:.3e}", f"{moms[-1]:.3f}"]]
                  + [[f"phase: {n}", s, f"{lrs[min(s, total - 1)]:.3e}", f"{moms[min(s, total - 1)]:.3f}"]
                     for n, s in phases])
    if len(groups) > 1 and shown is not lrs:
        display.table("parameter groups, body to head (lr is the head's)", ["group"] + [f"{c.name} peak" for c in plan],
                      [[name] + [f"{c.max_lrs[i]:.3e}" for c in plan] for i, name in enumerate(groups)])
    display.text_plot(list(range(total)), {"lr": lrs}, "lr against step")
    display.print(f"wrote {out}", markup=False)
    _emit(summary, json_)
    return 0


@app.command("plot", cls=OnecycleCommand)
def plot_cmd(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", callback=_path,
                                                     help="A run directory (or its id under the runs root).",
                                                     autocompletion=completion.run_dirs)],
             runs_dir: RunsDir_ = None) -> int:
    """Redraw a run's PNGs from its files."""
    from .runs.history import run_dir_of
    from .runs.plots import plot_run
    run_dir = run_dir_of(run_dir, _runs_root(runs_dir))
    written, errors = plot_run(run_dir)
    for path in written:
        _say(path)
    for e in errors:
        _error(f"plot failed: {e}")
    return 1 if errors else 0


# -- runs, compare, report ------------------------------------------------------------------------------
def _runs_root(runs_dir: str | None, config: str | None = None) -> Path:
    """run.root as a train run would resolve it: --runs-dir < ONECYCLE_RUNS < the config's < 'runs'."""
    return Path(_resolve(config, None, _named(runs_dir=runs_dir)).config.run.root).expanduser()


@app.command("runs", cls=OnecycleCommand)
def runs_cmd(directory: Annotated[Optional[Path], typer.Argument(
                 metavar="[DIR]", callback=_path,
                 help="Where the runs are (default: run.root, --runs-dir or ONECYCLE_RUNS).")] = None,
             runs_dir: RunsDir_ = None, config: Config_ = None,
             json_: Annotated[bool, typer.Option("--json", help="Print the runs as one JSON list on stdout.")] = False
             ) -> int:
    """List past runs, newest first; crashed and unfinished ones included."""
    from .runs.history import COLUMNS, NARROW_DROPS, list_runs, table_rows
    if directory is not None and runs_dir is not None:
        raise UsageError(f"conflicting arguments: DIR {directory} and --runs-dir {runs_dir}; give one")
    root = directory if directory is not None else _runs_root(runs_dir, config)
    rows = list_runs(root)
    if json_:
        from .runs.directory import to_json
        sys.stdout.write(to_json(rows).replace("\n", "") + "\n")
    display = _display()
    if rows:
        display.table(f"{len(rows)} run{'s' * (len(rows) != 1)} in {root}, newest first", COLUMNS, table_rows(rows),
                      whole="id", narrow_drops=NARROW_DROPS)
    else:
        display.print(f"no runs in {root}")
    return 0


@app.command("compare", cls=OnecycleCommand)
def compare_cmd(runs: Annotated[Optional[list[str]], typer.Argument(
                    metavar="RUN...", callback=_path, help="Run directories (or run ids under the runs root).",
                    autocompletion=completion.comparable_runs)] = None,
                last: Annotated[Optional[int], typer.Option("--last", min=2, metavar="N",
                                help="Compare the N newest train runs instead of naming them.")] = None,
                runs_dir: RunsDir_ = None, json_: JsonCompare_ = False) -> int:
    """Overlay runs' curves in one PNG and show the settings that differ next to their results."""
    from .runs.compare import compare, table
    from .runs.history import list_runs
    root = _runs_root(runs_dir)
    if last is not None:
        if runs:
            raise UsageError("conflicting arguments: RUN... and --last; give one")
        newest = [r["path"] for r in list_runs(root) if r["command"] == "train"][:last]
        if len(newest) < last:
            raise UsageError(f"--last {last}: {root} holds {len(newest)} train run(s)")
        runs = newest[::-1]  # oldest first, as they were run
    out, summary = compare(runs or [], root)
    display = _display()
    columns, rows = table(summary)
    display.table(f"{len(summary['runs'])} runs: the settings that differ, then the results", columns, rows)
    if summary["png_error"]:
        display.warn(f"no compare.png: {summary['png_error']}")
    display.print(f"wrote {out}: {', '.join(n for n in (summary['png'], 'summary.json', 'report.html') if n)}",
                  soft_wrap=True)
    _emit(summary, json_)
    return 0


@app.command("report", cls=OnecycleCommand)
def report_cmd(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", callback=_path,
                                                      help="A run (or comparison) directory, or its id under the "
                                                           "runs root.",
                                                      autocompletion=completion.run_dirs)],
               runs_dir: RunsDir_ = None) -> int:
    """(Re)write a run's self-contained report.html and print its path."""
    from .runs.compare import write_compare_report
    from .runs.history import read_json, run_dir_of
    from .runs.report import write_run_report
    run_dir = run_dir_of(run_dir, _runs_root(runs_dir))
    command = (read_json(run_dir / "summary.json") or {}).get("command")
    if command == "grid":
        from .grid.record import write_report
        grid = read_json(run_dir / "grid.json")
        if not grid or not isinstance(grid.get("members"), list):
            raise UsageError(f"{run_dir}: a grid directory without a readable grid.json")
        _say(write_report(run_dir, grid))
        return 0
    comparison = command == "compare"
    _say(write_compare_report(run_dir) if comparison else write_run_report(run_dir))
    return 0


# -- evaluate, predict, export: a trained run, used ------------------------------------------------------
RunArg_ = Annotated[Path, typer.Argument(metavar="RUN_DIR", callback=_path,
                                         help="A train run's directory, or its id under the runs root.",
                                         autocompletion=completion.run_dirs)]
Checkpoint_ = Annotated[str, typer.Option("--checkpoint", metavar="last|best|ema", help=(
    "Which weights: last (the default: 1cycle is meant to be read at its end), best (checkpoints/best.pt, the "
    "epoch of highest validation accuracy) or ema (the weight average of train.ema, kept in last.pt)."))]
Tta_ = Annotated[str, typer.Option("--tta", metavar="none|flip",
                                   help="flip: average each image's probabilities with its mirror's.")]
EvalDevice_ = Annotated[Optional[str], typer.Option("--device", metavar="auto|cpu|cuda[:N]",
                                                    help="Where the model runs (auto: a GPU if there is one).")]
EvalBatch_ = Annotated[Optional[int], typer.Option("--batch-size", metavar="INT", min=1, max=1 << 16,
                                                   help="Images a forward pass (default: the run's "
                                                        "train.eval_batch_size; halved with --tta flip).")]


@app.command("evaluate", cls=OnecycleCommand)
def evaluate_cmd(run_dir: RunArg_, checkpoint: Checkpoint_ = "last", tta: Tta_ = "none",
                 data_dir: Annotated[Optional[str], typer.Option(
                     "--data-dir", metavar="PATH", callback=_path,
                     help="Score another set of the same classes: a folder (every image; a train/ + valid/ tree: "
                          "its valid/), or a built-in set's root.")] = None,
                 dataset: Annotated[Optional[str], typer.Option(
                     "--dataset", metavar="NAME", help="Score another built-in set's test split (or folder).")] = None,
                 device: EvalDevice_ = None, batch_size: EvalBatch_ = None, runs_dir: RunsDir_ = None,
                 progress: Progress_ = "auto",
                 json_: Annotated[bool, typer.Option("--json", help="Print the evaluation as one JSON object on "
                                                                   "stdout.")] = False) -> int:
    """Score a run's checkpoint: accuracy, top-5, loss, per class, confusion matrix and top losses."""
    from .runs.history import run_dir_of
    from .trained.evaluate import evaluate_run
    run_dir = run_dir_of(run_dir, _runs_root(runs_dir))
    result = evaluate_run(run_dir, _display(progress), checkpoint, tta, data_dir, dataset, device or "auto",
                          batch_size)
    _emit(result, json_)
    return 0


@app.command("predict", cls=OnecycleCommand)
def predict_cmd(run_dir: RunArg_,
                paths: Annotated[list[str], typer.Argument(metavar="FILE|FOLDER", callback=_path,
                                                           help="Images, or folders of them (walked).")],
                checkpoint: Checkpoint_ = "last", tta: Tta_ = "none",
                top: Annotated[int, typer.Option("--top", metavar="K", min=1, max=1000,
                                                 help="The K most likely classes of each image.")] = 3,
                out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE", callback=_path,
                                                            help="Write the CSV there (whole, when done) instead "
                                                                 "of stdout.")] = None,
                strict: Annotated[bool, typer.Option("--strict", help="Refuse a file that cannot be decoded, "
                                                                      "rather than skip it.")] = False,
                device: EvalDevice_ = None, batch_size: EvalBatch_ = None, runs_dir: RunsDir_ = None) -> int:
    """Classify image files with a run's model: CSV of path,label,probability and the top-k."""
    from .errors import UsageError as Usage
    from .runs.history import run_dir_of
    from .trained.load import load_trained
    from .trained.predict import predict_files
    from .trained.scores import TTA
    if tta not in TTA:
        raise Usage(f"--tta {tta!r}: expected {' or '.join(TTA)}")
    run_dir = run_dir_of(run_dir, _runs_root(runs_dir))
    trained = load_trained(run_dir, checkpoint, device or "auto")
    display = _display("none")
    args = dict(top=top, tta=tta == "flip", batch=batch_size, strict=strict, warn=display.warn)
    if out is None:
        predict_files(trained, paths, sys.stdout, **args)
    else:
        from .safe_files import atomic_text_file
        with atomic_text_file(out) as f:
            result = predict_files(trained, paths, f, **args)
        display.print(f"{result['predicted']} predictions written to {out}", markup=False)
    return 0


@app.command("export", cls=OnecycleCommand)
def export_cmd(run_dir: RunArg_,
               out: Annotated[Path, typer.Option("--out", metavar="DIR", callback=_path,
                                                 help="The bundle's folder (made if missing).")],
               checkpoint: Checkpoint_ = "last", runs_dir: RunsDir_ = None,
               json_: Annotated[bool, typer.Option("--json", help="Print what was written as one JSON object on "
                                                                 "stdout.")] = False) -> int:
    """Write a bundle that needs no onecycle: a torch.export program taking uint8 images, safetensors, JSON."""
    from .runs.history import run_dir_of
    from .trained.export import export_run
    run_dir = run_dir_of(run_dir, _runs_root(runs_dir))
    result = export_run(run_dir, out, checkpoint)
    if not json_:
        _say(out)
    _emit(result, json_)
    return 0


# -- data -----------------------------------------------------------------------------------------------
@data_app.command("check", cls=OnecycleCommand)
def data_check(config: Config_ = None, set_: Set_ = None, data_dir: DataDir_ = None, dataset: Dataset_ = None,
               progress: Progress_ = "auto", json_: JsonReport_ = False) -> int:
    """Verify that the dataset a config needs is on disk and readable (exit 2 and say what is missing).

    A folder is decoded into its cache here, once, with every file that cannot be decoded listed (--json)."""
    from .datasets import check_dataset
    resolved = _resolve(config, set_, _named(data_dir=data_dir, dataset=dataset))
    display = _display(progress)
    with display.counter("decode") as decoded:
        report = check_dataset(resolved.config.data, decoded)
    _emit(report, json_)
    if not json_:
        _say(report["message"])
        if report.get("counts"):  # a folder: what each class holds, and the files that were left out
            for line in _folder_lines(report):
                _say(line)
    if report.get("skipped"):
        sys.stdout.flush()  # the report first, then the warning, in a log that takes both
        display.warn(f"{len(report['skipped'])} of {report['files']} files could not be decoded and are skipped"
                     f"{'' if json_ else ' (--json lists them all)'}")
    for line in report.get("warnings", []):  # a folder's classes that only validation holds
        display.warn(line)
    return 0 if report["ok"] else EXIT_USAGE


def _folder_lines(report: dict, most: int = 20) -> list[str]:
    """A folder's classes with their training and validation counts, then the first skipped files and why."""
    names = report["class_names"]
    width = max(len("class"), *(len(c) for c in names[:most]))
    lines = [f"  {'class':<{width}}  {'train':>7}  {'valid':>7}"]
    counts = report["counts"]
    lines += [f"  {c:<{width}}  {counts['train'][c]:>7}  {counts['valid'][c]:>7}" for c in names[:most]]
    if len(names) > most:
        lines.append(f"  ... and {len(names) - most} more classes (--json lists them all)")
    for s in report["skipped"][:most // 2]:
        lines.append(f"  skipped {s['file']}: {s['reason']}")
    return lines


@data_app.command("download", cls=OnecycleCommand)
def data_download(config: Config_ = None, set_: Set_ = None, data_dir: DataDir_ = None, dataset: Dataset_ = None,
                  json_: JsonReport_ = False) -> int:
    """Fetch the dataset a config needs into the data root (then copy that folder to offline boxes)."""
    from .datasets import check_dataset, download_dataset
    resolved = _resolve(config, set_, _named(data_dir=data_dir, dataset=dataset))
    report = check_dataset(resolved.config.data)
    if not report["ok"]:  # already readable: nothing to fetch, and no network needed to say so
        download_dataset(resolved.config.data)
        report = check_dataset(resolved.config.data)
    _emit(report, json_)
    if not json_:
        _say(report["message"])
    return 0 if report["ok"] else EXIT_USAGE


# libgomp's spins before a waiting thread sleeps: its default 300,000 keeps a core busy between steps;
# 10,000 trains the 3-vs-7 net at 2 threads as fast (1.5-2.3 s against 1.2-2.0 s), where PASSIVE (no spin)
# took 3.9-5.8 s: the threads of one step's back-to-back operations would sleep and wake between each
SPIN_COUNT = 10_000


def main() -> None:
    """The console entry point (`onecycle`, `python -m onecycle_cli`)."""
    # before torch loads OpenMP: a thread waiting for work spins briefly, then sleeps, instead of spinning on
    # a core that another process on a shared box needs (threads.py); a user's own setting stands
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
    try:
        app(prog_name="onecycle")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    # Python's own teardown of torch and matplotlib takes about a second on a small CPU. Every run file
    # is closed by now, so skip it when nothing else is left to finish: no other thread, no child process, no
    # W&B run (its service process writes the offline run's records out at wandb's own exit handler).
    if threading.active_count() == 1 and not multiprocessing.active_children() and "wandb" not in sys.modules:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
