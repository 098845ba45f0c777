"""After training: a run's interpretation files, best.pt, `onecycle evaluate`, `predict` and `export`.

One folder run (RGB photos of mixed sizes and formats, decoded at 28 px and centre-cropped to 24 px,
ResNet-20, 2 epochs) is made once and read by most tests; their evaluations land in it (each in its
own folder), and they copy it before changing anything else.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_usage_error, clean_env, digits, run_process, run_watched, write_photos

FOLDER_SETS = ["data.image_size=24", "data.presize=28", "train.batch_size=8", "train.epochs=2",
               "schedule.max_lr=0.01", "train.threads=1"]


def sets(*items: str) -> list[str]:
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory) -> dict:
    """A finished 2-epoch run on a photo folder (train/ and valid/, 2 bad files), and where its data is."""
    root = tmp_path_factory.mktemp("trained")
    write_photos(root / "photos")
    r = run_process("train", "--config", "folder", "--data-dir", root / "photos", *sets(*FOLDER_SETS),
                    "--runs-dir", root / "runs", "--progress", "none", "--json")
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)
    return {"root": root, "photos": root / "photos", "run": Path(summary["run_dir"]), "summary": summary}


def read_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def evaluate(run: Path, *args) -> dict:
    r = run_process("evaluate", run, "--progress", "none", "--json", *args)
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


# ------------------------------------------------------------------------------------------------
# what every run writes


def test_a_run_ends_with_its_interpretation(folder_run):
    run, summary = folder_run["run"], folder_run["summary"]
    n = json.loads((run / "data_report.json").read_text())["images"]["valid"]
    matrix = read_rows(run / "confusion.csv")
    assert matrix[0] == ["actual \\ predicted", "3", "7"]
    counts = np.array([[int(v) for v in row[1:]] for row in matrix[1:]])
    assert counts.sum() == n  # every validation image, once
    # the final model scored there: its accuracy is the last epoch's, to the image
    assert counts.trace() / n == pytest.approx(summary["final"]["accuracy"], abs=1e-9)
    per_class = {r[0]: r for r in read_rows(run / "per_class.csv")[1:]}
    for i, name in enumerate(("3", "7")):
        assert int(per_class[name][1]) == counts[i].sum() and int(per_class[name][2]) == counts[i, i]
    confused = read_rows(run / "most_confused.csv")
    assert confused[0] == ["actual", "predicted", "count"]
    off = sorted((int(r[2]) for r in confused[1:]), reverse=True)
    assert off == [int(r[2]) for r in confused[1:]] and sum(off) == n - counts.trace()
    top = read_rows(run / "top_losses.csv")
    assert top[0] == ["index", "actual", "predicted", "probability", "loss"] and len(top) == 10
    losses = [float(r[4]) for r in top[1:]]
    assert losses == sorted(losses, reverse=True)
    for index, actual, predicted, prob, loss in top[1:]:
        assert 0 <= int(index) < n
        if actual != predicted:  # the label's probability is at most what the prediction left over
            assert math.exp(-float(loss)) <= 1 - float(prob) + 2e-6
    for png in ("confusion.png", "top_losses.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (run / "report.html").read_text()
    for shown in ('alt="confusion.png"', 'alt="top_losses.png"', "Most confused", "Per class"):
        assert shown in page


def test_best_checkpoint_is_the_most_accurate_epoch(folder_run):
    run, summary = folder_run["run"], folder_run["summary"]
    best = summary["best"]
    metrics = read_rows(run / "metrics.csv")
    head = metrics[0]
    accuracies = [float(r[head.index("accuracy")]) for r in metrics[1:]]
    assert best["accuracy"] == max(accuracies) and best["epoch"] == accuracies.index(max(accuracies))
    assert best["checkpoint"] == "checkpoints/best.pt" and (run / "checkpoints" / "best.pt").is_file()
    scored = evaluate(run, "--checkpoint", "best")
    assert scored["accuracy"] == pytest.approx(best["accuracy"], abs=1e-9)
    assert scored["epoch"] == best["epoch"]
    last = evaluate(run)
    assert last["accuracy"] == pytest.approx(summary["final"]["accuracy"], abs=1e-9)
    assert last["loss"] == pytest.approx(summary["final"]["valid_loss"], rel=1e-4)
    assert last["epoch"] == 1 and last["top5"] is None  # two classes: no top-5


# ------------------------------------------------------------------------------------------------
# evaluate


def test_flip_tta_averages_each_image_with_its_mirror(folder_run):
    from onecycle_cli.trained.load import load_trained
    from onecycle_cli.trained.scores import probabilities
    trained = load_trained(folder_run["run"], "last", "cpu")
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 3, 24, 24), dtype=np.uint8))
    alone = probabilities(trained, x, False)
    mirrored = probabilities(trained, x.flip(-1), False)
    torch.testing.assert_close(probabilities(trained, x, True), (alone + mirrored) / 2, atol=1e-6, rtol=1e-5)
    run = folder_run["run"]
    flipped = evaluate(run, "--tta", "flip")
    assert flipped["tta"] == "flip" and flipped["images"] == evaluate(run)["images"]
    assert Path(flipped["out"]) == run / "evaluations" / "last-flip"
    assert (run / "evaluations" / "last-flip" / "confusion.png").is_file()


def test_evaluate_another_folder_of_the_same_classes(folder_run, tmp_path):
    # a test set in layout (b): every image is scored, whatever data.valid_pct would hold out
    test = tmp_path / "test"
    x, y = digits(30, "valid")
    for i in range(30):
        rgb = Image.fromarray(x[i]).convert("RGB")
        (test / "37"[y[i]]).mkdir(parents=True, exist_ok=True)
        rgb.save(test / "37"[y[i]] / f"{i}.png")
    result = evaluate(folder_run["run"], "--data-dir", test)
    assert result["images"] == 30 and "every image of folder" in result["data"]
    assert sum(r["images"] for r in result["per_class"]) == 30
    # a class the run never learned: exit 2, naming it
    (test / "9").mkdir()
    Image.fromarray(x[0]).convert("RGB").save(test / "9" / "x.png")
    r = run_process("evaluate", folder_run["run"], "--data-dir", test)
    assert_usage_error(r, "1 class(es) the run was not trained on: 9", "the run's classes are 3, 7")
    # a class the set lacks (a train/ + valid/ tree whose valid/ holds only 3s): scored, with a warning naming it
    tree = tmp_path / "tree"
    shutil.copytree(test / "3", tree / "valid" / "3")
    shutil.copytree(test / "7", tree / "train" / "7")
    r = run_process("evaluate", folder_run["run"], "--data-dir", tree, "--progress", "none", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["images"] == len(os.listdir(tree / "valid" / "3"))
    assert "has no images of 1 of the run's classes: 7" in r.stderr


def test_top5_with_more_than_five_classes(tmp_path):
    r = run_process("train", "--config", "mnist_sample", "--dataset", "synthetic", *sets(
        "data.classes=8", "data.channels=1", "data.image_size=16", "data.train_size=256", "data.valid_size=64",
        "model.channels=[1,8,8,8]", "train.batch_size=32", "train.epochs=1",
        "schedule.max_lr=0.05", "train.threads=1"), "--runs-dir", tmp_path / "runs", "--json", "--progress", "none")
    assert r.code == 0, r.stderr
    run = Path(json.loads(r.stdout)["run_dir"])
    result = evaluate(run)
    assert result["top5"] is not None and 1 >= result["top5"] >= result["accuracy"]
    assert len(result["per_class"]) == 8


def test_evaluate_refuses_what_is_not_a_usable_checkpoint(folder_run, tmp_path):
    assert_usage_error(run_process("evaluate", tmp_path / "nowhere"), "no such run directory")
    copy = tmp_path / "run"
    shutil.copytree(folder_run["run"], copy)
    assert_usage_error(run_process("evaluate", copy, "--checkpoint", "newest"), "expected one of last, best, ema")
    (copy / "checkpoints" / "best.pt").unlink()
    assert_usage_error(run_process("evaluate", copy, "--checkpoint", "best"), "no checkpoints/best.pt")
    # a link where the checkpoint goes: never read through
    (copy / "checkpoints" / "best.pt").symlink_to(folder_run["run"] / "checkpoints" / "best.pt")
    assert_usage_error(run_process("evaluate", copy, "--checkpoint", "best"), "is a symbolic link")
    # a checkpoint that would run code when unpickled: refused, and the code never ran
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    torch.save({"model": Payload()}, copy / "checkpoints" / "last.pt")
    assert_usage_error(run_process("evaluate", copy), "cannot be read")
    assert not marker.exists()
    # weights of another architecture: refused by name, not scored as nonsense
    state = torch.load(folder_run["run"] / "checkpoints" / "last.pt", weights_only=True)
    state["model"] = {k: v[:1] if v.dim() else v for k, v in state["model"].items()}
    torch.save(state, copy / "checkpoints" / "last.pt")
    assert_usage_error(run_process("evaluate", copy), "does not fit model 'resnet20'")


def test_evaluate_never_writes_through_a_link(folder_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(folder_run["run"], copy)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(copy / "evaluations", ignore_errors=True)  # what other tests evaluated
    (copy / "evaluations").symlink_to(outside)
    assert_usage_error(run_process("evaluate", copy), "evaluations is a symbolic link")
    assert not any(outside.iterdir())
    # nor does the report read through it
    (outside / "x").mkdir()
    (outside / "x" / "evaluation.json").write_text(json.dumps({"command": "evaluate", "data": "SECRET"}))
    assert run_process("report", copy).code == 0
    assert "SECRET" not in (copy / "report.html").read_text()


# ------------------------------------------------------------------------------------------------
# predict


def predictions(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_classifies_files_as_the_run_validated_them(folder_run):
    """The validation folder's files through `predict` score exactly as the run's own validation did: the same
    decoding, crop and normalisation (a different resize would move the loss)."""
    photos, run = folder_run["photos"], folder_run["run"]
    r = run_process("predict", run, photos / "valid", "--top", "2")
    assert r.code == 0, r.stderr
    rows = predictions(r.stdout)
    assert list(rows[0]) == ["path", "label", "probability", "label_2", "probability_2"]
    files = sorted(p for p in (photos / "valid").rglob("*") if p.is_file())
    assert [row["path"] for row in rows] == [str(p) for p in files]
    right = [row["label"] == Path(row["path"]).parent.name for row in rows]
    losses = [-math.log(float(row["probability"] if row["label"] == Path(row["path"]).parent.name
                              else row["probability_2"])) for row in rows]
    scored = evaluate(run)
    assert sum(right) / len(rows) == pytest.approx(scored["accuracy"], abs=1e-9)
    assert sum(losses) / len(rows) == pytest.approx(scored["loss"], rel=1e-4)
    for row in rows:
        assert float(row["probability"]) >= float(row["probability_2"])
        assert float(row["probability"]) + float(row["probability_2"]) == pytest.approx(1, abs=2e-6)


def test_predict_reports_bad_files_and_follows_no_link(folder_run, tmp_path):
    photos, run = folder_run["photos"], folder_run["run"]
    folder = tmp_path / "mixed"
    shutil.copytree(photos / "train" / "7", folder)  # holds a truncated JPEG and an animated GIF
    (folder / "link.png").symlink_to(photos / "valid" / "3" / sorted(os.listdir(photos / "valid" / "3"))[0])
    os.mkfifo(folder / "pipe.png")
    out = tmp_path / "labels.csv"
    r = run_watched("predict", run, folder, "--out", out, "--tta", "flip")
    assert r.code == 0, r.stderr
    rows = predictions(out.read_text())
    names = {Path(row["path"]).name for row in rows}
    assert "cut.jpg" not in names and "link.png" not in names and "anim.gif" in names
    assert "skipped" in r.stderr and "cut.jpg" in r.stderr
    assert f"{len(rows)} predictions written to {out}" in r.stderr
    # --strict: exit 2 naming the first bad file, and no half-written CSV
    out.unlink()
    assert_usage_error(run_watched("predict", run, folder, "--strict", "--out", out), "--strict and")
    assert not out.exists()
    assert_usage_error(run_process("predict", run, tmp_path / "missing.png"), "no such file or folder")
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_text("text")
    assert_usage_error(run_process("predict", run, only_bad), "none of the 1 files could be decoded")


def test_predict_prints_no_control_characters_from_file_names(folder_run, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    x, _ = digits(1, "valid")
    Image.fromarray(x[0]).convert("RGB").save(folder / "a\x1b]0;retitled\x07\nb.png", format="PNG")
    r = run_process("predict", folder_run["run"], folder)
    assert r.code == 0, r.stderr
    assert not any(c in r.stdout for c in "\x1b\x07\r") and r.stdout.count("\n") == 2  # header and one row
    assert predictions(r.stdout)[0]["path"].endswith("a\\x1b]0;retitled\\x07\\nb.png")


# ------------------------------------------------------------------------------------------------
# export

FRESH = """
import csv, json, sys
import numpy as np, torch
from PIL import Image
bundle, table = sys.argv[1], sys.argv[2]
meta = json.load(open(bundle + "/model.json"))
program = torch.export.load(bundle + "/model.pt2").module()
rows = list(csv.DictReader(open(table)))
size, decoded = meta["input"]["height"], meta["input"]["decoded_size"]
top = (decoded - size) // 2
x = np.stack([np.asarray(Image.open(r["path"]).convert("RGB")).transpose(2, 0, 1)[:, top:top + size, top:top + size]
              for r in rows])
