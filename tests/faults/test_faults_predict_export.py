"""`predict` and `export` on hostile images and paths: each bad file named once with its reason,
one-line errors for bad paths, and nothing half-written (or clobbered) left behind."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit.cli import main
from crossvit.errors import CrossViTError
from crossvit.deploy.export import ExportMismatchError, export_safetensors

from test_faults_data import plant_hostile_files

# What `predict` says about each unreadable file that plant_hostile_files makes.
REASONS = {
    "zero.png": "empty file (0 bytes)",
    "truncated.png": "",  # PIL's own words for it
    "text_named.jpg": "not an image PIL can read",
    "bomb.png": "decompression bomb",
    "self_loop.png": "symbolic link loop",
    "cycle_a.png": "symbolic link loop",
    "cycle_b.png": "symbolic link loop",
    "dangling.png": "broken symbolic link",
    "named_pipe.png": "not a regular file",
}


def tiny_model() -> crossvit.CrossViT:
    torch.manual_seed(0)
    return crossvit.create_model("crossvit_micro_32", num_classes=3, dim=(32, 64), num_heads=(2, 2),
                                 depth=(1, 1), num_encoders=1).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return crossvit.save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def listing(folder: Path) -> list[str]:
    """Every entry below `folder`, hidden temporaries included, without following symlinks."""
    return sorted(str(Path(d, n).relative_to(folder)) for d, dirs, files in os.walk(folder) for n in dirs + files)


def one_error_line(err: str, command: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"crossvit {command}: error: "), err
    return err


def _hostile_images(folder: Path) -> tuple[list[str], list[str]]:
    """Four plain images plus every hostile file; returns (readable paths, unreadable paths), sorted."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"good_{i}.png")
    bad, odd = plant_hostile_files(folder, (folder / "good_0.png").read_bytes())
    good = sorted([*(str(folder / f"good_{i}.png") for i in range(4)), *map(str, odd)])
    return good, sorted(map(str, bad))


# -- predict ---------------------------------------------------------------------------------

def test_predict_over_a_hostile_folder_names_each_bad_file_once(checkpoint, tmp_path, capsys):
    """Human output: one stdout line per readable image (odd formats included, folder links not
    walked), one stderr line per unreadable file with its reason, exit 1, no hang on the pipe,
    and no file written anywhere."""
    good, bad = _hostile_images(tmp_path / "photos")
    before = listing(tmp_path)
    assert main(["predict", str(checkpoint), str(tmp_path / "photos"), "--top-k", "1"]) == 1
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == good
    errors = err.splitlines()
    assert len(errors) == len(bad)
    for path in bad:
        (line,) = [e for e in errors if e.startswith(f"crossvit predict: {path}: ")]
        assert REASONS[Path(path).name] in line
    assert listing(tmp_path) == before


