"""Datasets read from their real on-disk formats: `onecycle data check`."""


from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_usage_error, run_process, write_cifar, write_idx, write_mnist
from onecycle_cli.config import DataConfig
from onecycle_cli.datasets import load_dataset


def test_cifar10_pickles_read_in_channel_order(tmp_path):
    x, y = write_cifar(tmp_path / "data")
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "data"), download=False))
    assert ds.x_train.shape == (80, 3, 32, 32) and ds.x_valid.shape == (20, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    # a row of b"data" is 1024 red, then 1024 green, then 1024 blue values, row-major
    assert torch.equal(ds.x_train[7, 1], torch.from_numpy(x[7, 1024:2048].reshape(32, 32)))
    assert ds.y_train.tolist() == y.tolist()
    expected_mean = x.reshape(80, 3, 1024).astype(np.float64).mean((0, 2))
    assert np.allclose(ds.mean.numpy(), expected_mean, atol=1e-3)


@pytest.mark.parametrize("dataset,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_files_read_as_torchvision_lays_them_out(tmp_path, dataset, folder):
    written = write_mnist(tmp_path, folder)
    ds = load_dataset(DataConfig(dataset=dataset, root=str(tmp_path), download=False))
    assert ds.x_train.shape == (64, 1, 28, 28) and ds.x_valid.shape == (32, 1, 28, 28)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(written["train"][0]))
    assert ds.y_valid.tolist() == written["t10k"][1].tolist()


def test_subsets_take_the_first_images(tmp_path):
    write_mnist(tmp_path)
    ds = load_dataset(DataConfig(dataset="mnist", root=str(tmp_path), download=False, train_size=10, valid_size=5))
    assert (len(ds.x_train), len(ds.x_valid)) == (10, 5)


def test_bundled_mnist_sample_is_fastais_3_vs_7():
    ds = load_dataset(DataConfig(dataset="mnist_sample"))
    assert ds.x_train.shape == (12_396, 1, 28, 28) and ds.x_valid.shape == (2_038, 1, 28, 28)
    assert ds.classes == ["3", "7"]
    # MNIST's training split holds 6,131 threes and 6,265 sevens
    assert torch.bincount(ds.y_train).tolist() == [6_131, 6_265]


@pytest.mark.parametrize("sizes", [[], ["--set", "data.train_size=100", "--set", "data.valid_size=5000"]])
def test_data_check_of_the_bundled_set_says_what_training_loads(cli, sizes):
    # the check reads the npz headers only (to answer in 0.3 s): its counts must be the loaded arrays'
    r = cli("data", "check", "--config", "mnist_sample", *sizes, "--json")
    cfg = DataConfig(dataset="mnist_sample", **({"train_size": 100, "valid_size": 5000} if sizes else {}))
    ds = load_dataset(cfg)
    assert r.code == 0 and r.json()["ok"]
    assert (r.json()["train"], r.json()["valid"]) == (len(ds.x_train), len(ds.x_valid)) == (
        (100, 2_038) if sizes else (12_396, 2_038))
    assert r.json()["shape"] == list(ds.x_train.shape[1:]) and r.json()["classes"] == len(ds.classes)


def test_synthetic_is_generated_to_order_and_the_same_every_time():
    cfg = DataConfig(dataset="synthetic", train_size=50, valid_size=20, image_size=16, channels=2, classes=4)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.x_train.shape == (50, 2, 16, 16) and a.x_valid.shape == (20, 2, 16, 16) and len(a.classes) == 4
    assert torch.equal(a.x_train, b.x_train) and set(a.y_train.tolist()) == {0, 1, 2, 3}


def test_real_mnist_from_shared_data(shared_data):
    ds = load_dataset(DataConfig(dataset="mnist", root=str(shared_data), download=False))
    assert torch.bincount(ds.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(ds.mean.item() / 255 - 0.1307) < 1e-4


# -- through the CLI: `onecycle data check` and the errors a user sees -------------------------------

def test_data_check_reports_a_readable_dataset(cli, tmp_path):
    write_cifar(tmp_path / "d")
    r = cli("data", "check", "--config", "cifar", "--data-dir", tmp_path / "d", "--json")
    assert r.code == 0 and r.json()["ok"] and r.json()["train"] == 80 and r.json()["shape"] == [3, 32, 32]
    assert cli("data", "check", "--config", "mnist_sample").code == 0


def test_missing_data_names_the_path_and_the_layout(cli, tmp_path):
    r = cli("data", "check", "--config", "mnist", "--data-dir", tmp_path / "empty")
    assert r.code == 2 and "MNIST/raw" in r.stdout and "train-images-idx3-ubyte" in r.stdout
    r = cli("train", "--config", "cifar", "--data-dir", tmp_path / "empty", "--set", "data.download=false")
    assert_usage_error(r, "cifar-10-batches-py", "data_batch_1", "--data-dir")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_offline_the_first_words_say_what_to_do_and_nothing_is_created(tmp_path):
    """`onecycle find --config cifar` with no data here and no network: one line that starts with what to do,
    no ./data left behind, no run directory. Real: where this machine can reach CIFAR-10's server, it would
    download 170 MB, so the case is skipped there."""
    import torchvision.datasets

    from onecycle_cli.datasets.builtin import _reach
    if _reach(torchvision.datasets.CIFAR10.url) is None:
        pytest.skip("this machine reaches CIFAR-10's server: not offline")
    r = run_process("find", "--config", "cifar", cwd=tmp_path)
    assert_usage_error(r, "no network", "cifar-10-batches-py")
    assert r.stderr.startswith("onecycle: error: give --data-dir DIR (or data.root, ONECYCLE_DATA) where cifar10 is, "
                               "or fetch it with `onecycle data download --dataset cifar10` where the network allows")
    assert list(tmp_path.iterdir()) == []


def test_failed_download_is_a_clear_error(cli, tmp_path, monkeypatch):
    # the download is replaced by one that fails as it does without a network, so the test does not
    # depend on whether the machine running it can reach the MNIST mirrors
    import onecycle_cli.datasets.builtin as data

    def offline(root):
        raise OSError("Network is unreachable")
    monkeypatch.setitem(data.DOWNLOADERS, "mnist", offline)
    loader = data._load_idx_dataset("MNIST", list("0123456789"), offline)
    monkeypatch.setattr(data, "LOADERS", {**data.LOADERS, "mnist": loader})
    assert_usage_error(cli("train", "--config", "mnist", "--data-dir", tmp_path), "the download failed",
                       "Network is unreachable", "MNIST/raw")
    assert_usage_error(cli("data", "download", "--config", "mnist", "--data-dir", tmp_path), "failed",
                       "Network is unreachable")


def test_truncated_and_foreign_files_are_refused(cli, tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    r = cli("data", "check", "--config", "cifar", "--data-dir", tmp_path)
    assert r.code == 2 and "data_batch_3" in r.stdout and "truncated" in r.stdout

    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x09\x03" + images.read_bytes()[4:])
    r = cli("data", "check", "--config", "mnist", "--data-dir", tmp_path)
    assert r.code == 2 and "magic" in r.stdout
    write_idx(images, np.zeros((64, 28, 28), np.uint8))
    images.write_bytes(images.read_bytes()[:-100])
    r = cli("data", "check", "--config", "mnist", "--data-dir", tmp_path)
    assert r.code == 2 and "truncated" in r.stdout


def test_images_that_do_not_fit_the_model_are_refused_before_training(cli, tmp_path):
    r = cli("train", "--config", "mnist_sample", "--set", "model.channels=[3,16,16,2]", "--epochs", "1")
    assert_usage_error(r, "model.channels[0] = 3", "1 channel")
    r = cli("train", "--config", "mnist_sample", "--set", "model.channels=[1,16,16,10]", "--epochs", "1")
    assert_usage_error(r, "2 classes")
    r = cli("train", "--config", "mnist_sample", "--batch-size", "20000", "--epochs", "1")
    assert_usage_error(r, "train.batch_size = 20000", "12396 training images")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class ChattyMNIST:
    """torchvision's MNIST download as torchvision < 0.20 does it: print()s to stdout as it goes."""

    fail = False

    def __init__(self, root, train=True, download=False):
        print("Downloading https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz")
        if self.fail:
            print("Failed to download (trying next):\n<urlopen error [Errno 101] Network is unreachable>\n")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://ossci-datasets...")
        write_mnist(Path(root))
        print(f"Extracting {root}/MNIST/raw/train-images-idx3-ubyte.gz to {root}/MNIST/raw")


def test_download_chatter_never_reaches_stdout(cli, tmp_path, monkeypatch):
    # torch 2.4's torchvision prints its progress lines to stdout; `--json` keeps stdout for its one
    # object, so they go to stderr when the download works and give way to the one-line error when it fails
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "MNIST", ChattyMNIST)
    r = cli("data", "download", "--config", "mnist", "--data-dir", tmp_path / "d", "--json")
    assert r.code == 0 and r.json()["ok"] and r.json()["train"] == 64, r.stderr
    assert "Downloading https://" in r.stderr and "Extracting" in r.stderr

    monkeypatch.setattr(ChattyMNIST, "fail", True)
    for command in ("data", "download"), ("train",):
        r = cli(*command, "--config", "mnist", "--data-dir", tmp_path / "e", "--json")
        assert_usage_error(r, "Error downloading train-images-idx3-ubyte.gz")
        assert r.stdout == ""
