"""The command line: `onecycle find`, `onecycle train` and the commands around them.

Each command parses its flags, resolves the config, calls one plain function and prints. Every
named flag is a config key in disguise (`--epochs` is `train.epochs`), so flags, `--set`, the
environment and YAML are validated by the same schema and fail with the same one-line messages.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from . import rundir
from .errors import EXIT_USAGE, OnecycleError, UsageError

try:  # typer 0.2x carries its own copy of click; older typer uses click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError as ClickUsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError as ClickUsageError
    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:  # click < 8.2 prints the help and exits by itself
        NoArgsIsHelpError = ClickUsageError


class OnecycleGroup(TyperGroup):
    """Turns every error, click's own included, into one line on stderr and the contract's exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        rundir.INVOCATION[:] = ["onecycle", *args]  # what meta.json records, however onecycle was started
        try:
            rv = super().main(args, "onecycle", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.Exit as e:
            code = e.exit_code
        except NoArgsIsHelpError as e:
            if e.ctx is not None and not str(e).strip():
                print(e.ctx.get_help())
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
            _error(f"unexpected error: {type(e).__name__}: {e} (set ONECYCLE_DEBUG=1 for the traceback)")
            code = 1
        sys.stdout.flush()
        sys.exit(code)


def _error(message: str, where: str = "onecycle") -> None:
    sys.stderr.write(f"{where}: error: " + " ".join(message.split()) + "\n")
    sys.stderr.flush()


app = typer.Typer(cls=OnecycleGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="LR range tests and 1cycle training for image classifiers, headless and reproducible.")
data_app = typer.Typer(cls=OnecycleGroup, no_args_is_help=True, help="Check or fetch the datasets a config needs.")
app.add_typer(data_app, name="data")

# -- options shared by the commands: each names the config key it sets ------------------------------
Config_ = Annotated[Optional[str], typer.Option("--config", "-c", metavar="PATH|NAME",
                                                help="YAML file, or a shipped config: cifar, mnist, mnist_sample.")]
Set_ = Annotated[Optional[list[str]], typer.Option("--set", metavar="SECTION.KEY=VALUE",
                                                   help="Override any config key (repeatable).")]
Epochs_ = Annotated[Optional[str], typer.Option("--epochs", metavar="INT", help="train.epochs")]
BatchSize_ = Annotated[Optional[str], typer.Option("--batch-size", metavar="INT", help="train.batch_size")]
DataDir_ = Annotated[Optional[str], typer.Option("--data-dir", metavar="PATH", help="data.root (or ONECYCLE_DATA)")]
Seed_ = Annotated[Optional[str], typer.Option("--seed", metavar="INT", help="train.seed")]
Device_ = Annotated[Optional[str], typer.Option("--device", metavar="auto|cpu|cuda[:N]", help="train.device")]
RunsDir_ = Annotated[Optional[str], typer.Option("--runs-dir", metavar="PATH", help="run.root (or ONECYCLE_RUNS)")]
Dataset_ = Annotated[Optional[str], typer.Option("--dataset", metavar="NAME", help="data.dataset")]
Model_ = Annotated[Optional[str], typer.Option("--model", metavar="NAME", help="model.name")]
Precision_ = Annotated[Optional[str], typer.Option("--precision", metavar="auto|bf16|fp16|fp32",
                                                   help="train.precision")]
Json_ = Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON object on stdout.")]


def _named(**flags) -> dict[str, tuple[str, object]]:
    """{config key: (flag, value)} for the named flags that were given."""
    keys = {"epochs": "train.epochs", "batch_size": "train.batch_size", "data_dir": "data.root",
            "seed": "train.seed", "device": "train.device", "runs_dir": "run.root", "dataset": "data.dataset",
            "model": "model.name", "precision": "train.precision", "max_lr": "schedule.max_lr",
            "schedule": "schedule.name", "compile": "train.compile", "activation_stats": "train.activation_stats",
            "tensorboard": "run.tensorboard", "num_it": "find.num_it", "val_batches": "find.val_batches",
            "start_lr": "find.start_lr", "end_lr": "find.end_lr", "suggest": "find.suggest"}
    return {keys[name]: ("--" + name.replace("_", "-"), value) for name, value in flags.items() if value is not None}


def _emit(summary: dict, as_json: bool) -> None:
    if as_json:
        from .rundir import to_json
        sys.stdout.write(to_json(summary, indent=None) + "\n")


def _display():
    from .display import Display
    rank = int(os.environ.get("RANK", "0"))
    return Display(enabled=rank == 0)


# -- find ---------------------------------------------------------------------------------------------
@app.command()
def find(config: Config_ = None, set_: Set_ = None,
         sweep: Annotated[Optional[str], typer.Option("--sweep", metavar="KEY=V1,V2,...",
                          help="One curve per value of weight_decay, momentum or batch_size.")] = None,
         num_it: Annotated[Optional[str], typer.Option("--num-it", metavar="INT", help="find.num_it")] = None,
         start_lr: Annotated[Optional[str], typer.Option("--start-lr", metavar="FLOAT", help="find.start_lr")] = None,
         end_lr: Annotated[Optional[str], typer.Option("--end-lr", metavar="FLOAT", help="find.end_lr")] = None,
         val_batches: Annotated[Optional[str], typer.Option("--val-batches", metavar="INT",
                                help="Score each step on N held-out batches (Smith's variant).")] = None,
         suggest: Annotated[Optional[str], typer.Option("--suggest", metavar="valley|steep|minimum|slide",
                            help="find.suggest: the one train --max-lr uses")] = None,
         batch_size: BatchSize_ = None, data_dir: DataDir_ = None, seed: Seed_ = None, device: Device_ = None,
         runs_dir: RunsDir_ = None, dataset: Dataset_ = None, model: Model_ = None, precision: Precision_ = None,
         json_: Json_ = False) -> int:
    """LR range test: grow the LR from start_lr to end_lr over num_it batches and suggest a max_lr."""
    started = time.time()
    from .config import resolve
    from .lr_find import find as run_find, parse_sweep
    from .signals import StopFlag
    parsed = parse_sweep(sweep) if sweep is not None else None
    resolved = resolve(config, set_, _named(num_it=num_it, start_lr=start_lr, end_lr=end_lr, val_batches=val_batches,
                                            suggest=suggest, batch_size=batch_size, data_dir=data_dir, seed=seed,
                                            device=device, runs_dir=runs_dir, dataset=dataset, model=model,
                                            precision=precision))
    from .dist import init_distributed, shutdown
    dist = init_distributed(resolved.config.train.device)
    display = _display()
    try:
        with StopFlag() as stop:
            run, summary = run_find(resolved, display, stop, dist, parsed, started=started)
    finally:
        shutdown()
    display.print(f"run: {run.path}")
    if dist.main:
        _emit(summary, json_)
    return stop.exit_code if summary["status"] == "interrupted" else 0


# -- train --------------------------------------------------------------------------------------------
def _max_lr_flag(value: str | None, suggest_key: str | None) -> tuple[object, str, bool]:
    """--max-lr as (value for the config or None, where it came from, run the range test first?)."""
    if value is None:
        return None, "config", False
    if value == "find":
        return None, "find", True
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise UsageError(f"--max-lr {value}: expected a finite number > 0, e.g. --max-lr 0.8")
        return value, f"--max-lr {value}", False
    path = Path(value)
    if not value.strip() or not path.is_dir():  # '' would be the current directory
        raise UsageError(f"--max-lr {value!r}: expected a number, 'find', or the directory of a finished find run")
    from .rundir import RunDir
    summary = RunDir(path).read_json("summary.json")
    if summary.get("command") != "find" or summary.get("status") != "completed" or not summary.get("suggestions"):
        state = (f"a {summary.get('command')} run with status {summary.get('status')!r}" if summary
                 else "not a onecycle run (no readable summary.json)")
        raise UsageError(f"--max-lr {value}: expected a finished find run, but it is {state}")
    from .config import FindConfig
    name = suggest_key or summary.get("suggestion", {}).get("name", FindConfig().suggest)
    s = summary["suggestions"].get(name)
    if s is None or not isinstance(s.get("lr"), (int, float)) or not math.isfinite(s["lr"]) or s["lr"] <= 0:
        raise UsageError(f"--max-lr {value}: that find run has no usable {name!r} suggestion")
    return s["lr"], f"find run {path}: {name}", False


@app.command()
def train(config: Config_ = None, set_: Set_ = None,
          max_lr: Annotated[Optional[str], typer.Option("--max-lr", metavar="FLOAT|find|FIND_RUN",
                            help="schedule.max_lr: a number, 'find' (range test first), or a find run's directory.")] = None,
          epochs: Epochs_ = None, batch_size: BatchSize_ = None, data_dir: DataDir_ = None, seed: Seed_ = None,
          device: Device_ = None, runs_dir: RunsDir_ = None, dataset: Dataset_ = None, model: Model_ = None,
          schedule: Annotated[Optional[str], typer.Option("--schedule", metavar="onecycle|constant|step|cosine",
                              help="schedule.name")] = None,
          precision: Precision_ = None,
          compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="train.compile")] = None,
          activation_stats: Annotated[Optional[bool], typer.Option(
              "--activation-stats", help="Record per-layer activation statistics and histograms.")] = None,
          tensorboard: Annotated[Optional[bool], typer.Option(
              "--tensorboard", help="Also write TensorBoard event files (needs onecycle\\[tensorboard]).")] = None,
          seeds: Annotated[Optional[str], typer.Option("--seeds", metavar="N|S1,S2,...",
                           help="Run N seeds (or these seeds) and report mean ± std accuracy.")] = None,
          resume: Annotated[Optional[Path], typer.Option("--resume", metavar="RUN_DIR",
                            help="Continue an interrupted run from its checkpoint.")] = None,
          suggest: Annotated[Optional[str], typer.Option("--suggest", metavar="valley|steep|minimum|slide",
                             help="Which suggestion --max-lr find or FIND_RUN uses (find.suggest).")] = None,
          json_: Json_ = False) -> int:
    """1cycle fit (or a baseline schedule), recorded in runs/<id>/ with checkpoints and plots."""
    started = time.time()
    from .config import resolve
    from .fit import train as run_train, train_seeds
    from .signals import StopFlag
    value, source, find_first = _max_lr_flag(max_lr, suggest)
    flags = _named(epochs=epochs, batch_size=batch_size, data_dir=data_dir, seed=seed, device=device,
                   runs_dir=runs_dir, dataset=dataset, model=model, schedule=schedule, precision=precision,
                   compile=compile, activation_stats=activation_stats, tensorboard=tensorboard, suggest=suggest,
                   max_lr=value)
    if resume is not None:
        if config is not None or seeds is not None or find_first:
            raise UsageError("--resume continues a run with its own config.yaml: it takes no --config, --seeds "
                             "or --max-lr find")
        saved_config = Path(resume) / "config.yaml"
        if not saved_config.is_file():
            from .rundir import RunDir
            RunDir.open(resume)  # says which: no such directory, or not a onecycle run
        resolved = resolve(sets=set_, flags=flags, from_file=saved_config)
    else:
        resolved = resolve(config, set_, flags)
    seed_list = _parse_seeds(seeds, resolved.config.train.seed) if seeds is not None else None
    if seed_list is not None and seed is not None:
        raise UsageError("conflicting flags: --seed and --seeds; give one")
    from .dist import init_distributed, shutdown
    dist = init_distributed(resolved.config.train.device)
    display = _display()
    try:
        with StopFlag() as stop:
            if seed_list is not None:
                summary = train_seeds(resolved, seed_list, display, stop, dist, max_lr_source=source,
                                      find_first=find_first)
            else:
                run, summary = run_train(resolved, display, stop, dist, max_lr_source=source, find_first=find_first,
                                         resume=resume, started=started)
                display.print(f"run: {run.path}  ({summary['status']}: {summary['stop_reason']})")
    finally:
        shutdown()
    if dist.main:
        _emit(summary, json_)
    return stop.exit_code if summary["status"] == "interrupted" else 0


