"""Shell completion (issue 14, item 3), driven as the shells drive it: Typer's environment variables
(`_ONECYCLE_COMPLETE`, bash's COMP_WORDS / COMP_CWORD, zsh's and fish's _TYPER_COMPLETE_ARGS) on a
real `python -m onecycle_cli` process, and the bash script sourced into a real bash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


def complete(env: dict, cwd=None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ONECYCLE", "_ONECYCLE", "COMP_", "_TYPER"))}
    full.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-m", "onecycle_cli"], capture_output=True, text=True, env=full, cwd=cwd)


def bash(line: str, cwd=None, **env) -> list[str]:
    """The candidates for the last word of `line` (a trailing space starts a new, empty word)."""
    words = line.split() + ([""] if line.endswith(" ") else [])
    p = complete({"_ONECYCLE_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(words),
                  "COMP_CWORD": str(len(words) - 1), **env}, cwd)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return [c for c in p.stdout.splitlines() if c]  # as bash's COMPREPLY=( $(...) ) splits them


def fish(line: str, cwd=None, **env) -> dict[str, str]:
    p = complete({"_ONECYCLE_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                  "_TYPER_COMPLETE_ARGS": line, **env}, cwd)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return dict((item.split("\t") + [""])[:2] for item in p.stdout.splitlines())


def zsh(line: str, cwd=None, **env) -> str:
    p = complete({"_ONECYCLE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line, **env}, cwd)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout


def test_commands_and_flags():
    assert {"find", "train", "config", "presets", "init", "runs", "compare", "report", "plot", "data"} \
        <= set(bash("onecycle "))
    assert bash("onecycle tr") == ["train"]
    assert bash("onecycle train --max") == ["--max-lr"]
    assert {"--config", "--set", "--resume", "--json"} <= set(bash("onecycle train --"))
    assert bash("onecycle data ch") == ["check"]


def test_flags_in_fish_and_zsh_have_one_line_of_help_each_as_written():
    found = fish("onecycle train --")  # a description rendered over two lines gave fish a bogus candidate
    assert all(flag.startswith("--") for flag in found), found
    assert found["--tensorboard"] == "Also write TensorBoard event files (needs onecycle[tensorboard])."
    assert found["--model"].startswith("model.name: resnet20") and len(found["--model"]) == 70
    assert '"--tensorboard":"Also write TensorBoard event files (needs onecycle[tensorboard])."' \
        in zsh("onecycle train --tens")


def test_config_completes_presets_with_their_descriptions_and_yaml_files_here(tmp_path):
    (tmp_path / "mine.yaml").write_text("train:\n  epochs: 1\n")
    (tmp_path / "notes.txt").write_text("")
    assert bash("onecycle train --config ", cwd=tmp_path) == ["cifar", "folder", "mnist", "mnist_sample", "mine.yaml"]
    assert bash("onecycle find -c mnist", cwd=tmp_path) == ["mnist", "mnist_sample"]
    found = fish("onecycle find --config ", cwd=tmp_path)
    assert found["cifar"].startswith("ResNet-56 on CIFAR-10") and found["mine.yaml"] == "YAML file"
    assert bash("onecycle init ", cwd=tmp_path) == ["cifar", "folder", "mnist", "mnist_sample"]  # presets only
    assert bash("onecycle train --config zz", cwd=tmp_path) == []  # nothing: the shell completes file names


def test_set_completes_keys_then_values_under_the_config_typed_so_far():
    assert bash("onecycle train --set train.ep") == ["train.epochs=", "train.epochs=95"]  # the cifar preset's
    assert bash("onecycle train --config mnist --set train.ep") == ["train.epochs=", "train.epochs=1"]
    assert bash("onecycle train --set train.epochs=3 --set train.ep") == ["train.epochs=", "train.epochs=3"]
    assert set(bash("onecycle find --set sched")) == {f"schedule.{k}=" for k in (
        "name", "shape", "max_lr", "pct_start", "div", "final_div", "anneal", "cycle_momentum", "max_momentum",
        "base_momentum", "milestones", "gamma", "freeze_pct_start", "freeze_body_div", "unfreeze_lr_div",
        "unfreeze_pct_start", "unfreeze_div")}
    assert bash("onecycle train --set schedule.na") == [f"schedule.name={n}" for n in ("onecycle", "constant", "step",
                                                                                       "cosine")]
    assert bash("onecycle train --set data.fl") == ["data.flip=true", "data.flip=false"]
    assert fish("onecycle train --set optim.name=ad") == {"optim.name=adamw": ""}
    assert fish("onecycle train --set train.channels_l") == {"train.channels_last=true": "",
                                                             "train.channels_last=false": "",
                                                             "train.channels_last=null": "now"}
    assert bash("onecycle config --config mnist --set model.kern") == ["model.kernel_sizes=",
                                                                       "model.kernel_sizes=[5,3,3,3,3]"]
    assert fish("onecycle train --set train.")["train.seed="] == "now 0"


def fake_runs(root, tiny_runs) -> dict[str, str]:
    """Real tiny runs copied under `root`: a find, two finished fits, one interrupted fit, a comparison."""
    ids = {}
    for key in ("find", "onecycle", "constant"):
        shutil.copytree(tiny_runs[key], root / tiny_runs[key].name)
        ids[key] = tiny_runs[key].name
    ids["stopped"] = "20991230-000000-train-mnist_sample"  # the newest: names carry the start time
    stopped = root / ids["stopped"]
    shutil.copytree(tiny_runs["onecycle"], stopped)
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    ids["compare"] = "20991231-000000-compare-2runs"
    (root / ids["compare"]).mkdir()
    (root / ids["compare"] / "summary.json").write_text(json.dumps({"command": "compare", "status": "completed"}))
    return ids


def test_run_directories_under_the_runs_root(tiny_runs, tmp_path):
    root = tmp_path / "runs"
    ids = fake_runs(root, tiny_runs)
    # --resume: only what it would continue (a checkpoint, neither finished nor running), as a path
    assert bash("onecycle train --resume ", cwd=tmp_path) == [f"runs/{ids['stopped']}"]
    # compare takes run ids, newest first, comparisons left out; a path once one is being typed
    assert bash("onecycle compare ", cwd=tmp_path) == [ids["stopped"], ids["constant"], ids["onecycle"], ids["find"]]
    assert bash(f"onecycle compare {ids['onecycle']} runs/", cwd=tmp_path) == [
        f"runs/{i}" for i in (ids["stopped"], ids["constant"], ids["onecycle"], ids["find"])]
    # report and plot take any run directory, comparisons included
    assert bash("onecycle report ", cwd=tmp_path)[0] == f"runs/{ids['compare']}"
    assert len(bash("onecycle plot runs/2", cwd=tmp_path)) == 5
    # the root follows --runs-dir and ONECYCLE_RUNS, as the commands do
    elsewhere = tmp_path / "elsewhere"
    root.rename(elsewhere)
    assert bash(f"onecycle compare --runs-dir {elsewhere} ", cwd=tmp_path)[0] == ids["stopped"]
    assert bash("onecycle report ", cwd=tmp_path, ONECYCLE_RUNS=str(elsewhere))[1] == f"{elsewhere}/{ids['stopped']}"
    assert bash("onecycle report ", cwd=tmp_path) == []  # no runs root here: the shell completes file names
    described = fish(f"onecycle compare --runs-dir {elsewhere} ", cwd=tmp_path)
    assert described[ids["stopped"]] == "train, mnist_sample, interrupted"


def test_zsh_gets_values_with_descriptions_and_files_when_nothing_matches(tmp_path):
    out = zsh("onecycle train --config mni", cwd=tmp_path)
    assert out.startswith("_arguments '*: :((") and '"mnist":"The fastai book' in out and '"mnist_sample":' in out
    assert zsh("onecycle train --config zz", cwd=tmp_path).strip() == "_files"


@pytest.mark.parametrize("shell,line", [("bash", "complete -o default -F _onecycle_completion onecycle"),
                                        ("zsh", "compdef _onecycle_completion onecycle"),
                                        ("fish", "complete --command onecycle --no-files")])
def test_show_completion_prints_the_script_of_the_shell_named(shell, line):
    p = subprocess.run([sys.executable, "-m", "onecycle_cli", "--show-completion", shell], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0 and line in p.stdout and "_ONECYCLE_COMPLETE=complete_" + shell in p.stdout


def on_path(tmp_path) -> dict:
    """An environment whose PATH has an `onecycle` that runs this checkout, as pip's console script would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "onecycle").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m onecycle_cli "$@"\n')
    (bin_dir / "onecycle").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONECYCLE", "_ONECYCLE", "COMP_", "_TYPER"))}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}


def test_the_bash_script_sources_and_completes_in_a_real_bash(tmp_path):
    if not shutil.which("bash"):
        pytest.skip("no bash here")
    script = ('source <(onecycle --show-completion bash) && complete -p onecycle && '
              'COMP_WORDS=(onecycle train --set schedule.sh) COMP_CWORD=3 && _onecycle_completion onecycle && '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    p = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, env=on_path(tmp_path),
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["complete -o default -F _onecycle_completion onecycle",
                                     "schedule.shape=fastai", "schedule.shape=smith", "schedule.shape=torch"]


def test_install_completion_writes_the_script_where_the_shell_reads_it(tmp_path):
    env = on_path(tmp_path)
    p = subprocess.run(["onecycle", "--install-completion", "bash"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    script = tmp_path / ".bash_completions" / "onecycle.sh"
    assert "complete -o default -F _onecycle_completion onecycle" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    assert "bash completion installed" in p.stderr
