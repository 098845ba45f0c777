"""`--help` of every command at 80 and 120 columns (issue 25, item 6): nothing wider than the terminal,
no metavar split mid-word, descriptions wrapped in a column wide enough to read, nothing cut off with
"…", no `<bool>` for a flag. The commands come from the app itself, so a new one is checked too; the
help is the app's own output with COLUMNS set, as a terminal of that width gives it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer

from conftest import REPO
from onecycle_cli.cli import HELP_WIDTH, app


def _walk(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(typer.main.get_command(app)))
TYPER_OWN = {"help", "install_completion", "show_completion"}  # options Typer adds, not ours


def help_text(path: tuple, columns: int, monkeypatch, capsys, flag: tuple = ("--help",)) -> str:
    """`onecycle PATH... --help` in a terminal `columns` wide: the real app, in this process."""
    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit) as exit_:
        app([*path, *flag], prog_name="onecycle")
    out = capsys.readouterr()
    assert exit_.value.code == 0 and out.err == "", out.err
    return out.out


def squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "onecycle")
def test_help_fits_the_terminal_and_keeps_every_word_whole(path, columns, monkeypatch, capsys):
    text = help_text(path, columns, monkeypatch, capsys)
    lines = text.splitlines()
    assert lines[0].startswith("Usage: onecycle" + "".join(f" {p}" for p in path))
    too_long = [line for line in lines if len(line) > columns]
    assert not too_long, f"wider than {columns} columns: {too_long}"
    assert "…" not in text and "<bool>" not in text
    command = COMMANDS[path]
    for param in command.params:
        if param.param_type_name == "option" and param.name not in TYPER_OWN:
            flag = max(param.opts, key=len)  # --config, not -c
            if param.is_flag:  # a flag shows no metavar: the description follows it on its line
                line = next(line for line in lines if flag in line.split())
                assert not re.search(re.escape(flag) + r"\s+<", line), line
            else:  # a value's metavar is declared, and written whole beside the flag on one line
                assert param.metavar, f"{' '.join(path)} {flag}: no metavar (Typer would show <{param.type.name}>)"
                assert any(f"{flag} {param.metavar}" in line for line in lines), f"{flag} {param.metavar}"
        elif param.param_type_name == "argument":
            assert param.metavar and any(line.startswith(f"  {param.metavar}  ") for line in lines), param.metavar
        if getattr(param, "help", None):  # the whole description, wrapped where it may be but not cut
            assert squeezed(param.help) in squeezed(text), param.help
    for name, sub in getattr(command, "commands", {}).items():  # a group lists each command's first paragraph
        summary = (sub.help or "").split("\n\n")[0]
        assert re.search(rf"^  {name}  ", text, re.M) and squeezed(summary) in squeezed(text), name
    # a description that wraps has at least 40 columns to wrap in (Typer's panels left 18 at 80 columns)
    continued = [len(line) - len(line.lstrip()) for line in lines if line.startswith(" " * 6)]
    assert min((columns - 2 - indent for indent in continued), default=40) >= 40, continued
    if "--model" in text:  # the longest shared description: its first line holds a good part of it
        line = next(line for line in lines if line.lstrip().startswith("--model NAME"))
        assert len(line.split("--model NAME", 1)[1].strip()) >= (30 if columns == 80 else 60), line


def test_train_help_at_80_columns_reads_as_a_user_sees_it(monkeypatch, capsys):
    text = help_text(("train",), 80, monkeypatch, capsys)
    assert "  --max-lr FLOAT|find|FIND_RUN    schedule.max_lr: a number, 'find' (range\n" in text
    assert "  --schedule onecycle|constant|step|cosine\n                                  schedule.name\n" in text
    assert "  --compile / --no-compile        train.compile\n" in text
    assert "(needsonecycle[tensorboard])" in squeezed(text) and "(needsonecycle[timm])" in squeezed(text)  # no \[
    # the same bytes from `python -m onecycle_cli` in a terminal 80 columns wide
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env.update(PYTHONPATH=str(REPO), COLUMNS="80")
    p = subprocess.run([sys.executable, "-m", "onecycle_cli", "train", "--help"], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 0 and p.stderr == "" and p.stdout == text


def test_help_on_a_wide_terminal_stops_at_the_help_width(monkeypatch, capsys):
    text = help_text(("grid",), 200, monkeypatch, capsys)
    assert max(len(line) for line in text.splitlines()) == HELP_WIDTH - 2  # click keeps a 2-column margin


@pytest.mark.parametrize("path", [p for p, c in COMMANDS.items() if hasattr(c, "commands")],
                         ids=lambda p: " ".join(p) or "onecycle")
def test_a_group_alone_prints_its_help_on_stdout_and_exits_0(path, monkeypatch, capsys):
    alone = help_text(path, 80, monkeypatch, capsys, flag=())
    assert alone.startswith("Usage: ") and alone == help_text(path, 80, monkeypatch, capsys)