def _parse_seeds(text: str, base: int) -> list[int]:
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",")]
        else:
            seeds = list(range(base, base + int(text)))
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: expected a count (--seeds 3) or distinct seeds >= 0 (--seeds 0,1,2)")
    return seeds


# -- config, schedule, plot ---------------------------------------------------------------------------
@app.command("config")
def config_cmd(config: Config_ = None, set_: Set_ = None,
               max_lr: Annotated[Optional[str], typer.Option("--max-lr", metavar="FLOAT")] = None,
               epochs: Epochs_ = None, batch_size: BatchSize_ = None, data_dir: DataDir_ = None,
               seed: Seed_ = None, device: Device_ = None, runs_dir: RunsDir_ = None,
               json_: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False) -> int:
    """Print the resolved config (defaults < YAML < environment < flags) and exit."""
    from .config import resolve, to_yaml
    resolved = resolve(config, set_, _named(max_lr=max_lr, epochs=epochs, batch_size=batch_size, data_dir=data_dir,
                                            seed=seed, device=device, runs_dir=runs_dir))
    if json_:
        sys.stdout.write(json.dumps(resolved.config.model_dump(mode="json")) + "\n")
    else:
        sys.stdout.write(f"# resolved from {resolved.path}\n" + to_yaml(resolved.config))
    return 0


