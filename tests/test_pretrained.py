"""torchvision and timm models by name, pretrained weights offline, and `--init` (issue 11 items 1, 2 and 7):
`onecycle train --model tv:resnet18 --set model.pretrained=PATH`."""

import json
import os
import re
import subprocess
import sys
import zipfile

import pytest
import torch
import torchvision

from conftest import REPO, assert_usage_error
from onecycle_cli.config import resolve
from onecycle_cli.errors import DataError
from onecycle_cli.pipeline import build_pipeline

# 64 bundled 3s and 7s (28x28, one channel), batch 16: four steps an epoch
TINY = ["--config", "mnist_sample", "--set", "data.train_size=64", "--set", "data.valid_size=32",
        "--batch-size", "16", "--set", "schedule.pct_start=0.5"]
TINY_SETS = ["data.train_size=64", "data.valid_size=32", "train.batch_size=16", "schedule.pct_start=0.5"]
IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]  # torchvision's published statistics, in pixel units
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision resnet18 state_dict as torchvision saves one (RGB stem, 1000 classes), from a fixed seed."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18()
    path = tmp_path_factory.mktemp("weights") / "resnet18-mine.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_pretrained_from_a_local_state_dict_fills_the_body_sums_the_stem_and_replaces_the_head(resnet18_file):
    path, source = resnet18_file
    cfg = resolve("mnist_sample", TINY_SETS + ["model.name=tv:resnet18", f"model.pretrained={path}"]).config
    assert cfg.data.stats == "weights"  # auto: the weights' statistics, and the resolved config says so
    pipe = build_pipeline(cfg)
    model = pipe.model.state_dict()
    # every body tensor is the file's; the grey stem is the RGB filters summed (fastai's n_in=1)
    assert all(torch.equal(model[k], source[k]) for k in source if not k.startswith(("fc.", "conv1.")))
    assert torch.equal(model["conv1.weight"], source["conv1.weight"].sum(1, keepdim=True))
    assert model["fc.weight"].shape == (2, 512) and model["fc.bias"].shape == (2,)
    # RGB statistics averaged for grey images, in pixel units
    assert pipe.normalize["mean"] == pytest.approx([sum(IMAGENET_MEAN) / 3])
    assert pipe.normalize["std"] == pytest.approx([sum(IMAGENET_STD) / 3])
    assert pipe.ds.mean.tolist() == pytest.approx(pipe.normalize["mean"])
    assert [g.name for g in pipe.groups] == ["stem..layer2", "layer3..layer4", "head"]


