"""The user's own image folders (issue 10): layouts, decoding, the cache, memory tiers, augmentation.

Every folder here is written by the test, in real file formats (PNG, JPEG, BMP, WebP, GIF), from the
bundled 3-vs-7 digits: mixed sizes, grey, RGB, RGBA and palette images, plus a truncated JPEG and a
text file named .jpg that must be skipped, not fatal.
"""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, assert_usage_error, digits, save, write_photos
from onecycle_cli.config import DataConfig
from onecycle_cli.datasets import read_arrays
from onecycle_cli.datasets.cache import cached_images
from onecycle_cli.datasets.decode import DecodeError, decode_image
from onecycle_cli.datasets.folder import scan
from onecycle_cli.datasets.listing import hold_out, split_key
from onecycle_cli.errors import Interrupted
from onecycle_cli.runs.directory import read_csv


def args(root: Path, *extra: str) -> list[str]:
    """The folder preset, shrunk: 16 px crops of 20 px cached images, a 3-conv CNN, batch 16."""
    return ["--config", "folder", "--data-dir", str(root), "--set", "data.image_size=16", "--set", "data.presize=20",
            "--model", "simple_cnn", "--set", "model.channels=[3,8,16,2]", "--set", "model.kernel_sizes=[3]",
            "--batch-size", "16", "--set", "schedule.max_lr=1e-2", *extra]


def check(cli, root: Path, *extra: str) -> dict:
    r = cli("data", "check", *args(root)[:6], *extra, "--json")
    assert r.code == 0, r.stdout + r.stderr
    return r.json()


# ------------------------------------------------------------------------------------------------
# layouts


def test_train_valid_folders_give_sorted_classes_counts_and_the_skipped_files(cli, photos):
    root, expected = photos
    r = cli("data", "check", *args(root)[:6], "--json")
    assert r.code == 0, r.stderr
    report = r.json()
    assert report["ok"] and report["layout"] == "train/ and valid/ folders" and report["class_names"] == ["3", "7"]
    assert report["counts"] == expected  # every format and mode decoded; README.txt and .DS_Store not looked at
    assert report["train"] == 62 and report["valid"] == 20 and report["shape"] == [3, 16, 16]
    assert report["files"] == 84  # 82 images and the two bad files
    skipped = {s["file"]: s for s in report["skipped"]}
    assert set(skipped) == {"train/3/notes.jpg", "train/7/cut.jpg"}
    assert "truncated" in skipped["train/7/cut.jpg"]["reason"]
    assert skipped["train/3/notes.jpg"]["reason"] == "not an image (unknown format)"
    # one warning line, on stderr, with the count
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "2 of 84 files" in warnings[0]
    # without --json: the classes with their counts, and the skipped files with why
    text = cli("data", "check", *args(root)[:6]).stdout.splitlines()
    assert text[0].startswith("folder: ok, 62 training and 20 validation images of 3x16x16, 2 classes")
    rows = {line.split()[0]: line.split()[1:] for line in text[1:4]}
    assert rows == {"class": ["train", "valid"], **{c: [str(expected["train"][c]), str(expected["valid"][c])]
                                                    for c in "37"}}
    assert any(line.startswith("  skipped train/7/cut.jpg: OSError: image file is truncated") for line in text)


def test_val_is_accepted_beside_train(cli, tmp_path):
    root = tmp_path / "p"
    write_photos(root, train=12, valid=6, bad=False)
    (root / "valid").rename(root / "val")
    report = check(cli, root)
    assert report["layout"] == "train/ and val/ folders" and report["valid"] == 6


