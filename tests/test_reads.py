"""Settings that apply, and only those (issue 14, item 5).

`onecycle config`, a run's config.yaml, report.html and `compare` show the keys that the chosen
dataset, model, optimiser, schedule and command read, and mark or leave out the rest: an MNIST run's
report must not list the synthetic set's `image_size 32`, nor a ResNet run simple_cnn's channels.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from onecycle_cli.config import APPLIES, Config, flatten


def marks(text: str) -> dict[str, str]:
    """{section.key: the reason of its `# not read:` comment} of a YAML config written by onecycle."""
    out, section = {}, None
    for line in text.splitlines():
        if re.match(r"^\w+:$", line):
            section = line[:-1]
        m = re.match(r"^  (\w+): .*#\s*not read: (.*)$", line)
        if m:
            out[f"{section}.{m.group(1)}"] = m.group(2)
    return out


def config_yaml(cli, *args) -> str:
    r = cli("config", *args)
    assert r.code == 0, r.stderr
    return r.stdout


def test_every_rule_names_a_real_key_and_depends_on_real_keys():
    keys = set(flatten(Config().model_dump(mode="json")))
    sections = set(Config.model_fields)
    for pattern, rules in APPLIES.items():
        section, _, key = pattern.partition(".")
        assert (key == "*" and section in sections) or pattern in keys, pattern
        for rule in rules:
            for inner in getattr(rule, "rules", [rule]):
                assert getattr(inner, "key", "data.dataset") in keys, (pattern, inner)


def test_config_marks_what_the_mnist_preset_never_reads_and_keeps_every_key(cli, tmp_path):
    text = config_yaml(cli, "--config", "mnist")
    marked = marks(text)
    for key in ("data.image_size", "data.channels"):  # the synthetic set's and a folder's
        assert marked[key] == "only with data.dataset synthetic or folder"
    assert marked["data.classes"] == "only with data.dataset synthetic"
    for key in ("data.csv", "data.valid_pct", "data.presize", "data.resize", "data.strict", "data.cache"):
        assert marked[key] == "only with data.dataset folder", key
    assert marked["data.pad"] == "only with data.crop true"           # mnist.yaml crops nothing
    assert marked["optim.momentum"].startswith("only with optim.name sgd")  # an AdamW run
    assert marked["optim.nesterov"] == "only with optim.name sgd"
    assert marked["schedule.milestones"] == marked["schedule.gamma"] == "only with schedule.name step"
    for key in ("model.channels", "model.kernel_sizes", "optim.betas", "optim.eps", "schedule.pct_start",
                "train.epochs", "find.num_it", "data.root"):
        assert key not in marked, key  # what the run does read is not marked
    # every key is still there, with its value: the output loads back as the same config
    (tmp_path / "again.yaml").write_text(text)
    again = cli("config", "--json", "--config", "again.yaml").json()
    assert again == cli("config", "--json", "--config", "mnist").json()


def test_the_marks_follow_the_choices(cli):
    cifar = marks(config_yaml(cli, "--config", "cifar"))
    for key in ("model.channels", "model.kernel_sizes", "model.strides", "model.batchnorm", "model.final_relu"):
        assert cifar[key] == "only with model.name simple_cnn"  # a ResNet's layers follow from its depth
    assert cifar["optim.betas"] == cifar["optim.eps"] == "only with optim.name adamw"
    assert "optim.momentum" not in cifar  # the range test holds SGD's momentum
    synthetic = marks(config_yaml(cli, "--config", "cifar", "--set", "data.dataset=synthetic"))
    assert not {"data.image_size", "data.channels", "data.classes"} & set(synthetic)
    assert synthetic["data.root"].startswith("only with data.dataset cifar10")  # nothing to read from disk
    step = marks(config_yaml(cli, "--config", "cifar", "--set", "schedule.name=step"))
    assert not {"schedule.milestones", "schedule.gamma"} & set(step)
    for key in ("schedule.shape", "schedule.pct_start", "schedule.div", "schedule.max_momentum"):
        assert step[key] == "only with schedule.name onecycle", key
    cosine = marks(config_yaml(cli, "--config", "cifar", "--set", "schedule.name=cosine"))
    assert "schedule.final_div" not in cosine  # cosine anneals to max_lr / final_div
    assert cifar["data.scale"] == cifar["data.ratio"] == "only with data.augment rrc (null: for a folder)"
    assert "data.pad" not in cifar and "data.augment" not in cifar
    folder = marks(config_yaml(cli, "--config", "folder"))  # rrc: CIFAR's padding is no setting of it
    assert folder["data.pad"] == "only with data.augment pad_crop (null: for the built-in sets)"
    assert not {"data.scale", "data.ratio", "data.root", "data.image_size", "data.csv", "data.cache"} & set(folder)
    assert folder["data.download"].startswith("only with data.dataset cifar10")
    still = marks(config_yaml(cli, "--config", "cifar", "--set", "schedule.cycle_momentum=false"))
    assert still["schedule.max_momentum"] == "only with schedule.cycle_momentum true"


def test_a_runs_config_yaml_marks_what_its_command_did_not_read_and_resume_reads_it(tiny_runs, cli, tmp_path):
    train = (tiny_runs["onecycle"] / "config.yaml").read_text()
    find = (tiny_runs["find"] / "config.yaml").read_text()
    t, f = marks(train), marks(find)
    assert t["find.num_it"] == t["find.suggest"] == "only by onecycle find (or train --max-lr find)"
    assert t["data.image_size"] == "only with data.dataset synthetic or folder" and "model.channels" not in t
    assert f["schedule.max_lr"] == f["train.epochs"] == "only by onecycle train"
    assert "find.num_it" not in f and "train.batch_size" not in f and "optim.weight_decay" not in f
    # the file is the whole resolved config, as --resume reads it back
    assert yaml.safe_load(train)["data"]["image_size"] == 32 and yaml.safe_load(find)["schedule"]["max_lr"] == 0.05


def test_train_with_max_lr_find_records_that_the_range_test_read_the_find_keys(cli, tmp_path):
    from conftest import TINY
    r = cli("train", *TINY, "--epochs", "1", "--max-lr", "find", "--set", "find.num_it=20", "--json")
    assert r.code == 0, r.stderr
    text = (Path(r.json()["run_dir"]) / "config.yaml").read_text()
    assert not any(key.startswith("find.") for key in marks(text))
    assert yaml.safe_load(text)["find"]["num_it"] == 20


def settings_tables(page: str) -> tuple[str, str]:
    """report.html's settings: (the tables of what the run read, the folded list of what it did not)."""
    settings = page.split("<h2>Settings</h2>", 1)[1].split("<h2>", 1)[0]
    read, _, unread = settings.partition("settings this run did not read")
    return read, unread