def test_a_pretrained_tv_run_records_its_weights_and_statistics(cli, tmp_path, resnet18_file):
    path, _ = resnet18_file
    r = cli("train", *TINY, "--model", "tv:resnet18", "--set", f"model.pretrained={path}", "--epochs", "1",
            "--max-lr", "1e-3", "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert s["weights"]["taken"] == 122 and s["weights"]["skipped"] == [] and s["weights"]["missing"] == []
    assert s["normalize"]["source"].startswith("torchvision ResNet18_Weights")
    assert f"weights: 122 tensors from {path}" in r.stderr and "conv1: 3 -> 1 input channels" in r.stderr
    config = (tmp_path / s["run_dir"] / "config.yaml").read_text()
    assert "stats: weights" in config and f"pretrained: {path}" in config
    r = cli("train", *TINY, "--model", "tv:resnet18", "--set", f"model.pretrained={path}", "--epochs", "1",
            "--max-lr", "1e-3", "--set", "data.stats=dataset", "--json")
    assert r.code == 0 and r.json()["normalize"]["source"].startswith("dataset mnist_sample"), r.stderr


def test_timm_model_from_a_local_state_dict(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    source = timm.create_model("resnet10t").state_dict()
    torch.save(source, tmp_path / "resnet10t.pth")
    cfg = resolve("mnist_sample", TINY_SETS + ["model.name=timm:resnet10t",
                                               f"model.pretrained={tmp_path / 'resnet10t.pth'}"]).config
    pipe = build_pipeline(cfg)
    model = pipe.model.state_dict()
    assert all(torch.equal(model[k], source[k]) for k in source if not k.startswith(("fc.", "conv1.0.")))
    assert torch.allclose(model["conv1.0.weight"], source["conv1.0.weight"].sum(1, keepdim=True))  # timm's in_chans=1
    assert model["fc.weight"].shape == (2, 512)
    assert pipe.built.loaded.missing == ["fc.weight", "fc.bias"] and [g.name for g in pipe.groups] == ["body", "head"]


def test_init_from_a_finished_run_takes_every_tensor_that_fits(cli, tmp_path):
    # a BatchNorm simple_cnn on the 2-class sample, then the same net for 3 classes of synthetic grey images
    net = ["--config", "mnist", "--set", "data.train_size=64", "--set", "data.valid_size=32", "--batch-size", "16",
           "--epochs", "2", "--set", "schedule.pct_start=0.5"]
    r = cli("train", *net, "--dataset", "mnist_sample", "--set", "model.channels=[1,8,16,32,64,2]", "--json")
    assert r.code == 0, r.stderr
    first = tmp_path / r.json()["run_dir"]
    other = ["--dataset", "synthetic", "--set", "data.channels=1", "--set", "data.image_size=28",
             "--set", "data.classes=3", "--set", "model.channels=[1,8,16,32,64,3]"]
    r = cli("train", *net, *other, "--init", first, "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    head = ["4.0.weight", "4.0.bias", "4.1.weight", "4.1.bias", "4.1.running_mean", "4.1.running_var"]
    assert sorted(s["weights"]["skipped"]) == sorted(head)  # the 3-class head starts afresh
    assert s["weights"]["reinitialised"] == ["4.1.num_batches_tracked"]  # the head's too, though its shape fits
    assert s["weights"]["taken"] == 35 - 7 and s["weights"]["source"] == f"run {first}"  # 5 blocks of 7 tensors
    assert f"weights: 28 tensors from run {first}, 7 re-initialised" in r.stderr
    # normalised as the first run was: the weights were trained on the sample's statistics
    first_summary = json.loads((first / "summary.json").read_text())
    assert s["normalize"]["mean"] == first_summary["normalize"]["mean"]
    config = (tmp_path / s["run_dir"] / "config.yaml").read_text()
    assert f"init: {first}" in config and "stats: weights" in config
    # the start of the second run is the first run's end, but for the head
    cfg = resolve("mnist", ["data.dataset=synthetic", "data.channels=1", "data.image_size=28", "data.classes=3",
                            "model.channels=[1,8,16,32,64,3]", f"model.init={first}"]).config
    start = build_pipeline(cfg).model.state_dict()
    end = torch.load(first / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(start[k], end[k]) for k in end if not k.startswith("4."))


def test_the_head_carries_over_only_to_the_same_classes(cli, tmp_path):
    # transfer's trap: Fashion-MNIST's classes 0-4 and 5-9 are both 5-way, so a head trained on one has
    # the shape of the other's. Here: a 2-class net on the 3s and 7s, then 2 synthetic classes named 0 and 1
    net = ["--config", "mnist", "--set", "data.train_size=64", "--set", "data.valid_size=32", "--batch-size", "16",
           "--epochs", "2", "--set", "schedule.pct_start=0.5", "--set", "model.channels=[1,8,16,32,64,2]"]
    other = ["data.dataset=synthetic", "data.channels=1", "data.image_size=28", "data.classes=2"]
    r = cli("train", *net, "--dataset", "mnist_sample", "--json")
    assert r.code == 0, r.stderr
    first = tmp_path / r.json()["run_dir"]
    saved = torch.load(first / "checkpoints" / "last.pt", weights_only=True)
    assert saved["classes"] == ["3", "7"]  # what the head's outputs mean travels with the weights
    end, head = saved["model"], ["4.0.weight", "4.0.bias", "4.1.weight", "4.1.bias", "4.1.running_mean",
                                 "4.1.running_var", "4.1.num_batches_tracked"]

    def start(*sets: str) -> tuple[dict, dict]:
        pipe = build_pipeline(resolve("mnist", [*sets, "model.channels=[1,8,16,32,64,2]"]).config)
        return pipe.model.state_dict(), pipe.built.loaded.as_dict()

    # other classes of the same count: the body is the run's, the head starts afresh, and the record says why
    for source in (f"model.init={first}", f"model.pretrained={first}/checkpoints/last.pt"):
        weights, record = start(*other, source)
        assert sorted(record["reinitialised"]) == sorted(head) and record["skipped"] == []
        assert record["head"] == "starts afresh: the classes differ (the weights': 3, 7; this data's: 0, 1)"
        assert all(torch.equal(weights[k], end[k]) for k in end if k not in head)
        assert not torch.equal(weights["4.0.weight"], end["4.0.weight"])
        assert torch.equal(weights["4.1.running_var"], torch.ones(2))  # BatchNorm's own start, not the run's
    r = cli("train", *net, *[a for s in other for a in ("--set", s)], "--init", first, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["weights"]["head"].startswith("starts afresh: the classes differ")
    assert f"weights: {len(end) - len(head)} tensors from run {first}, {len(head)} re-initialised" in r.stderr
    assert "the head starts afresh: the classes differ (the weights': 3, 7; this data's: 0, 1)" in r.stderr

    # the same classes: everything is taken, head included (a second cycle continues the first)
    weights, record = start("data.dataset=mnist_sample", f"model.init={first}")
    assert record["reinitialised"] == [] and record["taken"] == len(end)
    assert record["head"] == "taken: the same 2 classes (3, 7)"
    assert all(torch.equal(weights[k], end[k]) for k in end)

    # weights that do not say which classes they were for (a checkpoint from before they were recorded)
    # keep no head, even for data of the same names
    del saved["classes"]
    torch.save(saved, tmp_path / "old.pt")
    weights, record = start("data.dataset=mnist_sample", f"model.pretrained={tmp_path / 'old.pt'}")
    assert sorted(record["reinitialised"]) == sorted(head)
    assert record["head"] == "starts afresh: the weights record no class names"


def test_init_refuses_what_is_not_a_finished_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_usage_error(cli("train", *TINY, "--init", tmp_path / "empty"), "--init", "no checkpoints/last.pt")
    assert_usage_error(cli("train", *TINY, "--init", tmp_path / "missing"), "--init", "no such run directory")
    r = cli("train", *TINY, "--epochs", "1", "--json")
    run = tmp_path / r.json()["run_dir"]
    assert_usage_error(cli("train", *TINY, "--model", "resnet20", "--init", run), "--init", "none of its",
                       "fits resnet20")
    assert_usage_error(cli("train", *TINY, "--init", run, "--set", f"model.pretrained={run}/checkpoints/last.pt"),
                       "model.init is set and so is model.pretrained")


def test_offline_and_not_cached_names_the_file_and_the_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = cli("train", *TINY, "--model", "tv:resnet18", "--set", "model.pretrained=true", "--set", "model.download=false")
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert_usage_error(r, "resnet18-f37072fd.pth", f"are not in {folder}", "model.download is false",
                       "https://download.pytorch.org/models/resnet18-f37072fd.pth", f"TORCH_HOME={tmp_path / 'torch'}")
    assert not (tmp_path / "runs").exists()


def test_a_cached_file_is_used_offline(cli, tmp_path, monkeypatch, resnet18_file):
    path, source = resnet18_file
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = resolve("mnist_sample", TINY_SETS + ["model.name=tv:resnet18", "model.pretrained=true",
                                               "model.download=false"]).config
    pipe = build_pipeline(cfg)
    assert torch.equal(pipe.model.state_dict()["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])
    assert pipe.built.loaded.source.startswith("torchvision ResNet18_Weights.IMAGENET1K_V1")


def run_process(*args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    full.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full)


def test_timm_offline_and_not_cached_names_the_hugging_face_cache(tmp_path):
    pytest.importorskip("timm")
    cache = tmp_path / "hf"  # read by huggingface_hub when imported: a process of its own
    p = run_process("-m", "onecycle_cli", "train", *TINY, "--runs-dir", tmp_path / "runs", "--model", "timm:resnet10t",
                    "--set", "model.pretrained=true", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert f"not in the Hugging Face cache {cache}" in lines[0] and "HF_HUB_OFFLINE is set" in lines[0]
    assert "models--timm--resnet10t.c3_in1k" in lines[0] and "timm.create_model('resnet10t.c3_in1k'" in lines[0]


def test_without_timm_a_timm_model_says_how_to_install_it(tmp_path):
    # a Python where `import timm` fails, as on a machine without the extra
    code = ("import sys; sys.modules['timm'] = None; sys.argv = ['onecycle', 'train', *sys.argv[1:]]; "
            "from onecycle_cli.cli import main; main()")
    p = run_process("-c", code, *TINY, "--runs-dir", str(tmp_path / "runs"), "--model", "timm:resnet10t")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        'onecycle: error: timm models need the timm package: pip install "onecycle[timm]"'], p.stderr


@pytest.mark.parametrize("name,fragments", [
    ("tv:resnet19", ["torchvision has no classification model 'resnet19'", "tv:resnet18", "list_models()"]),
    ("tv:fasterrcnn_resnet50_fpn", ["torchvision has no classification model"]),
    ("timm:resnet10x", ["timm has no model 'resnet10x'", "timm:resnet10t", "timm.list_models()"]),
    ("resnet18", ["model.name = 'resnet18'", "did you mean 'tv:resnet18' or 'timm:resnet18'"]),
], ids=["tv-typo", "tv-detection-model", "timm-typo", "no-prefix"])
def test_unknown_names_are_refused_with_the_closest(cli, name, fragments):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    assert_usage_error(cli("train", *TINY, "--model", name), *fragments)


def test_pretrained_true_for_a_built_in_is_refused(cli):
    assert_usage_error(cli("train", *TINY, "--model", "resnet20", "--set", "model.pretrained=true"),
                       "model.pretrained = true", "no published weights", "--init RUN_DIR")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # what unpickling it would do: create a file


def bad_files(tmp_path):
    torch.manual_seed(0)
    (tmp_path / "text.pth").write_text("not weights")
    torch.save({"conv1.weight": _Payload(str(tmp_path / "pwned"))}, tmp_path / "code.pth")
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", b"\0" * (16 << 20))
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    torch.save({"model": [1, 2, 3]}, tmp_path / "list.pth")
    torch.save({"conv1.weight": "text"}, tmp_path / "strings.pth")
    (tmp_path / "lie.safetensors").write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    (tmp_path / "folder.pth").mkdir()


@pytest.mark.parametrize("file,fragments", [
    ("text.pth", ["not a weights file torch reads safely"]),
    ("code.pth", ["not a weights file torch reads safely"]),
    ("bomb.pt", ["inflate to", "not a weights file"]),
    ("resnet34.pth", ["96 tensors in the file are not in tv:resnet18", "layer1.2.conv1.weight"]),
    ("list.pth", ["entry 'model' is a list, not a tensor", "expected a state_dict"]),
    ("strings.pth", ["'conv1.weight' is a str, not a tensor"]),
    ("lie.safetensors", ["not a readable safetensors file"]),
    ("folder.pth", ["not a file"]),
    ("missing.pth", ["no such file"]),
], ids=["text", "pickled-code", "zip-bomb", "other-architecture", "a-list", "strings", "safetensors-header-lie",
        "a-folder", "missing"])
def test_a_bad_weights_file_is_one_line_and_runs_nothing(cli, tmp_path, file, fragments):
    if file.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    bad_files(tmp_path)
    r = cli("train", *TINY, "--model", "tv:resnet18", "--set", f"model.pretrained={tmp_path / file}")
    assert_usage_error(r, f"model.pretrained {tmp_path / file}", *fragments)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "runs").exists()


def test_config_and_help_say_where_model_names_come_from(cli):
    r = cli("config", "--config", "mnist_sample")
    assert r.code == 0 and "tv:NAME for any of torchvision.models.list_models()" in r.stdout
    assert "timm:NAME[.TAG] for any of timm.list_models()" in r.stdout
    import yaml
    assert yaml.safe_load(r.stdout)["model"]["name"] == "simple_cnn"  # the comment keeps it YAML
    r = cli("train", "--help")
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.stdout).split())  # the words, without the help box's frame
    assert r.code == 0 and "tv:NAME for any torchvision classification model" in text
    assert "timm:NAME for any timm model" in text


def test_safetensors_are_read_from_the_file_opened_and_checked_like_any_weights(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file
    from onecycle_cli.models.pretrained import read_weights
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(7)}
    save_file(state, tmp_path / "good.safetensors")
    weights = read_weights(tmp_path / "good.safetensors")
    assert weights.kind == "state_dict" and set(weights.tensors) == set(state)
    assert all(torch.equal(weights.tensors[k], v) for k, v in state.items())
    save_file({**state, "conv.weight": state["conv.weight"].to(torch.complex64)}, tmp_path / "complex.safetensors")
    with pytest.raises(DataError, match=r"tensor 'conv.weight' is a complex tensor \(complex64\)"):
        read_weights(tmp_path / "complex.safetensors")
    os.mkfifo(tmp_path / "pipe.safetensors")  # refused at once: opened non-blocking, never read
    with pytest.raises(DataError, match="pipe.safetensors: a FIFO, not a file"):
        read_weights(tmp_path / "pipe.safetensors")


PIXEL_STD = float(torch.tensor(1e-6))  # what onecycle records for a constant channel (float32)


@pytest.mark.parametrize("stats,problem", [
    (None, None),  # a run with data.normalize false, or from before statistics were recorded
    ({"source": "torchvision", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, None),
    ({"source": "dataset x", "mean": [0.0], "std": [PIXEL_STD], "note": "constant"}, None),
    ({"mean": [255], "std": [255]}, None),
    ("imagenet", "normalize is a str, expected a mapping with mean and std"),
    ({"mean": [1.0], "std": 1.0}, "normalize.std is a float, expected a list of one number per channel"),
    ({"source": ["x"], "mean": [1.0], "std": [1.0]}, "normalize.source is a list, expected text"),
    ({"mean": [1.0, 2.0, 3.0], "std": [1.0]}, "normalize has 3 means and 1 stds, expected one of each per channel"),
    ({"mean": [], "std": []}, "normalize has 0 values per statistic, expected one per channel (1 to 16)"),
    ({"mean": [1.0] * 17, "std": [1.0] * 17}, "normalize has 17 values per statistic, expected one per channel "
                                               "(1 to 16)"),
    ({"mean": [True], "std": [1.0]}, "normalize.mean[0] is a bool, expected a number"),
    ({"mean": [1.0], "std": ["2"]}, "normalize.std[0] is a str, expected a number"),
    ({"mean": [1.0], "std": [0.0]}, "normalize.std[0] is 0.0, expected a finite value in [1e-07, 255] (pixel units)"),
    ({"mean": [1.0], "std": [-2.0]}, "normalize.std[0] is -2.0, expected a finite value in [1e-07, 255] (pixel units)"),
    ({"mean": [1.0], "std": [1e-300]}, "normalize.std[0] is 1e-300, expected a finite value in [1e-07, 255] "
                                       "(pixel units)"),  # 0 in float32: every input would be inf
    ({"mean": [float("nan")], "std": [1.0]}, "normalize.mean[0] is nan, expected a finite value in [0, 255] "
                                             "(pixel units)"),
    ({"mean": [1.0, float("inf")], "std": [1.0, 1.0]}, "normalize.mean[1] is inf, expected a finite value in "
                                                       "[0, 255] (pixel units)"),
])
def test_recorded_statistics_are_used_only_when_they_normalise_sanely(stats, problem):
    from onecycle_cli.safe_torch import stats_problem
    assert stats_problem(stats) == problem
