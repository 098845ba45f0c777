"""Config resolution and validation, through the real CLI (`onecycle config`)."""

import pytest

from conftest import assert_usage_error


def resolved(cli, *args, env=None) -> dict:
    r = cli("config", "--json", *args, env=env)
    assert r.code == 0, r.stderr
    return r.json()


def test_no_config_is_the_cifar_resnet56_preset(cli):
    cfg = resolved(cli)
    assert (cfg["data"]["dataset"], cfg["model"]["name"]) == ("cifar10", "resnet56")
    assert (cfg["train"]["batch_size"], cfg["optim"]["name"], cfg["optim"]["weight_decay"]) == (512, "sgd", 1e-4)
    assert (cfg["schedule"]["max_lr"], cfg["train"]["epochs"]) == (0.8, 95)
    assert (cfg["data"]["flip"], cfg["data"]["crop"], cfg["data"]["pad"]) == (True, True, 4)


@pytest.mark.parametrize("name,dataset,model,batch,epochs,lr", [
    ("mnist", "mnist", "simple_cnn", 512, 1, 0.06),
    ("mnist_sample", "mnist_sample", "simple_cnn", 64, 2, 0.05),
])
def test_shipped_configs_by_name(cli, name, dataset, model, batch, epochs, lr):
    cfg = resolved(cli, "--config", name)
    assert (cfg["data"]["dataset"], cfg["model"]["name"]) == (dataset, model)
    assert (cfg["train"]["batch_size"], cfg["train"]["epochs"], cfg["schedule"]["max_lr"]) == (batch, epochs, lr)
    assert cfg["optim"]["name"] == "adamw" and cfg["optim"]["betas"] == [0.9, 0.99] and cfg["optim"]["eps"] == 1e-5


def test_every_shipped_yaml_starts_with_the_commands_that_run_it():
    from onecycle_cli.presets import shipped as shipped_configs
    for name, path in shipped_configs().items():
        first = path.read_text().splitlines()[0]
        assert first.startswith("# onecycle ") and f"--config {name}" in first, (name, first)


def test_precedence_defaults_yaml_environment_flags(cli, tmp_path):
    (tmp_path / "mine.yaml").write_text("train:\n  seed: 1\n  epochs: 3\nschedule:\n  max_lr: 0.1\n")
    assert resolved(cli, "--config", "mine.yaml")["train"]["batch_size"] == 512           # default
    assert resolved(cli, "--config", "mine.yaml")["train"]["seed"] == 1                   # yaml over default
    env = {"ONECYCLE_TRAIN__SEED": "2", "ONECYCLE_DATA": "/data/here"}
    cfg = resolved(cli, "--config", "mine.yaml", env=env)
    assert cfg["train"]["seed"] == 2 and cfg["data"]["root"] == "/data/here"            # env over yaml
    cfg = resolved(cli, "--config", "mine.yaml", "--seed", "3", "--set", "schedule.max_lr=0.2", env=env)
    assert cfg["train"]["seed"] == 3 and cfg["schedule"]["max_lr"] == 0.2               # flags over env
    assert cfg["train"]["epochs"] == 3                                                   # untouched key kept


def test_numbers_read_as_people_write_them(cli, tmp_path):
    (tmp_path / "n.yaml").write_text("optim:\n  weight_decay: 1e-4\nschedule:\n  max_lr: 1\n")
    cfg = resolved(cli, "--config", "n.yaml", "--set", "find.start_lr=1e-6")
    assert cfg["optim"]["weight_decay"] == 1e-4 and cfg["find"]["start_lr"] == 1e-6  # not the string "1e-4"
    assert cfg["schedule"]["max_lr"] == 1.0                                           # an int where a float goes


def test_shape_defaults_fill_in_and_can_be_overridden(cli):
    fastai = resolved(cli, "--config", "mnist_sample")["schedule"]
    assert (fastai["pct_start"], fastai["div"], fastai["final_div"], fastai["anneal"]) == (0.25, 25.0, 1e5, "cos")
    torch_shape = resolved(cli, "--config", "mnist_sample", "--set", "schedule.shape=torch")["schedule"]
    assert (torch_shape["pct_start"], torch_shape["final_div"]) == (0.3, 25 * 1e4)
    assert resolved(cli, "--config", "mnist_sample", "--set", "schedule.pct_start=0.4")["schedule"]["pct_start"] == 0.4


def test_config_prints_yaml_that_reads_back_the_same(cli, tmp_path):
    r = cli("config", "--config", "mnist", "--epochs", "7")
    assert r.code == 0 and r.stdout.startswith("# resolved from")
    (tmp_path / "again.yaml").write_text(r.stdout)
    assert resolved(cli, "--config", "again.yaml") == resolved(cli, "--config", "mnist", "--epochs", "7")