@app.command("schedule")
def schedule_cmd(config: Config_ = None, set_: Set_ = None,
                 max_lr: Annotated[Optional[str], typer.Option("--max-lr", metavar="FLOAT")] = None,
                 epochs: Epochs_ = None, batch_size: BatchSize_ = None,
                 schedule: Annotated[Optional[str], typer.Option("--schedule", metavar="NAME")] = None,
                 steps_per_epoch: Annotated[Optional[int], typer.Option(
                     "--steps-per-epoch", min=1, help="Override the count taken from the dataset's known size.")] = None,
                 out: Annotated[Path, typer.Option("--out", help="Where to write the PNG.")] = Path("schedule.png"),
                 json_: Json_ = False) -> int:
    """Preview the LR and momentum of every step, without touching any data."""
    from .config import resolve
    from .plots import schedule_figure
    from .schedules import phase_changes, preview
    from .data import train_size
    resolved = resolve(config, set_, _named(max_lr=max_lr, epochs=epochs, batch_size=batch_size, schedule=schedule))
    cfg = resolved.config
    per_epoch = steps_per_epoch or train_size(cfg.data) // cfg.train.batch_size
    if per_epoch < 1:
        raise UsageError(f"train.batch_size = {cfg.train.batch_size} is larger than the {train_size(cfg.data)} "
                         f"training images of {cfg.data.dataset!r}")
    total = per_epoch * cfg.train.epochs
    momentum = cfg.optim.betas[0] if cfg.optim.name == "adamw" else cfg.optim.momentum
    lrs, moms = preview(cfg.schedule, total, cfg.optim.name, momentum)
    phases = phase_changes(cfg.schedule, total)
    peak = max(range(total), key=lambda i: lrs[i])
    schedule_figure(range(total), lrs, moms, out, title=f"{resolved.name}: {cfg.schedule.name}"
                    f"{f' ({cfg.schedule.shape})' if cfg.schedule.name == 'onecycle' else ''}, {total} steps",
                    phases=phases)
    summary = {"config": resolved.name, "schedule": cfg.schedule.name, "shape": cfg.schedule.shape,
               "steps": total, "steps_per_epoch": per_epoch, "epochs": cfg.train.epochs,
               "start_lr": lrs[0], "peak_lr": lrs[peak], "peak_step": peak, "final_lr": lrs[-1],
               "momentum": {"start": moms[0], "at_peak": moms[peak], "final": moms[-1]},
               "phases": [{"name": n, "step": s} for n, s in phases], "png": str(out)}
    display = _display()
    display.table(f"{resolved.name}: {summary['schedule']} over {total} steps ({per_epoch} per epoch)",
                  ["", "step", "lr", "momentum"],
                  [["start", 0, f"{lrs[0]:.3e}", f"{moms[0]:.3f}"], ["peak", peak, f"{lrs[peak]:.3e}", f"{moms[peak]:.3f}"],
                   ["final", total - 1, f"{lrs[-1]:.3e}", f"{moms[-1]:.3f}"]]
                  + [[f"phase: {n}", s, f"{lrs[min(s, total - 1)]:.3e}", f"{moms[min(s, total - 1)]:.3f}"] for n, s in phases])
    display.text_plot(list(range(total)), {"lr": lrs}, "lr against step")
    display.print(f"wrote {out}")
    _emit(summary, json_)
    return 0