p = program(torch.from_numpy(np.ascontiguousarray(x)))
print(json.dumps({"labels": [meta["classes"][i] for i in p.argmax(1)], "probability": p.max(1).values.tolist(),
                  "onecycle_imported": any(m.startswith("onecycle") for m in sys.modules)}))
"""


def test_exported_bundle_predicts_without_onecycle(folder_run, tmp_path):
    run = folder_run["run"]
    images = tmp_path / "images"
    images.mkdir()
    x, _ = digits(12, "valid")
    for i in range(12):  # the size the run decodes to: no resampling to reproduce outside onecycle
        Image.fromarray(x[i]).convert("RGB").resize((28, 28)).save(images / f"{i:02d}.png")
    table = tmp_path / "predictions.csv"
    assert run_process("predict", run, images, "--out", table).code == 0
    bundle = tmp_path / "bundle"
    r = run_process("export", run, "--out", bundle, "--json")
    assert r.code == 0, r.stderr
    result = json.loads(r.stdout)
    assert sorted(os.listdir(bundle)) == ["model.json", "model.pt2", "model.safetensors"]
    assert result["program_check_max_difference"] < 1e-4
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["classes"] == ["3", "7"] and meta["input"]["channels"] == 3 and meta["input"]["decoded_size"] == 28
    # a fresh interpreter that never imports onecycle, outside the checkout
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", FRESH, str(bundle), str(table)], capture_output=True, text=True,
                       cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    rows = predictions(table.read_text())
    assert not got["onecycle_imported"]
    assert got["labels"] == [row["label"] for row in rows]
    assert np.allclose(got["probability"], [float(row["probability"]) for row in rows], atol=1e-5)
    # the weights file holds the model's tensors, by their names
    from safetensors.torch import load_file
    weights = load_file(bundle / "model.safetensors")
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert set(weights) == set(saved) and all(torch.equal(weights[k], saved[k]) for k in saved)


def test_export_refuses_an_out_that_is_not_a_folder(folder_run, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_usage_error(run_process("export", folder_run["run"], "--out", tmp_path / "file"), "not a directory")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert_usage_error(run_process("export", folder_run["run"], "--out", tmp_path / "link"), "symbolic link")
    assert not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------------------------------------------
# many classes


def test_many_classes_give_a_readable_confusion_matrix(tmp_path):
    from onecycle_cli.runs.plots import confusion_png
    from onecycle_cli.trained.interpret import MOST_SHOWN, write_interpretation
    from onecycle_cli.trained.scores import Scores
    rng = np.random.default_rng(0)
    k, n = 1000, 20_000
    labels = rng.integers(0, k, n)
    preds = labels.copy()
    wrong = rng.random(n) < 0.1
    preds[wrong] = rng.integers(0, k, wrong.sum())
    preds[labels == 7] = 8  # one class always taken for another: it must be shown, first
    prob = rng.random(n).astype(np.float32)
    scores = Scores([f"class {i}" for i in range(k)], labels, preds, prob, -np.log(prob), None, False)
    write_interpretation(tmp_path, scores, lambda rows: np.zeros((len(rows), 3, 8, 8), np.uint8))
    matrix = read_rows(tmp_path / "confusion.csv")
    assert len(matrix) == MOST_SHOWN + 1 and len(matrix[0]) == MOST_SHOWN + 1
    assert "the 30 classes in the most mistakes, of 1000" in matrix[0][0]
    assert matrix[1][0] in ("class 7", "class 8") and {matrix[1][0], matrix[2][0]} == {"class 7", "class 8"}
    assert len(read_rows(tmp_path / "per_class.csv")) == k + 1
    most = read_rows(tmp_path / "most_confused.csv")
    assert most[1][:2] == ["class 7", "class 8"] and int(most[1][2]) == (labels == 7).sum()
    assert confusion_png(tmp_path).read_bytes()[:4] == b"\x89PNG"


def test_commands_are_in_the_help():
    r = run_process("--help")
    for command in ("evaluate", "predict", "export"):
        assert command in r.stdout
    assert "1cycle is meant to be read at its end" in " ".join(run_process("evaluate", "--help").stdout.split())
