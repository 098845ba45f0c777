"""The user's own image folder: `onecycle data check --config folder --data-dir ~/pictures`.

Three layouts, fastai's and torchvision's, each with the class names sorted:
  (a) <root>/train/<class>/* beside <root>/valid/<class>/* (or val/);
  (b) <root>/<class>/*, split by data.valid_pct;
  (c) data.csv with columns fname,label[,is_valid], file names relative to the root.
`scan` lists the files (any depth below a class folder; hidden files and folders, such as the
cache, are not looked at). `read_folder` decodes them through the cache (`cache.py`) and returns
the split as `Arrays`, with the report that `data_report.json` and `data check` show.

One file, one label, read from inside the root. The root itself may be a link (the user named it);
below it nothing is read through a symbolic link, in every layout: a linked folder is not a class
and is not walked (a class linked to `.` would list every image again under a second label, and a
link loop costs nothing), an image that is a link, or a CSV path through one, is skipped unopened
with the reason "a symbolic link" (listed like the files that cannot be decoded). data.csv is read
as a regular file of at most 256 MB, never a FIFO or a device, through no link when it is below the
root; its paths are compared normalised (`./images/a.png`, `images//a.png` and `images/./a.png` are
one file) and by inode (a hard link), so one file listed twice is exit 2 naming both lines; a field
over the csv module's limit or a NUL in a field is exit 2 naming its line. A single class is
refused; a class that only validation holds is a warning in the report (`warnings`), on stderr.

The split of (b), and of (c) without is_valid, holds out round(valid_pct x n) files of each class:
those with the smallest hash of (data.split_seed, relative path). It depends on nothing else, so
the same files land in valid whatever order the file system lists them in, on every machine.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from collections import Counter
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..safe_files import NotRegularFile, TooLarge, read_regular
from ..safe_text import printable
from .arrays import Arrays, Images, stats_from_sums
from .cache import cached_images
from .listing import Entry, Listing, hold_out, split_key

# what torchvision's ImageFolder accepts, and GIF (its first frame)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
LAYOUTS = ("<root>/train/<class>/*.jpg beside <root>/valid/<class>/*.jpg (or val/); <root>/<class>/*.jpg with "
           "data.valid_pct; or data.csv with columns fname,label[,is_valid]")
CSV_COLUMNS = ("fname", "label", "is_valid")
LABELS_LIMIT = 256 << 20  # data.csv: a million rows of long paths is about 100 MB


# ------------------------------------------------------------------------------------------------
# listing files


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


LINK = "a symbolic link"  # why a listed file is skipped unopened: what it points at may be outside the root


def walk_images(folder: Path, root: Path) -> list[tuple[str, int, int, str]]:
    """(relative path, size, mtime_ns, why skipped or '') of every image file below `folder`, sorted; hidden
    entries skipped, links to folders not followed, links named like images listed as skipped."""
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
                rel = Path(entry.path).relative_to(root).as_posix()
                try:
                    st = entry.stat(follow_symlinks=False)  # the entry itself: a link is never followed
                except OSError:
                    continue  # gone since it was listed
                if stat.S_ISLNK(st.st_mode):
                    found.append((rel, -1, -1, LINK))
                elif stat.S_ISREG(st.st_mode):  # not a FIFO or a device named x.jpg: reading it could block
                    found.append((rel, st.st_size, st.st_mtime_ns, ""))
    return sorted(found)


def _subfolders(folder: Path) -> list[str]:
    """The folders in `folder`, not hidden, not links: a linked folder is not a class (it could be the root
    again, listing every image under a second label, or a folder outside it)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))


def _linked(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_symlink() and not e.name.startswith(".")
                  and e.is_dir())


def _found(folder: Path) -> str:
    """What a folder holds, in a few words, for an error message."""
    classes, linked = _subfolders(folder), _linked(folder)
    links = (f" and {len(linked)} symbolic link(s) to folders ({', '.join(linked[:3])}), not followed"
             if linked else "")
    if classes:
        return (f"{len(classes)} class folder(s) ({', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''})"
                f"{links}")
    loose = sorted(e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False) and _is_image(e.name))
    if loose:
        return f"{len(loose)} image(s) such as {loose[0]} and no class folders{links}"
    return f"no class folders and no images{links}"


