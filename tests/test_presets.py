"""The shipped presets from any folder: `--config cifar.yaml`, `onecycle init`, `onecycle presets`."""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO, TINY, assert_usage_error
from onecycle_cli.presets import shipped as shipped_configs


def resolved(cli, *args) -> dict:
    r = cli("config", "--json", *args)
    assert r.code == 0, r.stderr
    return r.json()


# -- --config NAME.yaml where no such file is ---------------------------------------------------------
@pytest.mark.parametrize("typed,preset", [("cifar.yaml", "cifar"), ("mnist.yml", "mnist"),
                                          ("mnist_sample.yaml", "mnist_sample")])
def test_a_preset_file_name_with_no_file_means_the_preset_and_says_so_on_stderr(cli, typed, preset):
    r = cli("config", "--json", "--config", typed)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout) == resolved(cli, "--config", preset)  # stdout is the JSON alone
    [line] = r.stderr.splitlines()
    assert typed in line and f"shipped preset {preset!r}" in line and f"onecycle init {preset}" in line


def test_a_file_of_that_name_wins_over_the_preset_and_nothing_is_said(cli, tmp_path):
    (tmp_path / "cifar.yaml").write_text("train:\n  epochs: 3\n")
    r = cli("config", "--json", "--config", "cifar.yaml")
    assert r.code == 0 and r.stderr == ""
    assert r.json()["train"]["epochs"] == 3 and r.json()["model"]["name"] == "resnet56"  # the file over the defaults


def test_something_else_of_that_name_is_not_silently_replaced_by_the_preset(cli, tmp_path):
    (tmp_path / "cifar.yaml").mkdir()
    assert_usage_error(cli("config", "--config", "cifar.yaml"), "cifar.yaml", "directory")
    (tmp_path / "mnist.yaml").symlink_to(tmp_path / "gone.yaml")
    assert_usage_error(cli("config", "--config", "mnist.yaml"), "config file not found: mnist.yaml")


def test_the_design_cards_command_runs_from_an_empty_folder_with_json_intact(cli, tmp_path):
    r = cli("find", "--config", "mnist_sample.yaml", *TINY[2:], "--num-it", "20", "--json")  # TINY less its --config
    assert r.code == 0, r.stderr
    summary = r.json()  # one JSON object on stdout, the note on stderr
    assert summary["command"] == "find" and summary["config"] == "mnist_sample"
    assert "shipped preset 'mnist_sample'" in r.stderr
    assert summary["suggestion"]["lr"] > 0


@pytest.mark.parametrize("typed,fragments", [
    ("cifr.yaml", ["--config cifr.yaml", "no such file", "presets: cifar, folder, mnist, mnist_sample",
                   "did you mean 'cifar'"]),
    ("minst.yml", ["no shipped preset", "did you mean 'mnist'"]),
    ("resnet.yaml", ["presets: cifar, folder, mnist, mnist_sample"]),
    ("configs/cifar.yaml", ["config file not found: configs/cifar.yaml", "did you mean 'cifar'"]),
])
def test_a_name_that_is_neither_file_nor_preset_lists_the_presets_and_the_closest(cli, typed, fragments):
    r = cli("config", "--config", typed)
    assert_usage_error(r, *fragments)
    assert r.stdout == ""


# -- onecycle presets / config --list -----------------------------------------------------------------
def test_presets_lists_one_line_per_preset_with_its_header_description(cli):
    r = cli("presets")
    assert r.code == 0 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert [line.split()[0] for line in lines] == sorted(shipped_configs())
    cifar = next(line for line in lines if line.startswith("cifar "))
    assert "ResNet-56 on CIFAR-10 with 1cycle" in cifar  # the first sentence of the preset's header comment
    assert "3s vs 7s" in next(line for line in lines if line.startswith("mnist_sample "))
    listed = json.loads(cli("presets", "--json").stdout)
    assert listed == json.loads(cli("config", "--list", "--json").stdout)
    assert [p["name"] for p in listed] == sorted(shipped_configs()) and all(p["description"] for p in listed)


# -- onecycle init ------------------------------------------------------------------------------------
def comments(text: str) -> list[str]:
    """The comment lines that are not commands (init rewrites those to name the copy)."""
    return [line for line in text.splitlines() if "#" in line and "onecycle " not in line]


def test_init_copies_a_preset_with_its_comments_into_an_editable_file(cli, tmp_path):
    r = cli("init", "cifar")
    assert r.code == 0, r.stderr
    copy = (tmp_path / "cifar.yaml").read_text()
    original = shipped_configs()["cifar"].read_text()
    assert comments(copy) == comments(original) and len(comments(copy)) > 20  # every reason beside its value
    # the header's commands now run the copy, not the preset
    assert "# onecycle train --config cifar.yaml --data-dir ~/data" in copy
    assert "--config cifar " not in copy
    assert "cifar.yaml" in r.stderr
    # it is the preset: the same resolved config, now from the file (no note about a preset standing in)
    r = cli("config", "--json", "--config", "cifar.yaml")
    assert r.stderr == "" and r.json() == resolved(cli, "--config", "cifar")
    # and editing it changes the run
    (tmp_path / "cifar.yaml").write_text(copy.replace("epochs: 95", "epochs: 7"))
    assert resolved(cli, "--config", "cifar.yaml")["train"]["epochs"] == 7