@app.command("plot")
def plot_cmd(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory.")]) -> int:
    """Redraw a run's PNGs from its files."""
    from .plots import plot_run
    if not (run_dir / "summary.json").is_file() and not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir}: not a onecycle run directory")
    written, errors = plot_run(run_dir)
    for path in written:
        print(path)
    for e in errors:
        _error(f"plot failed: {e}")
    return 1 if errors else 0


# -- runs, compare, report ------------------------------------------------------------------------------
def _runs_root(runs_dir: str | None, config: str | None = None) -> Path:
    """run.root as a train run would resolve it: --runs-dir < ONECYCLE_RUNS < the config's < 'runs'."""
    from .config import resolve
    return Path(resolve(config, None, _named(runs_dir=runs_dir)).config.run.root).expanduser()


@app.command("runs")
def runs_cmd(directory: Annotated[Optional[Path], typer.Argument(
                 metavar="[DIR]", help="Where the runs are (default: run.root, --runs-dir or ONECYCLE_RUNS).")] = None,
             runs_dir: RunsDir_ = None, config: Config_ = None,
             json_: Annotated[bool, typer.Option("--json", help="Print the runs as one JSON list on stdout.")] = False
             ) -> int:
    """List past runs, newest first; crashed and unfinished ones included."""
    from .runs import COLUMNS, list_runs, table_rows
    if directory is not None and runs_dir is not None:
        raise UsageError(f"conflicting arguments: DIR {directory} and --runs-dir {runs_dir}; give one")
    root = directory if directory is not None else _runs_root(runs_dir, config)
    rows = list_runs(root)
    if json_:
        from .rundir import to_json
        sys.stdout.write(to_json(rows).replace("\n", "") + "\n")
    display = _display()
    if rows:
        display.table(f"{len(rows)} run{'s' * (len(rows) != 1)} in {root}, newest first", COLUMNS, table_rows(rows))
    else:
        display.print(f"no runs in {root}")
    return 0