def _class_files(folder: Path, root: Path, what: str) -> dict[str, list[tuple[str, int, int, str]]]:
    """The image files of each class folder under `folder`; a class folder without images is refused."""
    classes = _subfolders(folder)
    if not classes:
        raise DataError(f"{what} {folder}: found {_found(folder)}; expected one folder of images per class: {LAYOUTS}")
    files = {c: walk_images(folder / c, root) for c in classes}
    empty = [c for c, f in files.items() if not f]
    if empty:
        raise DataError(f"{what} {folder}: class folder {empty[0]!r} holds no images (.jpg, .png, .bmp, .webp, "
                        f".gif, ...){f' and {len(empty) - 1} more are empty' if len(empty) > 1 else ''}: add images "
                        f"or remove it")
    return files


def _two_classes(classes: list[str], where: str, *folders: Path) -> None:
    if len(classes) < 2:
        linked = [f"{printable(name)}: a symbolic link, not followed" for folder in folders for name in _linked(folder)]
        also = "".join(", " + x for x in linked)
        raise DataError(f"{where}: found a single class ({printable(classes[0])!r}{also}); "
                        f"a classifier needs two or more: add a folder (or a label) per class")


def _listing(root: Path, layout: str, classes: list[str], entries: list[Entry], why: dict[str, str]) -> Listing:
    """The files to decode apart from those skipped unopened (`why`: path to the reason), each sorted by path."""
    entries = sorted(entries, key=lambda e: e.path)
    return Listing(root, layout, classes, [e for e in entries if e.path not in why],
                   [(e, why[e.path]) for e in entries if e.path in why])