def test_one_class_tree_is_split_by_valid_pct_stably_whatever_the_listing_order(cli, tmp_path, monkeypatch):
    root = tmp_path / "tree"
    x, y = digits(60)
    for i in range(60):
        save(Image.fromarray(x[i]), root / "37"[y[i]] / f"{i:02d}.png")
    cfg = DataConfig(dataset="folder", root=str(root), valid_pct=0.25, split_seed=3)
    listing = scan(cfg)
    held = {e.path for e in listing.entries if e.valid}
    per_class = {c: sum(e.label == k for e in listing.entries) for k, c in enumerate(listing.classes)}
    # round(0.25 * n) of each class, not of the whole
    assert {c: sum(e.valid and e.label == k for e in listing.entries) for k, c in enumerate(listing.classes)} == \
           {c: int(0.25 * n + 0.5) for c, n in per_class.items()}
    # the file system listing the other way round changes nothing
    real = os.scandir
    with monkeypatch.context() as m:
        m.setattr(os, "scandir", lambda path: list(real(path))[::-1])
        assert {e.path for e in scan(cfg).entries if e.valid} == held
    # nor does a copy elsewhere, written in another order at other times
    copy = tmp_path / "copy"
    for path in sorted(root.rglob("*.png"), reverse=True):
        (copy / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy / path.relative_to(root))
    assert {e.path for e in scan(cfg.model_copy(update={"root": str(copy)})).entries if e.valid} == held
    assert {e.path for e in scan(cfg.model_copy(update={"split_seed": 4})).entries if e.valid} != held
    assert hold_out(sorted(held)[::-1] + ["x"], 0.5, 0) == hold_out(["x"] + sorted(held), 0.5, 0)
    # through the command line: the same counts on every run
    a = check(cli, root, "--set", "data.valid_pct=0.25", "--set", "data.split_seed=3")
    b = check(cli, root, "--set", "data.valid_pct=0.25", "--set", "data.split_seed=3")
    assert a["counts"] == b["counts"] and a["valid"] == len(held) and "held out by data.valid_pct" in a["layout"]


