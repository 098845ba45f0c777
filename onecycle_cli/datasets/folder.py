"""The user's own image folder: `onecycle data check --config folder --data-dir ~/pictures`.

Three layouts, fastai's and torchvision's, each with the class names sorted:
  (a) <root>/train/<class>/* beside <root>/valid/<class>/* (or val/);
  (b) <root>/<class>/*, split by data.valid_pct;
  (c) data.csv with columns fname,label[,is_valid], file names relative to the root.
`scan` lists the files (any depth below a class folder; hidden files and folders, such as the
cache, are not looked at; folders reached through symbolic links are not followed, so a link
loop costs nothing). `read_folder` decodes them through the cache (`cache.py`) and returns the
split as `Arrays`, with the report that `data_report.json` and `data check` show.

The split of (b), and of (c) without is_valid, holds out round(valid_pct x n) files of each class:
those with the smallest hash of (data.split_seed, relative path). It depends on nothing else, so
the same files land in valid whatever order the file system lists them in, on every machine.
"""

from __future__ import annotations

import csv
import hashlib
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .arrays import Arrays, Images, stats_from_sums

# what torchvision's ImageFolder accepts, and GIF (its first frame)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
LAYOUTS = ("<root>/train/<class>/*.jpg beside <root>/valid/<class>/*.jpg (or val/); <root>/<class>/*.jpg with "
           "data.valid_pct; or data.csv with columns fname,label[,is_valid]")
CSV_COLUMNS = ("fname", "label", "is_valid")


@dataclass(frozen=True)
class Entry:
    path: str      # relative to the root, '/'-separated
    label: int     # index into the sorted class names
    valid: bool
    size: int      # bytes and modification time: what tells the cache that a file changed
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    root: Path
    layout: str
    classes: list[str]
    entries: list[Entry]  # sorted by path


def split_key(seed: int, path: str) -> int:
    """A file's place in the seeded order: a hash of the seed and its relative path, nothing else."""
    data = f"{seed}\0{path}".encode("utf-8", "surrogateescape")  # a file name's bytes, UTF-8 or not
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def printable(text: str) -> str:
    """A path (or a message naming one) as text that JSON, terminals and logs take: bytes that are not
    UTF-8, which the file system may hand over, shown as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_key(path: str) -> str:
    """A relative path as JSON text, one to one: itself, or, for a name that is not UTF-8, a NUL (which
    no file name holds) and its bytes in hex."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return "\0" + path.encode("utf-8", "surrogateescape").hex()


def hold_out(paths: list[str], valid_pct: float, seed: int) -> set[str]:
    """round(valid_pct x n) of `paths` for validation, the same set whatever order they come in."""
    k = int(valid_pct * len(paths) + 0.5)
    return set(sorted(paths, key=lambda p: (split_key(seed, p), p))[:k])