def scan(cfg: DataConfig, whole: bool = False) -> Listing:
    """The files of a folder dataset, their labels and split, or one DataError naming what was found.
    `whole` (a set to score, `onecycle evaluate --data-dir`): every file is for validation but a train/ +
    valid/ tree's, whose valid/ alone is; data.valid_pct is not read."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"data.root {root} {what}: expected the folder of your images ({LAYOUTS}); "
                        f"set it with --data-dir, data.root or ONECYCLE_DATA")
    if cfg.csv is not None:
        listing = _scan_csv(root, cfg, whole)
        if whole:
            listing = replace(listing, entries=[replace(e, valid=True) for e in listing.entries],
                              skipped=[(replace(e, valid=True), w) for e, w in listing.skipped],
                              layout="data.csv, every file scored")
        return listing
    subfolders = _subfolders(root)
    valid_dirs = [d for d in ("valid", "val") if d in subfolders]
    if "train" in subfolders and valid_dirs:
        if len(valid_dirs) == 2:
            raise DataError(f"data.root {root}: found both valid/ and val/ beside train/: keep one")
        if cfg.valid_pct is not None and not whole:
            raise DataError(f"data.valid_pct = {cfg.valid_pct} but {root} already holds train/ and {valid_dirs[0]}/: "
                            f"remove data.valid_pct, or point data.root at a single tree of class folders")
        train = _class_files(root / "train", root, "training folder")
        valid = _class_files(root / valid_dirs[0], root, "validation folder")
        classes = sorted(set(train) | set(valid))
        _two_classes(classes, f"data.root {root} (train/ and {valid_dirs[0]}/)", root / "train", root / valid_dirs[0])
        label = {c: i for i, c in enumerate(classes)}
        entries = [Entry(p, label[c], split == "valid", size, mtime)
                   for split, files in (("train", train), ("valid", valid))
                   for c, found in files.items() for p, size, mtime, _ in found]
        why = {p: w for files in (train, valid) for found in files.values() for p, _, _, w in found if w}
        return _listing(root, f"train/ and {valid_dirs[0]}/ folders", classes, entries, why)
    tree, where = root, root
    if whole:
        cfg = cfg.model_copy(update={"valid_pct": 1.0})  # every file held out: the whole tree is scored
    if "train" in subfolders and cfg.valid_pct is not None:  # train/ alone: split it
        tree = root / "train"
    if cfg.valid_pct is None:
        seen = "a train/ folder and no valid/ or val/ beside it" if "train" in subfolders else (
            f"{_found(root)}{' and no train/ + valid/' if subfolders else ''}")
        raise DataError(f"data.root {where}: found {seen}; expected {LAYOUTS}. To split one tree of class folders, "
                        f"set data.valid_pct (e.g. 0.2)")
    files = _class_files(tree, root, "data.root")
    classes = sorted(files)
    _two_classes(classes, f"data.root {tree}", tree)
    entries = []
    for i, c in enumerate(classes):
        # a skipped link holds its place in the split, as a file that cannot be decoded does
        held = hold_out([p for p, _, _, _ in files[c]], cfg.valid_pct, cfg.split_seed)
        entries += [Entry(p, i, p in held, size, mtime) for p, size, mtime, _ in files[c]]
    why = {p: w for found in files.values() for p, _, _, w in found if w}
    layout = f"class folders{' under train/' if tree != root else ''}, " + (
        "every file scored" if whole else f"{cfg.valid_pct:g} held out by data.valid_pct")
    return _listing(root, layout, classes, entries, why)


def _read_csv(root: Path, name: str) -> tuple[Path, str]:
    """data.csv's path and text. Below the root it is one of the root's files, read as its images are:
    through no symbolic link at any level; a path the user named elsewhere (absolute, or out of the root
    by ..) is followed, as --config is. Never a FIFO or a device, never more than LABELS_LIMIT bytes."""
    given = Path(name).expanduser()
    path = given if given.is_absolute() else root / given
    inside = not given.is_absolute() and ".." not in given.parts
    what = "expected a CSV with columns fname,label[,is_valid]"
    try:
        parts = PurePosixPath(os.path.normpath(given.as_posix())).parts if inside else ()
        link = _link_on(root, parts, {}) if inside else None
        if link is not None:
            raise NotRegularFile(errno.ELOOP, LINK if link == "/".join(parts) else f"on a path through {LINK} "
                                 f"({link})", str(path))
        data = read_regular(path, LABELS_LIMIT, follow=not inside)
        return path, data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of 'fname'
    except FileNotFoundError:
        raise DataError(f"data.csv {path} does not exist: {what}, file names relative to {root}") from None
    except NotRegularFile as e:
        raise DataError(f"data.csv {path} is {e.strerror}: {what} (a regular file"
                        f"{', reached through no link below the data root' if inside else ''})") from None
    except TooLarge:
        raise DataError(f"data.csv {path} is larger than {LABELS_LIMIT:,} bytes: {what}, one row per image") from None
    except (OSError, ValueError) as e:  # ValueError: not UTF-8
        raise DataError(f"data.csv {path} cannot be read as UTF-8 text ({type(e).__name__}): {what}") from None


def _link_on(root: Path, parts: tuple[str, ...], known: dict[str, int | None]) -> str | None:
    """The first of root/parts[0], root/parts[0]/parts[1], ... that is a symbolic link, or None; `known`
    remembers each folder's lstat mode (None: absent) for the next path."""
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if prefix not in known:
            try:
                known[prefix] = os.lstat(root / prefix).st_mode
            except (OSError, ValueError):
                known[prefix] = None
        mode = known[prefix]
        if mode is not None and stat.S_ISLNK(mode):
            return prefix
        if mode is None or not stat.S_ISDIR(mode):
            return None  # not there, or a file: the caller says what it is
    return None


def _csv_rows(path: Path, text: str):
    """(first line, row) of each row of the CSV, or one DataError naming the line the csv module stopped at."""
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "field limit" in str(e):
                raise DataError(f"data.csv {path} line {line}: a field of more than {csv.field_size_limit():,} "
                                f"characters (the csv module's limit): not a file name or a label") from None
            raise DataError(f"data.csv {path} line {line}: {e}") from None
        yield line, row
        line = reader.line_num + 1


