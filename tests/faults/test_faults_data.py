"""Hostile image folders: every bad file gets a clear outcome, a count in the summary, and
no crash (or hang) mid-epoch; every bad layout gets a one-line error that says what was expected."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossvit import CrossViTError, read_checkpoint
from crossvit.cli import main
from crossvit.data.folders import BadSample, ImageFolder, find_classes
from crossvit.data.images import load_image

from imagegen import make_folder_dataset
from tinyrun import PLAIN, tiny_args

CLASSES = ["class_0", "class_1", "class_2"]


# -- hostile files ------------------------------------------------------------------------

def write_png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A real, tiny PNG whose header claims width x height pixels (CRC fixed up), so PIL's
    default decompression-bomb guard sees it exactly as it would see a real bomb."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"  # the first chunk: length, type, 13 data bytes, CRC
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def plant_hostile_files(folder: Path, good_png: bytes) -> tuple[list[Path], list[Path]]:
    """Put every kind of hostile file into `folder`; return (unreadable files, odd but readable files).
    Directory symlinks are planted too: they are neither, and must simply not be followed."""
    unreadable = {
        "zero.png": lambda p: p.write_bytes(b""),
        "truncated.png": lambda p: p.write_bytes(good_png[: len(good_png) // 3]),
        "text_named.jpg": lambda p: p.write_text("this is a text file, not a JPEG\n"),
        "bomb.png": lambda p: write_png_claiming_size(p, 40000, 40000),
        "self_loop.png": lambda p: os.symlink(p.name, p),  # a link to itself
        "cycle_a.png": lambda p: os.symlink("cycle_b.png", p),  # a -> b -> a
        "cycle_b.png": lambda p: os.symlink("cycle_a.png", p),
        "dangling.png": lambda p: os.symlink("missing.png", p),
        "named_pipe.png": lambda p: os.mkfifo(p),  # opening it for reading would wait for a writer forever
    }
    readable = {
        "cmyk.jpg": lambda p: Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(p),
        "grey16.png": lambda p: Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(p),
        "png_named.jpg": lambda p: p.write_bytes(good_png),
    }
    for name, plant in {**unreadable, **readable}.items():
        plant(folder / name)
    os.symlink("..", folder / "link_to_parent")  # walking into it would list the split again, forever
    os.symlink(".", folder / "link_to_itself")
    return [folder / n for n in unreadable], [folder / n for n in readable]


def _hostile_folder(root: Path) -> tuple[Path, list[Path], list[Path]]:
    make_folder_dataset(root, classes=2, train_per_class=4, val_per_class=2)
    good_png = (root / "train" / "class_1" / "0000.png").read_bytes()
    bad, odd = plant_hostile_files(root / "train" / "class_0", good_png)
    for name, image in {"palette.png": Image.new("P", (32, 32), 3), "alpha.png": Image.new("RGBA", (32, 32), (1, 2, 3, 100))}.items():
        image.save(root / "train" / "class_0" / name)
        odd.append(root / "train" / "class_0" / name)
    return root, bad, odd


def test_hostile_files_are_skipped_and_named(tmp_path):
    """Each unreadable file becomes a BadSample naming it (the pipe without blocking), each odd
    format is converted to RGB, and folder symlinks are not walked."""
    root, bad, odd = _hostile_folder(tmp_path)
    ds = ImageFolder(root / "train", ["class_0", "class_1"], "RGB")
    results = {ds.samples[i][0]: ds[i][0] for i in range(len(ds))}
    assert len(results) == 8 + len(bad) + len(odd)  # the eight generated images, once each: no loop walked
    for path in map(str, bad):
        assert isinstance(results[path], BadSample) and results[path].path == path, path
    for path in map(str, odd):
        assert isinstance(results[path], Image.Image) and results[path].mode == "RGB", path
    assert not any("link_to" in p for p in results)


def test_decompression_bomb_is_refused(tmp_path):
    """PIL's default limits hold: past twice the limit is an error, past the limit a warning that
    load_image turns into an error; a small image with the same bytes loads."""
    with pytest.raises(Image.DecompressionBombError):
        load_image(str(write_png_claiming_size(tmp_path / "bomb.png", 40000, 40000)))
    over = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)  # between the limit and twice the limit
    with pytest.raises(Image.DecompressionBombWarning):
        load_image(str(write_png_claiming_size(tmp_path / "warning_band.png", over, over)))
    assert load_image(str(write_png_claiming_size(tmp_path / "small.png", 8, 8))).size == (8, 8)


def test_folder_layout_errors(tmp_path, caplog):
    """A missing split, a split without class folders, a val class train lacks and a split with
    no images are errors that say what was expected; an empty class is a warning naming it."""
    with pytest.raises(CrossViTError, match="does not exist"):
        ImageFolder(tmp_path / "nope", ["a"])
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(b"")
    with pytest.raises(CrossViTError, match="no class sub-folders"):
        ImageFolder(tmp_path / "flat", ["a"])
    root = make_folder_dataset(tmp_path / "ds", classes=3)
    (root / "val" / "class_9").mkdir()
    with pytest.raises(CrossViTError, match=r"classes the training split lacks: \['class_9'\]"):
        ImageFolder(root / "val", CLASSES)
    (root / "val" / "class_9").rmdir()
    for f in (root / "val" / "class_1").iterdir():
        f.unlink()
    with caplog.at_level(logging.WARNING, logger="crossvit"):
        ds = ImageFolder(root / "val", CLASSES)
    assert "no images for class(es) class_1" in caplog.text and len(ds) == 16
    empty = tmp_path / "empty" / "a"
    empty.mkdir(parents=True)
    with pytest.raises(CrossViTError, match="holds no images"):
        ImageFolder(tmp_path / "empty", ["a"])


def test_a_folder_symlink_back_up_the_tree_is_not_a_class(tmp_path, caplog):
    """train/up -> .. (the dataset root) and train/here -> . would list the whole dataset again
    under a made-up class; they are left out with a warning, while a symlink to a real class folder
    elsewhere stays a class."""
    root = make_folder_dataset(tmp_path / "ds", classes=2, train_per_class=2, val_per_class=1)
    os.symlink("..", root / "train" / "up")
    os.symlink(".", root / "train" / "here")
    make_folder_dataset(tmp_path / "elsewhere", classes=1, train_per_class=2, val_per_class=1)
    os.symlink(tmp_path / "elsewhere" / "train" / "class_0", root / "train" / "linked")
    with caplog.at_level(logging.WARNING, logger="crossvit"):
        assert find_classes(root / "train") == ["class_0", "class_1", "linked"]
    assert "ignoring up, a symbolic link" in caplog.text and "ignoring here, a symbolic link" in caplog.text
    assert len(ImageFolder(root / "train", ["class_0", "class_1", "linked"])) == 6


# -- end to end: `crossvit train` on a hostile folder ------------------------------------------

def _epoch_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _hostile_dataset(root: Path) -> tuple[list[Path], list[Path], int]:
    """Generated 3-class folders with every hostile file in train/class_0 and val/class_1.
    Returns the unreadable files, the odd readable ones, and the number of readable val images."""
    make_folder_dataset(root, classes=3, train_per_class=16, val_per_class=8)
    good_png = (root / "train" / "class_1" / "0000.png").read_bytes()
    bad, odd = [], []
    for split, name in (("train", "class_0"), ("val", "class_1")):
        b, o = plant_hostile_files(root / split / name, good_png)
        bad += b
        odd += o
        os.symlink("..", root / split / "link_to_dataset_root")  # beside the class folders: not a class
    # The training loader drops a last partial batch of 8, and a bad file in it would never be
    # opened; fill train/ up to a multiple of 8 so that every planted file is read once.
    train_files = 3 * 16 + len(bad) // 2 + len(odd) // 2
    for i in range(-train_files % 8):
        (root / "train" / "class_2" / f"extra_{i}.png").write_bytes(good_png)
    return bad, odd, 3 * 8 + len(odd) // 2


def test_training_on_a_hostile_folder_finishes_and_counts_every_bad_file(tmp_path, capsys, caplog):
    """One epoch through the CLI: exit 0, the epoch recorded, bad_files equal to the unreadable files
    planted (and printed), each named in the log exactly once, the odd formats trained on, and the
    val count equal to the readable val images; no folder symlink adds a class."""
    bad, odd, readable_val = _hostile_dataset(tmp_path / "data")
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="crossvit"):
        code = main(["train", *tiny_args(tmp_path / "data", "epochs=1", *PLAIN), "--output", str(run)])
    assert code == 0
    (record,) = _epoch_records(run)
    assert record["epoch"] == 1
    assert record["bad_files"] == len(bad)
    assert record["val_samples"] == readable_val
    assert f"{len(bad)} unreadable image(s) skipped" in capsys.readouterr().out
    warnings = [r.getMessage() for r in caplog.records if r.name == "crossvit" and r.levelno >= logging.WARNING]
    for path in bad:
        assert sum(str(path) in w for w in warnings) == 1, path
    for path in odd:
        assert not any(str(path) in w for w in warnings), path
    assert list(read_checkpoint(run / "last.pth").meta["class_names"]) == CLASSES


def test_strict_mode_stops_on_the_first_bad_file_with_one_line(tmp_path, capsys):
    """data.strict=true: exit 2 and a single stderr line naming one of the planted files and the way out."""
    bad, _, _ = _hostile_dataset(tmp_path / "data")
    code = main(["train", *tiny_args(tmp_path / "data", "epochs=1", "data.strict=true", *PLAIN),
                 "--output", str(tmp_path / "run")])
    assert code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error" in line]  # the rest is the progress bar
    assert len(errors) == 1 and "Traceback" not in stderr
    message = errors[0]
    assert message.startswith("crossvit train: error: unreadable image")  # on a line of its own
    assert any(str(path) in message for path in bad) and "data.strict=false" in message


# -- end to end: layouts ----------------------------------------------------------------------

def test_an_empty_class_folder_is_a_warning_and_the_run_trains(tmp_path, capsys, caplog):
    """train/class_3 with no images (and no val/class_3): warned by name, and one epoch still runs."""
    root = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=8, val_per_class=4)
    (root / "train" / "class_3").mkdir()
    with caplog.at_level(logging.WARNING, logger="crossvit"):
        code = main(["train", *tiny_args(root, "epochs=1", *PLAIN), "--output", str(tmp_path / "run")])
    assert code == 0 and _epoch_records(tmp_path / "run")[0]["val_samples"] == 12
    assert any("class_3" in r.getMessage() and "no images" in r.getMessage() for r in caplog.records)


def test_a_val_class_that_train_lacks_is_a_one_line_error(tmp_path, capsys):
    """val/class_7 without train/class_7: exit 2, one line naming the class and saying the splits must match."""
    root = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=8, val_per_class=4)
    (root / "val" / "class_7").mkdir()
    (root / "val" / "class_7" / "a.png").write_bytes((root / "val" / "class_0" / "0000.png").read_bytes())
    assert main(["train", *tiny_args(root, "epochs=1", *PLAIN), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "class_7" in err and "train/ and val/ must use the same class folder names" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("layout, expected", [
    ("missing", "does not exist; expected {root}/train/<class>/ and {root}/val/<class>/"),
    ("no_train_split", "image folder {root}/train does not exist"),
    ("no_images", "image folder {root}/train holds no images"),
    ("only_stray_files", "image folder {root}/train has no class sub-folders"),
])
def test_a_dataset_without_images_is_a_one_line_error(layout, expected, tmp_path, capsys):
    """Through the CLI: exit 2 and one line saying what the folder should hold."""
    root = tmp_path / "data"
    if layout == "no_train_split":
        (root / "val" / "a").mkdir(parents=True)
    elif layout == "no_images":
        for split in ("train", "val"):
            (root / split / "a").mkdir(parents=True)
            (root / split / "a" / "notes.txt").write_text("not an image")
    elif layout == "only_stray_files":
        (root / "train").mkdir(parents=True)
        (root / "train" / "0000.png").write_bytes(b"")
    assert main(["train", *tiny_args(root, "epochs=1", *PLAIN), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("crossvit train: error:")
    assert expected.format(root=root) in err