# ------------------------------------------------------------------------------------------------
# listing files


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _walk(folder: Path, root: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every image file below `folder`, sorted; hidden entries skipped."""
    found = []
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as e:
            raise DataError(f"{current}: cannot be listed ({e.strerror}); check its permissions") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif _is_image(entry.name):
                try:
                    st = entry.stat()  # follows a link to a file: its content is what gets decoded
                except OSError:
                    st = None  # a dangling link: listed, and skipped as unreadable when decoded
                if st is not None and not stat.S_ISREG(st.st_mode):
                    continue  # a FIFO or a device named x.jpg: reading it could block forever
                rel = Path(entry.path).relative_to(root).as_posix()
                found.append((rel, st.st_size if st else -1, st.st_mtime_ns if st else -1))
    return sorted(found)


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _found(folder: Path) -> str:
    """What a folder holds, in a few words, for an error message."""
    classes = _subfolders(folder)
    if classes:
        return f"{len(classes)} class folder(s) ({', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''})"
    loose = sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
    return f"{len(loose)} image(s) such as {loose[0]} and no class folders" if loose else "no class folders and no images"


def _class_files(folder: Path, root: Path, what: str) -> dict[str, list[tuple[str, int, int]]]:
    """The image files of each class folder under `folder`; a class folder without images is refused."""
    classes = _subfolders(folder)
    if not classes:
        raise DataError(f"{what} {folder}: found {_found(folder)}; expected one folder of images per class: {LAYOUTS}")
    files = {c: _walk(folder / c, root) for c in classes}
    empty = [c for c, f in files.items() if not f]
    if empty:
        raise DataError(f"{what} {folder}: class folder {empty[0]!r} holds no images (.jpg, .png, .bmp, .webp, .gif, ...)"
                        f"{f' and {len(empty) - 1} more are empty' if len(empty) > 1 else ''}: add images or remove it")
    return files


def scan(cfg: DataConfig) -> Listing:
    """The files of a folder dataset, their labels and split, or one DataError naming what was found."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"data.root {root} {what}: expected the folder of your images ({LAYOUTS}); "
                        f"set it with --data-dir, data.root or ONECYCLE_DATA")
    if cfg.csv is not None:
        return _scan_csv(root, cfg)
    subfolders = _subfolders(root)
    valid_dirs = [d for d in ("valid", "val") if d in subfolders]
    if "train" in subfolders and valid_dirs:
        if len(valid_dirs) == 2:
            raise DataError(f"data.root {root}: found both valid/ and val/ beside train/: keep one")
        if cfg.valid_pct is not None:
            raise DataError(f"data.valid_pct = {cfg.valid_pct} but {root} already holds train/ and {valid_dirs[0]}/: "
                            f"remove data.valid_pct, or point data.root at a single tree of class folders")
        train = _class_files(root / "train", root, "training folder")
        valid = _class_files(root / valid_dirs[0], root, "validation folder")
        classes = sorted(set(train) | set(valid))
        label = {c: i for i, c in enumerate(classes)}
        entries = [Entry(p, label[c], split == "valid", size, mtime)
                   for split, files in (("train", train), ("valid", valid))
                   for c, found in files.items() for p, size, mtime in found]
        return Listing(root, f"train/ and {valid_dirs[0]}/ folders", classes, sorted(entries, key=lambda e: e.path))
    tree, where = root, root
    if "train" in subfolders and cfg.valid_pct is not None:  # train/ alone: split it
        tree = root / "train"
    if cfg.valid_pct is None:
        seen = "a train/ folder and no valid/ or val/ beside it" if "train" in subfolders else (
            f"{_found(root)}{' and no train/ + valid/' if subfolders else ''}")
        raise DataError(f"data.root {where}: found {seen}; expected {LAYOUTS}. To split one tree of class folders, "
                        f"set data.valid_pct (e.g. 0.2)")
    files = _class_files(tree, root, "data.root")
    classes = sorted(files)
    entries = []
    for i, c in enumerate(classes):
        held = hold_out([p for p, _, _ in files[c]], cfg.valid_pct, cfg.split_seed)
        entries += [Entry(p, i, p in held, size, mtime) for p, size, mtime in files[c]]
    layout = f"class folders{' under train/' if tree != root else ''}, {cfg.valid_pct:g} held out by data.valid_pct"
    return Listing(root, layout, classes, sorted(entries, key=lambda e: e.path))