def _scan_csv(root: Path, cfg: DataConfig, whole: bool = False) -> Listing:
    path, text = _read_csv(root, cfg.csv)
    rows = _csv_rows(path, text)
    header = [h.strip() for h in next(rows, (1, []))[1]]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown or "fname" not in header or "label" not in header or len(set(header)) != len(header):
        raise DataError(f"data.csv {path}: header {printable(','.join(header)) or '(empty file)'}"
                        f"{f' has unknown column {printable(unknown[0])!r}' if unknown else ''}: expected the columns "
                        f"fname,label[,is_valid] (fastai's from_csv), file names relative to {root}")
    col = {h: i for i, h in enumerate(header)}
    has_valid = "is_valid" in col
    if whole:  # scan marks every entry for validation afterwards: only the column's values are checked
        cfg = cfg.model_copy(update={"valid_pct": None if has_valid else 1.0})
    if has_valid and cfg.valid_pct is not None:
        raise DataError(f"data.valid_pct = {cfg.valid_pct} but data.csv {path} has an is_valid column: give one")
    if not has_valid and cfg.valid_pct is None:
        raise DataError(f"data.csv {path} has no is_valid column: set data.valid_pct (e.g. 0.2) to hold out a share "
                        f"of each class, or add the column")
    seen: dict[str, tuple[int, str]] = {}                 # normalised path: (line, as written)
    same: dict[tuple[int, int], tuple[int, str]] = {}     # (device, inode): (line, as written)
    known: dict[str, int | None] = {}
    items, why, missing = [], {}, []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        where = f"data.csv {path} line {line}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        nul = next((h for h, cell in zip(header, row) if "\0" in cell), None)
        if nul:
            raise DataError(f"{where}: a NUL character in {nul}, which no file name or label holds")
        name, label = row[col["fname"]].strip(), row[col["label"]].strip()
        if not name or not label:
            raise DataError(f"{where}: empty {'fname' if not name else 'label'}")
        rel = PurePosixPath(name.replace("\\", "/"))  # ./a.png, a//b.png and a/./b.png: one spelling
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{where}: {printable(name)!r} leaves the root; expected a path relative to {root}")
        key = rel.as_posix()
        if key in seen:
            first, written = seen[key]
            raise DataError(f"{where}: {printable(name)!r} is the file of line {first} ({printable(written)!r}) "
                            f"listed again; one label per file")
        seen[key] = (line, name)
        valid = False
        if has_valid:
            flag = row[col["is_valid"]].strip().lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise DataError(f"{where}: is_valid = {printable(row[col['is_valid']])!r}, expected true or false "
                                f"(or 1 or 0)")
            valid = flag in ("true", "1", "yes")
        link = _link_on(root, rel.parts, known)
        st = None
        if link is None:
            try:
                st = os.lstat(root / key)
            except (OSError, ValueError):
                pass
            if st is None or not stat.S_ISREG(st.st_mode):
                missing.append(key)
                continue
            if (st.st_dev, st.st_ino) in same:  # another name of a file listed already (a hard link, A.png on macOS)
                first, written = same[st.st_dev, st.st_ino]
                raise DataError(f"{where}: {printable(name)!r} is the file of line {first} ({printable(written)!r}) "
                                f"under another name; one label per file")
            same[st.st_dev, st.st_ino] = (line, name)
        else:
            why[key] = LINK if link == key else f"{LINK} on its path ({printable(link)})"
        items.append((key, label, valid, st))
    if missing:
        raise DataError(f"data.csv {path} names {len(missing)} file(s) that are not in {root}, such as "
                        f"{printable(missing[0])!r}: file names are relative to data.root")
    if not items:
        raise DataError(f"data.csv {path} lists no files: expected one row per image after the header")
    classes = sorted({label for _, label, _, _ in items})
    _two_classes(classes, f"data.csv {path}")
    if not has_valid:
        held: set[str] = set()
        for c in classes:
            held |= hold_out([p for p, label, _, _ in items if label == c], cfg.valid_pct, cfg.split_seed)
        items = [(p, label, p in held, st) for p, label, _, st in items]
    label_of = {c: i for i, c in enumerate(classes)}
    entries = [Entry(p, label_of[label], valid, st.st_size if st else -1, st.st_mtime_ns if st else -1)
               for p, label, valid, st in items]
    layout = "data.csv" + ("" if has_valid else f", {cfg.valid_pct:g} held out by data.valid_pct")
    return _listing(root, layout, classes, entries, why)