# what a clone holds beside the package: an installed copy has none of it ("runs/" is where runs go, anywhere)
OUTSIDE_THE_PACKAGE = [re.escape(p.name) + ("/" if p.is_dir() else "") for p in REPO.iterdir()
                       if not p.name.startswith(".") and p.name not in ("onecycle_cli", "runs")]
OUTSIDE = re.compile("|".join([r"\.\./", r"\bshared/", r"\bREADME", r"\bissue\s*#?\d", r"#\d",
                               *(rf"\b{name}" for name in OUTSIDE_THE_PACKAGE)]), re.I)


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_the_comments_init_writes_mention_nothing_outside_the_installed_package(cli, tmp_path, name):
    assert "benchmarks/" in OUTSIDE_THE_PACKAGE and "tests/" in OUTSIDE_THE_PACKAGE  # the clone's, as listed
    assert cli("init", name).code == 0
    written = (tmp_path / f"{name}.yaml").read_text()
    notes = [line.split("#", 1)[1] for line in written.splitlines() if "#" in line]
    assert len(notes) > 10  # the reasons are there ...
    assert [note for note in notes if OUTSIDE.search(note)] == []  # ... and each stands on what pip installed


def test_init_with_no_name_is_the_default_preset_and_takes_a_file_or_a_folder(cli, tmp_path):
    assert cli("init").code == 0 and (tmp_path / "cifar.yaml").is_file()
    (tmp_path / "exp").mkdir()
    assert cli("init", "mnist_sample", "exp").code == 0
    assert resolved(cli, "--config", "exp/mnist_sample.yaml") == resolved(cli, "--config", "mnist_sample")
    assert cli("init", "mnist.yaml", "exp/book.yml").code == 0  # the name as typed for --config works too
    assert resolved(cli, "--config", "exp/book.yml") == resolved(cli, "--config", "mnist")
    assert "--config exp/book.yml" in (tmp_path / "exp" / "book.yml").read_text()


def test_init_refuses_to_overwrite_without_force(cli, tmp_path):
    target = tmp_path / "mnist.yaml"
    target.write_text("# my edits\ntrain:\n  epochs: 3\n")
    r = cli("init", "mnist")
    assert_usage_error(r, "mnist.yaml already exists", "--force")
    assert target.read_text() == "# my edits\ntrain:\n  epochs: 3\n"
    assert cli("init", "mnist", "--force").code == 0
    assert target.read_text() != "# my edits\ntrain:\n  epochs: 3\n" and resolved(cli, "--config", "mnist.yaml") \
        == resolved(cli, "--config", "mnist")
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.yaml"]  # no temporary file left behind


@pytest.mark.parametrize("dangling", [False, True])
def test_init_never_writes_through_a_symlink_at_the_destination(cli, tmp_path, dangling):
    outside = tmp_path / "elsewhere" / "precious.txt"
    outside.parent.mkdir()
    if not dangling:
        outside.write_text("not yours")
    link = tmp_path / "cifar.yaml"
    link.symlink_to(outside)
    assert_usage_error(cli("init", "cifar"), "cifar.yaml already exists", "symbolic link", "--force")
    assert cli("init", "cifar", "--force").code == 0
    assert not link.is_symlink() and "ResNet-56" in link.read_text()  # the link replaced by a file
    if dangling:
        assert not outside.exists()
    else:
        assert outside.read_text() == "not yours"


@pytest.mark.parametrize("args,fragments", [
    (["mnst"], ["init mnst", "no shipped preset", "presets: cifar, folder, mnist, mnist_sample",
                "did you mean 'mnist'"]),
    (["cifar", "no/such/folder/c.yaml"], ["no/such/folder", "does not exist"]),
    (["cifar", "nofolder/"], ["nofolder/", "no such folder"]),
    (["cifar", ""], ["init PATH ''"]),
])
def test_init_refuses_bad_names_and_places_in_one_line(cli, tmp_path, args, fragments):
    assert_usage_error(cli("init", *args), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_init_into_a_folder_that_holds_a_folder_of_that_name_is_refused_even_with_force(cli, tmp_path):
    (tmp_path / "cifar.yaml").mkdir()
    assert_usage_error(cli("init", "cifar", "--force"), "cifar.yaml is a folder")
    assert (tmp_path / "cifar.yaml").is_dir()