def test_a_csv_names_files_labels_and_the_split(cli, tmp_path):
    root = tmp_path / "csv"
    x, y = digits(40)
    lines = ["fname,label,is_valid"]
    for i in range(40):
        save(Image.fromarray(x[i]), root / "images" / f"{i:02d}.png")
        lines.append(f"images/{i:02d}.png,{'three' if y[i] == 0 else 'seven'},{'true' if i >= 30 else 'false'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    report = check(cli, root, "--set", "data.csv=labels.csv")
    assert report["class_names"] == ["seven", "three"] and (report["train"], report["valid"]) == (30, 10)
    assert report["layout"] == "data.csv"
    # without is_valid, valid_pct splits each label
    (root / "plain.csv").write_text("fname,label\n" + "\n".join(",".join(line.split(",")[:2]) for line in lines[1:]))
    report = check(cli, root, "--set", "data.csv=plain.csv", "--set", "data.valid_pct=0.2")
    assert report["valid"] == 8 and report["train"] == 32


@pytest.mark.parametrize("setup,flags,fragments", [
    ("missing", [], ["does not exist", "--data-dir"]),
    ("loose images", [], ["found 3 image(s)", "no class folders", "train/<class>"]),
    ("empty class", [], ["class folder 'empty' holds no images"]),
    ("train only", [], ["train/ folder and no valid/ or val/", "data.valid_pct"]),
    ("valid and val", [], ["both valid/ and val/"]),
    ("tree", [], ["2 class folder(s)", "set data.valid_pct"]),
    ("train and valid", ["--set", "data.valid_pct=0.2"], ["data.valid_pct = 0.2", "already holds train/ and valid/"]),
    ("tree", ["--set", "data.valid_pct=0"], ["data.valid_pct = 0", "> 0"]),
    ("tree", ["--set", "data.valid_pct=1.5"], ["data.valid_pct = 1.5", "< 1"]),
    ("csv", ["--set", "data.csv=bad_column.csv"], ["unknown column 'kind'", "fname,label[,is_valid]"]),
    ("csv", ["--set", "data.csv=missing.csv"], ["names 1 file(s) that are not in", "'images/nope.png'"]),
    ("csv", ["--set", "data.csv=escape.csv"], ["'../secret.png' leaves the root"]),
    ("csv", ["--set", "data.csv=labels.csv", "--set", "data.valid_pct=0.2"], ["has an is_valid column"]),
    ("csv", ["--set", "data.csv=absent.csv"], ["absent.csv does not exist"]),
    ("bad files", ["--set", "data.strict=true"], ["data.strict is true and 2 of 12 files", "could not be decoded"]),
])
def test_layouts_that_cannot_be_read_exit_2_with_one_line_naming_what_was_found(cli, tmp_path, setup, flags, fragments):
    root = tmp_path / "data"
    x, y = digits(6)
    if setup == "loose images":
        for i in range(3):
            save(Image.fromarray(x[i]), root / f"{i}.png")
    elif setup == "empty class":
        write_photos(root, train=6, valid=2, bad=False)
        (root / "train" / "empty").mkdir()
        (root / "train" / "empty" / "notes.txt").write_text("no images here")
    elif setup in ("train only", "valid and val", "train and valid", "bad files"):
        write_photos(root, train=6, valid=2, bad=setup == "bad files")
        if setup == "train only":
            shutil.rmtree(root / "valid")
        if setup == "valid and val":
            shutil.copytree(root / "valid", root / "val")
    elif setup == "tree":
        for i in range(6):
            save(Image.fromarray(x[i]), root / "37"[y[i]] / f"{i}.png")
    elif setup == "csv":
        for i in range(6):
            save(Image.fromarray(x[i]), root / "images" / f"{i}.png")
        (root / "labels.csv").write_text("fname,label,is_valid\nimages/0.png,a,false\nimages/1.png,b,true\n")
        (root / "bad_column.csv").write_text("fname,label,kind\nimages/0.png,a,x\n")
        (root / "missing.csv").write_text("fname,label,is_valid\nimages/0.png,a,0\nimages/nope.png,b,1\n")
        (root / "escape.csv").write_text("fname,label,is_valid\n../secret.png,a,0\n")
    r = cli("train", *args(root), "--epochs", "1", *flags)
    assert_usage_error(r, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ------------------------------------------------------------------------------------------------
# decoding: formats, modes, orientation, resizing, bombs


def test_every_mode_becomes_the_configured_channels(tmp_path):
    x, _ = digits(1)
    grey = Image.fromarray(x[0])
    rgba = Image.merge("RGBA", (grey, grey, grey.point(lambda v: 255 - v), Image.new("L", (28, 28), 7)))
    cases = {"grey.png": grey, "rgba.png": rgba, "palette.png": grey.convert("P"), "rgb.bmp": rgba.convert("RGB")}
    for name, img in cases.items():
        img.save(tmp_path / name)
    as_rgb = decode_image(tmp_path / "grey.png", 3, 28, "crop")
    assert as_rgb.shape == (3, 28, 28) and (as_rgb == x[0]).all()  # grey: three equal channels
    rgb = decode_image(tmp_path / "rgba.png", 3, 28, "crop")
    assert (rgb[2] == 255 - x[0]).all() and (rgb[0] == x[0]).all()  # alpha dropped, colour kept
    assert (decode_image(tmp_path / "palette.png", 1, 28, "crop")[0] == x[0]).all()
    assert (decode_image(tmp_path / "rgb.bmp", 3, 28, "crop") == rgb).all()
    # a palette with transparency makes PIL warn when converting; nothing of it reaches the user's terminal
    grey.convert("P").save(tmp_path / "clear.png", transparency=bytes(range(256)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode_image(tmp_path / "clear.png", 3, 28, "crop").shape == (3, 28, 28)
    assert not caught, [str(w.message) for w in caught]
    grey_of_rgb = decode_image(tmp_path / "rgba.png", 1, 28, "crop")
    assert grey_of_rgb.shape == (1, 28, 28) and (grey_of_rgb[0] == np.asarray(rgba.convert("L"))).all()
    # 16-bit grey is scaled to 8 bits, not clipped
    deep = np.zeros((4, 4), np.uint16)
    deep[:, 1], deep[:, 2:] = 32896, 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert decode_image(tmp_path / "deep.png", 1, 4, "squish")[0, 0].tolist() == [0, 128, 255, 255]


def test_gif_first_frame_and_exif_orientation(tmp_path):
    white, black = Image.new("L", (8, 8), 255), Image.new("L", (8, 8), 0)
    white.save(tmp_path / "a.gif", save_all=True, append_images=[black])
    assert (decode_image(tmp_path / "a.gif", 1, 8, "crop") == 255).all()
    # stored 30 wide, 10 high, red on its left third; EXIF 6: shown turned 90 degrees clockwise
    stored = np.zeros((10, 30, 3), np.uint8)
    stored[:, :10, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "turned.jpg", quality=95, exif=exif)
    upright = decode_image(tmp_path / "turned.jpg", 3, 12, "squish")
    assert upright[0, :3].mean() > 200 and upright[0, -3:].mean() < 40  # the red third is on top


def test_crop_squish_and_pad_make_a_square(tmp_path):
    wide = np.zeros((20, 40), np.uint8)
    wide[:, :6] = 255  # 40 wide, 20 high, white on its left 6 columns
    Image.fromarray(wide).save(tmp_path / "wide.png")
    crop = decode_image(tmp_path / "wide.png", 1, 10, "crop")[0]
    squish = decode_image(tmp_path / "wide.png", 1, 10, "squish")[0]
    pad = decode_image(tmp_path / "wide.png", 1, 10, "pad")[0]
    assert crop.max() < 10  # the centre 20x20 square holds none of the white quarter
    assert (squish[:, 0] > 200).all() and (squish[:, -1] == 0).all() and squish.shape == (10, 10)
    assert (pad[:2] == 0).all() and (pad[-2:] == 0).all() and pad[5, 0] > 200  # black bars above and below


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height pixels in a few bytes: what a decompression bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_per_file(tmp_path):
    for name, side in (("warned.png", 10_000), ("refused.png", 20_000)):  # 100 M pixels (PIL warns), 400 M (refuses)
        png_header(tmp_path / name, side, side)
        with pytest.raises(DecodeError, match="decompression"):
            decode_image(tmp_path / name, 3, 16, "crop")


def zeros_png(path: Path, width: int, height: int, depth: int = 8, colour: int = 0, channels: int = 1) -> None:
    """A real PNG of width x height black pixels, a few hundred kB whatever its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, left, idat = zlib.compressobj(1), height * (1 + width * channels * depth // 8), []
    while left > 0:
        idat.append(z.compress(bytes(min(left, 1 << 24))))
        left -= 1 << 24
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat) + z.flush())
                     + chunk(b"IEND", b""))


def test_memory_is_bounded_in_bytes_before_any_pixel_is_decoded(tmp_path):
    # a 24 MP photo passes: RGB (96 MB as PIL stores it), RGBA (and its RGB copy), 16-bit grey (and its 8-bit copy)
    for name, colour, depth, channels in (("rgb.png", 2, 8, 3), ("rgba.png", 6, 8, 4), ("deep.png", 0, 16, 1)):
        zeros_png(tmp_path / name, 6000, 4000, depth, colour, channels)
        assert (decode_image(tmp_path / name, 3, 16, "crop") == 0).all()
    # what would take more is refused from its header: 9400 x 9400 RGBA is 337 MB as stored, 674 MB with its copy
    png_header(tmp_path / "big.png", 9400, 9400)
    data = bytearray((tmp_path / "big.png").read_bytes())
    data[24:26] = bytes([8, 6])  # 8-bit RGBA
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "big.png").write_bytes(bytes(data))
    with pytest.raises(DecodeError, match=r"^9400x9400 PNG RGBA needs 674 MB to decode, more than the 256 MB"):
        decode_image(tmp_path / "big.png", 3, 16, "crop")
    # a progressive JPEG holds every DCT coefficient at full size, draft mode or not: 2 bytes each
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG", progressive=True, subsampling=0)
    for side, refused in ((4000, False), (9400, True)):  # 96 MB of coefficients; 530 MB
        data = bytearray(buf.getvalue())
        at = data.find(b"\xff\xc2")
        data[at + 5:at + 9] = struct.pack(">HH", side, side)
        (tmp_path / "p.jpg").write_bytes(bytes(data))
        try:
            decode_image(tmp_path / "p.jpg", 3, 16, "crop")
            why = ""
        except DecodeError as e:  # the 16 x 16 scan cannot fill 4000 x 4000: broken, but not refused for its size
            why = str(e)
        assert ("MB to decode" in why) == refused, why


def test_a_jpeg_scan_that_leaves_out_components_is_counted_as_buffered():
    from onecycle_cli.datasets.decode import _first_scan_components
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")  # baseline: one interleaved scan of Y, Cb and Cr
    assert _first_scan_components(io.BytesIO(buf.getvalue())) == 3
    data = buf.getvalue()
    at = data.find(b"\xff\xda")
    one = data[:at] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + data[at + 14:]  # a scan of Y alone
    assert _first_scan_components(io.BytesIO(one)) == 1
    assert _first_scan_components(io.BytesIO(b"\xff\xd8garbage")) is None  # unreadable: counted as buffered


def test_only_the_formats_listed_are_parsed_and_the_readme_lists_them():
    from onecycle_cli.datasets.decode import FORMATS
    from onecycle_cli.datasets.folder import IMAGE_EXTENSIONS
    registered = Image.registered_extensions()
    assert {registered[ext] for ext in IMAGE_EXTENSIONS} == set(FORMATS)  # each extension read, each format named
    files = next(line for line in (REPO / "README.md").read_text().split("\n- ") if line.startswith("**Files.**"))
    assert all(name.lower() in files.lower() for name in FORMATS), files


def test_the_decoder_opens_no_link_and_no_fifo(tmp_path):
    # scan lists neither; a file swapped for one before its turn comes is refused by the decoder itself
    Image.new("L", (8, 8)).save(tmp_path / "real.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(DecodeError, match="^a symbolic link$"):
        decode_image(tmp_path / "link.png", 1, 8, "crop")
    with pytest.raises(DecodeError, match="^a FIFO$"):
        decode_image(tmp_path / "pipe.png", 1, 8, "crop")


@pytest.mark.parametrize("resize", ["crop", "squish", "pad"])
def test_every_exif_orientation_turns_the_small_square_as_pil_turns_the_image(tmp_path, resize):
    from PIL import ImageOps
    stored = np.random.default_rng(0).integers(0, 256, (10, 30), dtype=np.uint8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
        with Image.open(tmp_path / "o.png") as im:
            upright = np.asarray(ImageOps.exif_transpose(im))
        Image.fromarray(upright).save(tmp_path / "upright.png")
        got = decode_image(tmp_path / "o.png", 1, 9, resize).astype(int)
        want = decode_image(tmp_path / "upright.png", 1, 9, resize).astype(int)
        assert np.abs(got - want).max() <= 1, orientation  # resampled in the other order: rounding apart


# ------------------------------------------------------------------------------------------------
# the cache


def test_the_cache_is_hit_then_updated_for_the_changed_file_only(cli, photos, tmp_path):
    root, _ = photos
    first = check(cli, root)["cache"]
    assert first["status"] == "built" and first["decoded"] == 84 and first["path"].startswith(str(root))
    second = check(cli, root)["cache"]
    assert second["status"] == "hit" and second["decoded"] == 0  # the two bad files are not tried again either
    # one image changes: only it is decoded again, and training sees its new pixels
    changed = sorted((root / "valid").rglob("*.jpg"))[0]
    Image.new("RGB", (30, 30), (255, 0, 0)).save(changed, quality=95)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = check(cli, root)["cache"]
    assert third["status"] == "updated" and third["decoded"] == 1 and third["reused"] == 83
    cfg = DataConfig(dataset="folder", root=str(root), image_size=16, presize=20)
    a = read_arrays(cfg)
    listing = scan(cfg)
    valid = sorted((e.path for e in listing.entries if e.valid), key=lambda p: (split_key(0, p), p))  # their order
    red = a.x_valid.numpy()[valid.index(changed.relative_to(root).as_posix())]
    assert red[0].min() > 240 and red[1].max() < 15
    # a new file: decoded alone; a removed one: still a hit, one image fewer
    Image.fromarray(digits(1)[0][0]).save(root / "valid" / "7" / "new.png")
    assert check(cli, root)["cache"]["decoded"] == 1
    (root / "valid" / "7" / "new.png").unlink()
    after = check(cli, root)
    assert after["cache"]["status"] == "hit" and after["valid"] == 20
    # other settings are another cache beside it
    assert check(cli, root, "--set", "data.resize=squish")["cache"]["decoded"] == 84


def test_a_damaged_cache_is_decoded_again_not_trusted(cli, photos):
    root, _ = photos
    path = Path(check(cli, root)["cache"]["path"])
    [images] = path.glob("images-*.npy")
    images.write_bytes(images.read_bytes()[:200])  # truncated
    report = check(cli, root)
    assert report["cache"]["status"] == "built" and report["cache"]["decoded"] == 84 and "note" in report["cache"]
    [sums] = path.glob("sums-*.npy")
    np.save(sums, np.full((84, 2, 3), np.nan))  # well-formed, but lies
    assert check(cli, root)["cache"]["status"] == "built"
    (path / "manifest.json").write_text('{"format": 1, "images": "../../../etc/passwd"}')
    assert check(cli, root)["cache"]["status"] == "built"
    import pickle
    [images] = path.glob("images-*.npy")
    images.write_bytes(pickle.dumps({"not": "an array"}))  # never unpickled
    assert check(cli, root)["cache"]["status"] == "built"
    assert len(list(path.glob("images-*.npy"))) == 1  # the old generations are gone


def test_the_cache_goes_where_data_cache_or_onecycle_cache_says(cli, photos, tmp_path):
    root, _ = photos
    r = cli("data", "check", *args(root)[:6], "--json", env={"ONECYCLE_CACHE": str(tmp_path / "shared-cache")})
    path = Path(r.json()["cache"]["path"])
    assert path.is_relative_to(tmp_path / "shared-cache") and path.parent.name.startswith("photos-")
    assert not (root / ".onecycle-cache").exists()
    report = check(cli, root, "--set", f"data.cache={tmp_path / 'shared-cache'}")
    assert report["cache"]["status"] == "hit"


def test_a_stopped_decoding_keeps_what_it_decoded(tmp_path):
    root = tmp_path / "p"
    write_photos(root, train=40, valid=10, bad=False)  # 52 files: two chunks of 32, decoded in-process
    cfg = DataConfig(dataset="folder", root=str(root), image_size=16)
    listing = scan(cfg)
    polls = []
    with pytest.raises(Interrupted, match="32 of 52 images decoded and kept") as e:
        cached_images(listing, cfg, 16, stop=lambda: polls.append(1) or 143)  # SIGTERM after the first chunk
    assert e.value.exit_code == 143
    again = cached_images(listing, cfg, 16)
    assert again.info["decoded"] == 20 and again.info["status"] == "updated"


def test_every_core_decodes_the_same_pixels_as_one(tmp_path):
    root = tmp_path / "many"
    write_photos(root, train=60, valid=80, bad=True)  # 144 files: a pool of two processes on two cores
    cfg = DataConfig(dataset="folder", root=str(root), image_size=12, resize="pad")
    listing = scan(cfg)
    cached = cached_images(listing, cfg, 12)
    assert len(cached.skipped) == 2
    for e in listing.entries[::7]:
        if e.path in cached.row:
            assert (cached.images[cached.row[e.path]] == decode_image(root / e.path, 3, 12, "pad")).all(), e.path


def test_a_decode_worker_writes_only_into_the_file_the_cache_created(tmp_path):
    """The images file is opened by name in each worker: a link planted under that name, or another file
    put in its place since the cache created it, is refused, never written through."""
    import errno

    from onecycle_cli.datasets.decode import decode_chunk
    Image.fromarray(digits(1)[0][0]).save(tmp_path / "a.png")
    job = [(0, str(tmp_path / "a.png"))]
    victim, target = tmp_path / "victim", tmp_path / "images.npy"
    victim.write_bytes(b"\0" * 64)
    target.symlink_to(victim)
    with pytest.raises(OSError) as e:
        decode_chunk(str(target), 0, job, 1, 8, "crop")
    assert e.value.errno == errno.ELOOP
    target.unlink()
    target.write_bytes(b"\0" * 64)
    other = victim.stat()
    with pytest.raises(OSError, match="replaced while the images were decoded"):
        decode_chunk(str(target), 0, job, 1, 8, "crop", (other.st_dev, other.st_ino))
    assert victim.read_bytes() == target.read_bytes() == b"\0" * 64
    own = target.stat()
    [(row, error, sums)] = decode_chunk(str(target), 0, job, 1, 8, "crop", (own.st_dev, own.st_ino))
    assert error is None and target.read_bytes() != b"\0" * 64 and victim.read_bytes() == b"\0" * 64

def test_data_check_never_imports_torch(photos):
    root, _ = photos
    code = ("import sys\nfrom onecycle_cli.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = str(REPO)
    for argv in (["data", "check", "--config", "mnist_sample"], ["data", "check", *args(root)[:6]],
                 ["data", "check", *args(root)[:6]]):  # a folder: decoded, then from its fresh cache
        p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout


# ------------------------------------------------------------------------------------------------
# find and train on a folder; memory tiers; exact resume


def test_find_and_train_on_a_folder_record_the_data(cli, photos, tmp_path):
    root, expected = photos
    r = cli("find", *args(root), "--set", "find.num_it=30", "--json")
    assert r.code == 0, r.stderr
    found = r.json()
    assert found["status"] == "completed" and found["suggestion"]["lr"] > 0 and found["data"]["tier"] == "device"
    r = cli("train", *args(root), "--epochs", "4", "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    run = tmp_path / s["run_dir"]
    assert s["status"] == "completed" and s["final"]["accuracy"] > 0.6  # 62 digits, 4 short epochs
    report = json.loads((run / "data_report.json").read_text())
    assert report["counts"] == expected and len(report["skipped"]) == 2 and report["cache"]["status"] == "hit"
    assert report["memory"]["tier"] == "device"
    # 62 images at 20 px and 20 at 16 px, and their labels
    assert s["data"]["bytes"] == 62 * 3 * 20 * 20 + 20 * 3 * 16 * 16 + 8 * 82
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "2 of 84 files" in warnings[0] and "data_report.json" in warnings[0]
    assert json.loads((run / "meta.json").read_text())["data"]["tier"] == "device"


def test_a_tiny_device_budget_keeps_the_images_on_the_host_and_trains_the_same(cli, photos, tmp_path):
    root, _ = photos
    device = cli("train", *args(root), "--epochs", "3", "--json").json()
    host = cli("train", *args(root), "--epochs", "3", "--set", "data.device_budget=1e-9", "--json").json()
    assert device["data"]["tier"] == "device" and host["data"]["tier"] == "host"
    assert host["data"]["bytes"] == device["data"]["bytes"] and host["data"]["budget_bytes"] < host["data"]["bytes"]
    assert json.loads((tmp_path / host["run_dir"] / "meta.json").read_text())["data"]["tier"] == "host"
    assert host["status"] == "completed" and host["final"] == device["final"]  # the same batches, bit for bit
    rows = [read_csv(tmp_path / s["run_dir"] / "steps.csv") for s in (device, host)]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]


# ------------------------------------------------------------------------------------------------
# augmentation for photographs


def test_random_resized_crop_boxes_follow_torchvision_get_params():
    from torchvision.transforms import RandomResizedCrop

    from onecycle_cli.augment import draw_boxes
    size, n = 32, 8000
    image = torch.zeros(3, size, size)
    for scale, ratio in (((0.08, 1.0), (3 / 4, 4 / 3)), ((0.6, 1.0), (1.6, 2.5))):  # the second falls back often
        torch.manual_seed(0)
        ref = np.array([RandomResizedCrop.get_params(image, scale, ratio) for _ in range(n)], dtype=np.float64)
        ours = draw_boxes(4 * n, size, scale, ratio, torch.Generator().manual_seed(1), torch.device("cpu")).numpy()
        w, h = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
        rh, rw = ref[:, 2], ref[:, 3]
        assert (ours[:, :2] >= 0).all() and (ours[:, 2:] <= size).all() and (w >= 1).all() and (h >= 1).all()
        for a, b, bins in ((w * h / size ** 2, rw * rh / size ** 2, np.linspace(0, 1, 21)),
                           (np.log(w / h), np.log(rw / rh), np.linspace(-1.2, 1.2, 25)),
                           (ours[:, 0], ref[:, 1], np.arange(size + 1)), (ours[:, 1], ref[:, 0], np.arange(size + 1))):
            pa, pb = (np.histogram(v, bins)[0] / len(v) for v in (a, b))
            assert 0.5 * np.abs(pa - pb).sum() < 0.04, (scale, ratio)  # total variation: sampling noise is ~0.01
        whole = lambda ww, hh: np.mean((ww == size) & (hh == size))  # noqa: E731
        assert abs(whole(w, h) - whole(rw, rh)) < 0.02


def test_resized_crop_is_a_box_filtered_resize_of_each_window():
    import torch.nn.functional as F

    from onecycle_cli.augment import resized_crop
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = torch.tensor([[0, 0, 16, 16.]]).expand(4, 4)
    assert torch.equal(resized_crop(x, whole, 16, None), x.float())
    assert torch.equal(resized_crop(x, whole, 8, None), F.avg_pool2d(x.float(), 2))  # shrink: averaged
    assert torch.equal(resized_crop(x, whole, 32, None), F.interpolate(x.float(), size=32, mode="bilinear"))
    window = torch.tensor([[3, 5, 11, 13.]]).expand(4, 4)
    mirror = torch.tensor([True, False, True, False])
    out = resized_crop(x, window, 8, mirror)
    for i in range(4):
        w = x[i, :, 5:13, 3:11].float()
        assert torch.equal(out[i], w.flip(-1) if mirror[i] else w)


@pytest.mark.parametrize("side,size", [(24, 24), (20, 32), (24, 12)])
def test_resized_crop_takes_roi_aligns_samples_whichever_op_computes_them(side, size):
    # images no larger than the output go through grid_sample (4x faster on a CPU): the same values as
    # roi_align's, box by box; larger ones (presize) through roi_align itself, which averages
    from torchvision.ops import roi_align

    from onecycle_cli.augment import draw_boxes, resized_crop
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (64, 3, side, side), dtype=torch.uint8, generator=g)
    boxes = draw_boxes(64, side, (0.08, 1.0), (3 / 4, 4 / 3), g, torch.device("cpu"))
    index = torch.arange(64, dtype=torch.float32)[:, None]
    expected = roi_align(x.float(), torch.cat([index, boxes], 1), (size, size), 1.0, -1, True)
    assert torch.allclose(resized_crop(x, boxes, size, None), expected, atol=1e-3)


def test_rrc_batches_keep_labels_and_validation_is_the_centre_crop(tmp_path):
    from onecycle_cli.datasets import load_dataset
    from onecycle_cli.loader import TrainBatches, eval_batches
    root = tmp_path / "ids"
    # image i is one flat grey level, so a crop of it still says which image it came from
    for split, n in (("train", 48), ("valid", 12)):
        for i in range(n):
            save(Image.new("L", (24 + i % 3, 24), 2 * i + (100 if split == "valid" else 0)),
                 root / split / "ab"[i % 2] / f"{i}.png")
    cfg = DataConfig(dataset="folder", root=str(root), image_size=8, presize=12, channels=1, normalize=False)
    ds = load_dataset(cfg)
    assert ds.x_train.shape[1:] == (1, 12, 12) and ds.x_valid.shape[1:] == (1, 8, 8) and ds.shape == (1, 8, 8)
    seen = []
    for xb, yb in TrainBatches(ds, cfg, 16, seed=0).epoch(0):
        level = (xb[:, 0, 0, 0] * 255).round()
        assert xb.shape[1:] == (1, 8, 8) and torch.equal(xb, xb[:, :, :1, :1].expand_as(xb))
        assert torch.equal(yb, (level / 2).long() % 2)
        seen += level.tolist()
    assert sorted(seen) == [2.0 * i for i in range(48)]
    a = read_arrays(cfg)
    stored = a.x_valid.source[a.x_valid.rows]
    for (xb, _), start in zip(eval_batches(ds, cfg, 5), range(0, 12, 5)):
        assert torch.equal((xb * 255).round().to(torch.uint8), torch.from_numpy(stored[start:start + 5, :, 2:10, 2:10]))


def test_file_and_class_names_that_are_not_utf8_or_look_like_markup(cli, tmp_path):
    root = tmp_path / "odd"
    x, _ = digits(12)
    names = [b"caf\xe9", b"[bold]dogs"]  # a Latin-1 class folder; a name rich would read as markup
    for split, n in (("train", 8), ("valid", 2)):
        for k, name in enumerate(names):
            for i in range(n):
                folder = os.path.join(os.fsencode(root), split.encode(), name)
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, b"%d\xff.png" % i), "wb") as f:  # not UTF-8 either
                    Image.fromarray(x[i + k]).save(f, "PNG")
    with open(os.path.join(os.fsencode(root), b"train", names[0], b"broken\xfe.jpg"), "wb") as f:
        f.write(b"not an image")
    report = check(cli, root)
    assert report["class_names"] == ["[bold]dogs", "caf\\xe9"] and report["train"] == 16
    assert report["skipped"][0]["file"] == "train/caf\\xe9/broken\\xfe.jpg"
    text = cli("data", "check", *args(root)[:6])
    assert text.code == 0 and "  caf\\xe9" in text.stdout and "  [bold]dogs" in text.stdout
    assert check(cli, root)["cache"]["status"] == "hit"  # the manifest keeps such names, one to one
    r = cli("train", *args(root), "--epochs", "8", "--json")
    assert r.code == 0, r.stderr
    run = tmp_path / r.json()["run_dir"]
    assert json.loads((run / "data_report.json").read_text())["classes"] == ["[bold]dogs", "caf\\xe9"]


def test_schedule_counts_a_folders_images_from_data_dir(cli, tmp_path):
    # `onecycle schedule` takes --data-dir as find and train do, and counts the folder's files without decoding
    root = tmp_path / "photos"
    expected = write_photos(root, bad=False)
    r = cli("schedule", "--config", "folder", "--data-dir", root, "--batch-size", "16", "--epochs", "3",
            "--out", tmp_path / "schedule.png", "--json")
    assert r.code == 0, r.stderr
    n = sum(expected["train"].values())
    assert (r.json()["steps_per_epoch"], r.json()["steps"]) == (n // 16, 3 * (n // 16)) == (3, 9)