# ------------------------------------------------------------------------------------------------
# the dataset: the listing decoded through the cache, split and counted


def read_folder(cfg: DataConfig, progress=None, stop: Callable[[], bool] | None = None, whole: bool = False
                ) -> Arrays:
    """The folder's split as `Arrays`; `whole` (see `scan`): the files to score as validation, no training ones."""
    listing = scan(cfg, whole)
    stored = cfg.presize or cfg.image_size
    cache = cached_images(listing, cfg, stored, progress, stop)
    why = {**{e.path: reason for e, reason in listing.skipped}, **cache.skipped}
    files = sorted([*listing.entries, *(e for e, _ in listing.skipped)], key=lambda e: e.path)
    skipped = [{"file": printable(e.path), "split": "valid" if e.valid else "train",
                "reason": printable(why[e.path])} for e in files if e.path in why]
    if skipped and cfg.strict:
        first = skipped[0]
        raise DataError(f"data.strict is true and {len(skipped)} of {len(files)} files could not be decoded, "
                        f"such as {first['file']} ({first['reason']}); fix or remove them, or set data.strict false "
                        f"to skip them (`onecycle data check --json` lists them all)")
    ok = [e for e in listing.entries if e.path in cache.row]
    splits = {}
    for name, valid, limit in (("train", False, cfg.train_size), ("valid", True, cfg.valid_size)):
        chosen = sorted((e for e in ok if e.valid == valid), key=lambda e: (split_key(cfg.split_seed, e.path), e.path))
        splits[name] = chosen[:limit] if limit else chosen  # seeded order: the first N are a fair sample
    if (not splits["train"] and not whole) or not splits["valid"]:
        raise DataError(f"data.root {listing.root} ({listing.layout}): {len(splits['train'])} training and "
                        f"{len(splits['valid'])} validation images could be decoded: expected at least one of each"
                        f"{f' ({len(skipped)} skipped: see onecycle data check --json)' if skipped else ''}")
    rows = {k: np.array([cache.row[e.path] for e in v], dtype=np.int64) for k, v in splits.items()}
    labels = {k: np.array([e.label for e in v], dtype=np.int64) for k, v in splits.items()}
    size = cfg.image_size if stored != cfg.image_size else None
    x_train = Images(cache.images, rows["train"], None if cfg.crop_kind == "rrc" else size)
    x_valid = Images(cache.images, rows["valid"], size)  # validation: the centre crop, never augmented
    counted = rows["train"] if len(rows["train"]) else rows["valid"]
    sums = cache.sums[counted].sum(0)  # exact per-image channel sums of the stored images
    mean, std = stats_from_sums(sums[0], sums[1], len(counted) * stored * stored)
    names = [printable(c) for c in listing.classes]  # for the report and the terminal
    counts = {k: Counter(e.label for e in v) for k, v in splits.items()}
    # a class only validation holds: not an error (a tiny class split by valid_pct can end up there), but the
    # model never learns it, so its validation images are all counted wrong
    trained = {e.label for e in ok if not e.valid}
    unseen = sorted({e.label for e in ok if e.valid} - trained)
    warnings = [f"{len(unseen)} class(es) have validation images but no training images, so the model never "
                f"learns them: {', '.join(names[i] for i in unseen[:5])}{', ...' if len(unseen) > 5 else ''}"] \
        if unseen else []
    report = {
        "dataset": "folder", "root": printable(str(listing.root.resolve())), "layout": listing.layout,
        "classes": names, "images": {"train": len(splits["train"]), "valid": len(splits["valid"])},
        "counts": {k: {c: v.get(i, 0) for i, c in enumerate(names)} for k, v in counts.items()},
        "files": len(files), "skipped": skipped, "warnings": warnings,
        "image_size": cfg.image_size, "stored_size": stored, "channels": cfg.channels, "resize": cfg.resize,
        "split_seed": cfg.split_seed, "cache": cache.info}
    return Arrays("folder", x_train, labels["train"], x_valid, labels["valid"], list(listing.classes), mean, std,
                  report)