@app.command("compare")
def compare_cmd(runs: Annotated[Optional[list[str]], typer.Argument(
                    metavar="RUN...", help="Run directories (or run ids under the runs root).")] = None,
                last: Annotated[Optional[int], typer.Option("--last", min=2, metavar="N",
                                help="Compare the N newest train runs instead of naming them.")] = None,
                runs_dir: RunsDir_ = None, json_: Json_ = False) -> int:
    """Overlay runs' curves in one PNG and show the settings that differ next to their results."""
    from .compare import compare, table
    from .runs import list_runs
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
    display.table(f"{len(runs)} runs: the settings that differ, then the results", columns, rows)
    if summary["png_error"]:
        display.warn(f"no compare.png: {summary['png_error']}")
    display.print(f"wrote {out}: {', '.join(n for n in (summary['png'], 'summary.json', 'report.html') if n)}",
                  soft_wrap=True)
    _emit(summary, json_)
    return 0


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run (or comparison) directory.")]
               ) -> int:
    """(Re)write a run's self-contained report.html and print its path."""
    from .report import write_run_report
    from .runs import is_run_dir
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    if not is_run_dir(run_dir):
        raise UsageError(f"{run_dir}: not a onecycle run directory (no summary.json or config.yaml)")
    print(write_run_report(run_dir))
    return 0


# -- data -----------------------------------------------------------------------------------------------
@data_app.command("check")
def data_check(config: Config_ = None, set_: Set_ = None, data_dir: DataDir_ = None, dataset: Dataset_ = None,
               json_: Json_ = False) -> int:
    """Verify that the dataset a config needs is on disk and readable (exit 2 and say what is missing)."""
    from .config import resolve
    from .data import check_dataset
    resolved = resolve(config, set_, _named(data_dir=data_dir, dataset=dataset))
    report = check_dataset(resolved.config.data)
    _emit(report, json_)
    if not json_:
        print(report["message"])
    return 0 if report["ok"] else EXIT_USAGE


@data_app.command("download")
def data_download(config: Config_ = None, set_: Set_ = None, data_dir: DataDir_ = None, dataset: Dataset_ = None,
                  json_: Json_ = False) -> int:
    """Fetch the dataset a config needs into the data root (then copy that folder to offline boxes)."""
    from .config import resolve
    from .data import check_dataset, download_dataset
    resolved = resolve(config, set_, _named(data_dir=data_dir, dataset=dataset))
    report = check_dataset(resolved.config.data)
    if not report["ok"]:  # already readable: nothing to fetch, and no network needed to say so
        download_dataset(resolved.config.data)
        report = check_dataset(resolved.config.data)
    _emit(report, json_)
    if not json_:
        print(report["message"])
    return 0 if report["ok"] else EXIT_USAGE


def main() -> None:
    """The console entry point (`onecycle`, `python -m onecycle_cli`)."""
    try:
        app(prog_name="onecycle")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    # Python's own teardown of torch and matplotlib takes about a second on a small CPU. Every run file
    # is closed by now, so skip it when nothing else is left to finish: no other thread, no child process.
    if threading.active_count() == 1 and not multiprocessing.active_children():
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