def test_predict_json_report_splits_good_and_bad(checkpoint, tmp_path, capsys):
    """--json: one valid document whose predictions are exactly the readable images and whose
    failures are exactly the unreadable ones, each with a non-empty reason."""
    good, bad = _hostile_images(tmp_path / "photos")
    assert main(["predict", str(checkpoint), str(tmp_path / "photos"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in report["predictions"]] == good
    assert sorted(f["path"] for f in report["failed"]) == bad and all(f["error"] for f in report["failed"])


@pytest.mark.parametrize("make, reason", [
    pytest.param(lambda p: None, "no such file", id="missing"),
    pytest.param(lambda p: os.symlink(p.name, p), "symbolic link loop", id="symlink_loop"),
    pytest.param(lambda p: os.mkfifo(p), "not a regular file", id="named_pipe"),
])
def test_predict_on_one_bad_path_is_one_line(make, reason, checkpoint, tmp_path, capsys):
    """A missing file, a self-looping link or a named pipe given by name: one stderr line naming it
    and why, nothing on stdout, exit 1 (the code `predict` gives for unreadable files)."""
    path = tmp_path / "photo.png"
    make(path)
    assert main(["predict", str(checkpoint), str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"crossvit predict: {path}: ") and reason in err


def test_predict_does_not_follow_a_folder_link_to_find_images(checkpoint, tmp_path, capsys):
    """A folder whose only entry is a symlink to its parent (which holds images) has no images:
    the usage error (exit 2), not the parent's images found through the link."""
    Image.new("RGB", (32, 32)).save(tmp_path / "parent_image.png")
    (tmp_path / "album").mkdir()
    os.symlink("..", tmp_path / "album" / "up")
    assert main(["predict", str(checkpoint), str(tmp_path / "album")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no images found in" in one_error_line(err, "predict") and "album" in err


# -- export ----------------------------------------------------------------------------------

def test_export_creates_a_missing_output_folder(checkpoint, tmp_path, capsys):
    """--output in folders that do not exist yet: created (as --help says), holding just the file."""
    out = tmp_path / "new" / "deeper" / "tiny.safetensors"
    assert main(["export", str(checkpoint), "--format", "safetensors", "--output", str(out)]) == 0
    assert listing(tmp_path) == ["new", "new/deeper", "new/deeper/tiny.safetensors"]
    assert crossvit.create_model(checkpoint=out).num_classes == 3


def test_a_failed_export_removes_the_folders_it_made(tmp_path):
    """An export that fails its check in folders made for it leaves no file, temporary or folder."""
    with pytest.raises(ExportMismatchError):
        export_safetensors(tiny_model(), tmp_path / "new" / "deeper" / "m.safetensors", atol=-1.0)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("output, message", [
    ("a_folder", "output {tmp}/a_folder is a folder, not a file"),
    ("a_file/m.onnx", "cannot write {tmp}/a_file/m.onnx: {tmp}/a_file is a file, not a folder"),
    ("a_file/sub/m.onnx", "cannot write {tmp}/a_file/sub/m.onnx: {tmp}/a_file is a file, not a folder"),
])
def test_export_to_an_unwritable_output_is_one_line(output, message, checkpoint, tmp_path, capsys):
    """An output that is a folder, or lies below a regular file (where root, too, cannot write):
    exit 2, one line naming the path, and the folder exactly as it was."""
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("a file, not a folder")
    before = listing(tmp_path)
    assert main(["export", str(checkpoint), "--format", "onnx", "--output", str(tmp_path / output)]) == 2
    assert message.format(tmp=tmp_path) in one_error_line(capsys.readouterr().err, "export")
    assert listing(tmp_path) == before and (tmp_path / "a_file").read_text() == "a file, not a folder"


def test_a_write_error_midway_is_one_line_and_leaves_nothing(checkpoint, tmp_path, monkeypatch, capsys):
    """The file system refusing the write halfway (read-only, say): exit 2, one line naming the output
    and the system's reason, the previous file untouched and no temporary left."""
    def half_then_fail(model, path, meta=None):
        Path(path).write_bytes(b"half a file")
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr("crossvit.deploy.export.save_checkpoint", half_then_fail)
    out = tmp_path / "out" / "m.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"the previous export")
    assert main(["export", str(checkpoint), "--format", "safetensors", "--output", str(out)]) == 2
    err = one_error_line(capsys.readouterr().err, "export")
    assert f"cannot write {out}: Read-only file system" in err
    assert listing(out.parent) == ["m.safetensors"] and out.read_bytes() == b"the previous export"


def _hostile_checkpoint(kind: str, folder: Path, good: bytes) -> Path:
    path = folder / ("model.pth" if kind == "truncated_pth" else "model.safetensors")
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "truncated_safetensors":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "truncated_pth":
        torch.save(tiny_model().state_dict(), path)
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "a_folder":
        path.mkdir()
    elif kind == "symlink_loop":
        os.symlink(path.name, path)
    return path  # "missing": nothing there


@pytest.mark.parametrize("kind", ["zero_bytes", "truncated_safetensors", "truncated_pth", "a_folder", "symlink_loop",
                                  "missing"])
@pytest.mark.parametrize("command", ["export", "predict"])
def test_a_hostile_checkpoint_is_one_line_and_writes_nothing(command, kind, checkpoint, tmp_path, capsys):
    """Each command refuses the checkpoint with exit 2 and one line naming it; export writes nothing
    beside it (its default output) nor in --output, and an earlier export there is kept."""
    source = _hostile_checkpoint(kind, tmp_path, checkpoint.read_bytes())
    (tmp_path / "model.onnx").write_bytes(b"an earlier export")
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    before = listing(tmp_path)
    if command == "export":
        runs = [["export", str(source), "--format", "onnx"],
                ["export", str(source), "--format", "onnx", "--output", str(tmp_path / "exports" / "m.onnx")]]
    else:
        runs = [["predict", str(source), str(tmp_path / "photo.png")]]
    for argv in runs:
        assert main(argv) == 2, argv
        assert str(source) in one_error_line(capsys.readouterr().err, command)
    assert listing(tmp_path) == before and (tmp_path / "model.onnx").read_bytes() == b"an earlier export"


def test_check_output_path_is_usable_before_any_work(tmp_path):
    """The library's own guard: a folder and a path below a file are refused; a new nested path is not."""
    from crossvit.deploy.export import check_output_path

    (tmp_path / "f").write_text("x")
    for bad in (tmp_path, tmp_path / "f" / "m.onnx"):
        with pytest.raises(CrossViTError):
            check_output_path(bad)
    check_output_path(tmp_path / "new" / "m.onnx")
    assert listing(tmp_path) == ["f"]  # the check itself creates nothing