@pytest.mark.parametrize("args,fragments", [
    (["--set", "train.epochs=0"], ["train.epochs = 0", "> 0"]),
    (["--epochs", "0"], ["train.epochs = 0", "--epochs"]),
    (["--max-lr", "0"], ["schedule.max_lr = 0 ", "--max-lr 0", "> 0"]),
    (["--max-lr", "-1"], ["schedule.max_lr", "> 0"]),
    (["--set", "schedule.max_lr=.nan"], ["schedule.max_lr", "finite"]),
    (["--set", "schedule.max_lr=.inf"], ["schedule.max_lr", "finite"]),
    (["--set", "schedule.pct_start=0"], ["schedule.pct_start", "> 0"]),
    (["--set", "schedule.pct_start=1"], ["schedule.pct_start", "< 1"]),
    (["--batch-size", "0"], ["train.batch_size = 0"]),
    (["--batch-size", "abc"], ["train.batch_size = 'abc'", "an integer"]),
    (["--set", "train.epochs=2.5"], ["train.epochs = 2.5", "an integer"]),
    (["--set", "train.seed=-1"], ["train.seed", ">= 0"]),
    (["--set", "data.flip=maybe"], ["data.flip = 'maybe'", "true or false"]),
    (["--set", "data.dataset=cifar100"], ["data.dataset = 'cifar100'", "one of", "did you mean 'cifar10'"]),
    (["--set", "model.name=resnet57"], ["model.name = 'resnet57'", "resnet56"]),
    (["--set", "optim.name=adam"], ["optim.name = 'adam'", "adamw"]),
    (["--set", "schedule.name=1cycle"], ["schedule.name", "onecycle"]),
    (["--set", "schedule.maxlr=1"], ["unknown key 'schedule.maxlr'", "did you mean 'schedule.max_lr'"]),
    (["--set", "trian.seed=1"], ["unknown section 'trian'", "did you mean 'train'"]),
    (["--set", "train"], ["--set 'train'", "section.key=value"]),
    (["--set", "seed=1"], ["names no section"]),
    (["--set", "train.seed.x=1"], ["train.seed is a value, not a section"]),
    (["--set", "optim.betas=[0.9]"], ["optim.betas", "2 items"]),
    (["--set", "schedule.base_momentum=0.99"], ["base_momentum", "max_momentum"]),
    (["--set", "find.end_lr=1e-8"], ["find.end_lr", "start_lr"]),
    (["--set", "train.device=gpu"], ["train.device = 'gpu'"]),
    (["--config", "nope"], ["--config nope", "no such file", "shipped"]),
    (["--config", "missing.yaml"],
     ["--config missing.yaml", "no such file", "presets: cifar, folder, mnist, mnist_sample"]),
    (["--seed", "1", "--set", "train.seed=2"], ["conflicting flags", "--seed", "--set"]),
])
def test_bad_values_exit_2_with_one_line(cli, args, fragments):
    assert_usage_error(cli("config", *args), *fragments)


@pytest.mark.parametrize("text,fragments", [
    ("", ["is empty"]),
    ("# only a comment\n", ["is empty"]),
    ("train: [1, 2\n", ["malformed YAML", "line"]),
    ("train:\n\tseed: 1\n", ["tab"]),
    ("train:\n  seed: 1\n  seed: 2\n", ["duplicate key 'seed'"]),
    ("- train\n- data\n", ["holds a list", "expected a mapping"]),
    ("train: 5\n", ["train = 5", "mapping"]),
    ("model:\n  name: simple_cnn\n  channels: [1, 8]\n  kernel_sizes: [3, 3, 3]\n", ["kernel_sizes", "1 or 1"]),
    ("schedule:\n  max_lr: '0.1'\n", ["schedule.max_lr = '0.1'", "a number"]),
    ("data:\n  datset: mnist\n", ["unknown key 'data.datset'", "did you mean 'data.dataset'"]),
])
def test_bad_yaml_files_exit_2_with_one_line(cli, tmp_path, text, fragments):
    (tmp_path / "bad.yaml").write_text(text)
    assert_usage_error(cli("config", "--config", "bad.yaml"), *fragments)


def test_binary_file_and_directory_are_refused(cli, tmp_path):
    (tmp_path / "blob.yaml").write_bytes(bytes(range(256)))
    assert_usage_error(cli("config", "--config", "blob.yaml"), "not text")
    (tmp_path / "folder").mkdir()
    assert_usage_error(cli("config", "--config", str(tmp_path / "folder")), "directory")