def test_an_mnist_runs_report_lists_only_the_settings_it_used(cli, tiny_runs, tmp_path):
    run = tmp_path / tiny_runs["onecycle"].name
    shutil.copytree(tiny_runs["onecycle"], run)
    assert cli("report", run).code == 0
    read, unread = settings_tables((run / "report.html").read_text())
    assert "<td>image_size</td>" not in read and "<td>classes</td>" not in read  # issue 14: not the run's settings
    assert "<td>channels</td>" in read  # simple_cnn's channel list is this run's (model section)
    assert "<td>data.image_size</td><td>32</td><td>only with data.dataset synthetic or folder</td>" in unread
    assert "<td>find.num_it</td>" in unread


def test_a_resnet_runs_report_leaves_out_simple_cnns_layers(cli, tiny_runs, tmp_path):
    run = tmp_path / tiny_runs["onecycle"].name
    shutil.copytree(tiny_runs["onecycle"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["name"] = "resnet20"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert cli("report", run).code == 0
    read, unread = settings_tables((run / "report.html").read_text())
    model = read.split("<h3>model</h3>", 1)[1].split("<h3>", 1)[0]
    assert "<td>resnet20</td>" in model and "channels" not in model and "kernel_sizes" not in model
    assert "<td>model.channels</td><td>[1, 16, 16, 2]</td><td>only with model.name simple_cnn</td>" in unread


def with_model(tiny_runs, tmp_path: Path, name: str, model: dict) -> Path:
    """A copy of the tiny 1cycle run whose config.yaml says it trained another model."""
    run = tmp_path / name
    shutil.copytree(tiny_runs["onecycle"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"].update(model)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def test_compare_counts_a_key_only_for_the_runs_that_read_it(cli, tiny_runs, tmp_path):
    resnet = with_model(tiny_runs, tmp_path, "resnet", {"name": "resnet20", "channels": [3, 64, 10]})
    r = cli("compare", tiny_runs["onecycle"], resnet, "--runs-dir", tmp_path / "out", "--json")
    assert r.code == 0, r.stderr
    summary = r.json()
    # the ResNet run's channel list was never used: the runs differ by the model alone
    assert summary["differing"] == {"model.name": ["simple_cnn", "resnet20"]}
    assert summary["shared"]["model.channels"] == [1, 16, 16, 2]  # what the one run that read it used
    assert "data.image_size" not in summary["shared"]  # read by neither

    wider = with_model(tiny_runs, tmp_path, "wider", {"channels": [1, 32, 32, 2]})
    r = cli("compare", tiny_runs["onecycle"], resnet, wider, "--runs-dir", tmp_path / "out", "--json")
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["differing"]["model.channels"] == [[1, 16, 16, 2], [3, 64, 10], [1, 32, 32, 2]]
    assert summary["not_read"] == {"model.channels": [False, True, False]}
    row = next(line for line in r.stderr.splitlines() if line.lstrip().startswith("model.channels"))
    assert "(not read)" in row and "[1, 16, 16, 2]" in row and "[3, 64, 10]" not in row
    assert summary["runs"][1]["label"] == "resnet20"  # the legend shows what that run used