def _scan_csv(root: Path, cfg: DataConfig) -> Listing:
    path = Path(cfg.csv).expanduser()
    path = path if path.is_absolute() else root / path
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not part of 'fname'
    except FileNotFoundError:
        raise DataError(f"data.csv {path} does not exist: expected a CSV with columns fname,label[,is_valid], "
                        f"file names relative to {root}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"data.csv {path} cannot be read as UTF-8 text ({type(e).__name__}): expected a CSV "
                        f"with columns fname,label[,is_valid]") from None
    rows = list(csv.reader(text.splitlines()))
    header = [h.strip() for h in rows[0]] if rows else []
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown or "fname" not in header or "label" not in header or len(set(header)) != len(header):
        raise DataError(f"data.csv {path}: header {','.join(header) or '(empty file)'}"
                        f"{f' has unknown column {unknown[0]!r}' if unknown else ''}: expected the columns "
                        f"fname,label[,is_valid] (fastai's from_csv), file names relative to {root}")
    col = {h: i for i, h in enumerate(header)}
    has_valid = "is_valid" in col
    if has_valid and cfg.valid_pct is not None:
        raise DataError(f"data.valid_pct = {cfg.valid_pct} but data.csv {path} has an is_valid column: give one")
    if not has_valid and cfg.valid_pct is None:
        raise DataError(f"data.csv {path} has no is_valid column: set data.valid_pct (e.g. 0.2) to hold out a share "
                        f"of each class, or add the column")
    seen: dict[str, int] = {}
    items = []
    top = root.resolve()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"data.csv {path} line {line}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        name, label = row[col["fname"]].strip(), row[col["label"]].strip()
        if not name or not label:
            raise DataError(f"{where}: empty {'fname' if not name else 'label'}")
        rel = PurePosixPath(name.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{where}: {name!r} leaves the root; expected a path relative to {root}")
        if name in seen:
            raise DataError(f"{where}: {name!r} is listed twice (first on line {seen[name]}); one label per file")
        seen[name] = line
        valid = False
        if has_valid:
            flag = row[col["is_valid"]].strip().lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise DataError(f"{where}: is_valid = {row[col['is_valid']]!r}, expected true or false (or 1 or 0)")
            valid = flag in ("true", "1", "yes")
        items.append((rel.as_posix(), label, valid))
    if not items:
        raise DataError(f"data.csv {path} lists no files: expected one row per image after the header")
    classes = sorted({label for _, label, _ in items})
    if not has_valid:
        held: set[str] = set()
        for c in classes:
            held |= hold_out([p for p, label, _ in items if label == c], cfg.valid_pct, cfg.split_seed)
        items = [(p, label, p in held) for p, label, _ in items]
    label_of = {c: i for i, c in enumerate(classes)}
    entries, missing = [], []
    for p, label, valid in items:
        file = root / p
        try:
            st = file.stat()
            outside = not file.resolve().is_relative_to(top)
        except OSError:
            st, outside = None, False
        if st is None or not file.is_file() or outside:
            missing.append(p)
            continue
        entries.append(Entry(p, label_of[label], valid, st.st_size, st.st_mtime_ns))
    if missing:
        raise DataError(f"data.csv {path} names {len(missing)} file(s) that are not in {root}, such as {missing[0]!r}: "
                        f"file names are relative to data.root")
    layout = "data.csv" + ("" if has_valid else f", {cfg.valid_pct:g} held out by data.valid_pct")
    return Listing(root, layout, classes, sorted(entries, key=lambda e: e.path))


# ------------------------------------------------------------------------------------------------
# the dataset: the listing decoded through the cache, split and counted


def read_folder(cfg: DataConfig, progress=None, stop: Callable[[], bool] | None = None) -> Arrays:
    from .cache import cached_images
    listing = scan(cfg)
    stored = cfg.presize or cfg.image_size
    cache = cached_images(listing, cfg, stored, progress, stop)
    skipped = [{"file": printable(e.path), "split": "valid" if e.valid else "train",
                "reason": printable(cache.skipped[e.path])} for e in listing.entries if e.path in cache.skipped]
    if skipped and cfg.strict:
        first = skipped[0]
        raise DataError(f"data.strict is true and {len(skipped)} of {len(listing.entries)} files could not be decoded, "
                        f"such as {first['file']} ({first['reason']}); fix or remove them, or set data.strict false "
                        f"to skip them (`onecycle data check --json` lists them all)")
    ok = [e for e in listing.entries if e.path in cache.row]
    splits = {}
    for name, valid, limit in (("train", False, cfg.train_size), ("valid", True, cfg.valid_size)):
        chosen = sorted((e for e in ok if e.valid == valid), key=lambda e: (split_key(cfg.split_seed, e.path), e.path))
        splits[name] = chosen[:limit] if limit else chosen  # seeded order: the first N are a fair sample
    if not splits["train"] or not splits["valid"]:
        raise DataError(f"data.root {listing.root} ({listing.layout}): {len(splits['train'])} training and "
                        f"{len(splits['valid'])} validation images could be decoded: expected at least one of each"
                        f"{f' ({len(skipped)} skipped: see onecycle data check --json)' if skipped else ''}")
    rows = {k: np.array([cache.row[e.path] for e in v], dtype=np.int64) for k, v in splits.items()}
    labels = {k: np.array([e.label for e in v], dtype=np.int64) for k, v in splits.items()}
    size = cfg.image_size if stored != cfg.image_size else None
    x_train = Images(cache.images, rows["train"], None if cfg.crop_kind == "rrc" else size)
    x_valid = Images(cache.images, rows["valid"], size)  # validation: the centre crop, never augmented
    sums = cache.sums[rows["train"]].sum(0)  # exact per-image channel sums of the stored images
    mean, std = stats_from_sums(sums[0], sums[1], len(rows["train"]) * stored * stored)
    names = [printable(c) for c in listing.classes]  # for the report and the terminal
    counts = {k: Counter(e.label for e in v) for k, v in splits.items()}
    report = {
        "dataset": "folder", "root": printable(str(listing.root.resolve())), "layout": listing.layout,
        "classes": names, "images": {"train": len(splits["train"]), "valid": len(splits["valid"])},
        "counts": {k: {c: v.get(i, 0) for i, c in enumerate(names)} for k, v in counts.items()},
        "files": len(listing.entries), "skipped": skipped,
        "image_size": cfg.image_size, "stored_size": stored, "channels": cfg.channels, "resize": cfg.resize,
        "split_seed": cfg.split_seed, "cache": cache.info}
    return Arrays("folder", x_train, labels["train"], x_valid, labels["valid"], list(listing.classes), mean, std, report)
