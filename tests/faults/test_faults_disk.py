"""A full disk while a run writes: the previous checkpoint survives intact, the error says the
disk is full in one line, and the run continues with --resume once there is space again."""

import errno
import os
import shutil
import subprocess

import pytest

from crossvit.cli import main
from crossvit.training import state, trainer
from crossvit.training.rundir import read_metrics
from crossvit.training.trainer import train
from imagegen import make_folder_dataset
from tinyrun import PLAIN, assert_same_weights, tiny_args, tiny_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=16, val_per_class=8)


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs of our own (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _errors(stderr: str) -> list[str]:
    """The error lines of the command (the rest of stderr is the progress bar)."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if "error" in line]


def _fill(disk, leave: int) -> None:
    """Write a file that leaves `leave` bytes free on `disk`."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_full_tmpfs_during_a_checkpoint_write(folder, small_disk, tmp_path, capsys):
    run = small_disk / "run"
    args = ["train", *tiny_args(folder, *PLAIN), "--output", str(run)]
    train(tiny_config(folder, *PLAIN, "epochs=1"), run)
    before = (run / "last.pth").read_bytes()
    _fill(small_disk, leave=128 * 1024)  # room for the config and metrics, not for a checkpoint
    capsys.readouterr()
    assert main([*args, "--resume", "epochs=2"]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "the disk is full" in err[0] and "free some space" in err[0], err
    assert (run / "last.pth").read_bytes() == before
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]

    (small_disk / "filler").unlink()
    assert main([*args, "--resume", "epochs=2"]) == 0
    straight = tmp_path / "straight"  # the same two steps, on a disk with room
    train(tiny_config(folder, *PLAIN, "epochs=1"), straight)
    assert main(["train", *tiny_args(folder, *PLAIN), "--output", str(straight), "--resume", "epochs=2"]) == 0
    assert_same_weights(tmp_path / "straight" / "last.pth", run / "last.pth")
    assert [m["epoch"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2]


def _half_then_full(write):
    """A writer that puts down half of what it would write, then finds the disk full."""
    def failing(payload, path):
        write(payload, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return failing


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["checkpoint", "metrics", "curves"])
def test_every_writer_of_a_run_reports_a_full_disk_in_one_line(folder, tmp_path, capsys, monkeypatch, writer):
    """The same outcome, on any machine, for each file a run writes (the disk made full by hand)."""
    run = tmp_path / "run"
    args = ["train", *tiny_args(folder, *PLAIN), "--output", str(run)]
    train(tiny_config(folder, *PLAIN, "epochs=1"), run)
    before = {name: (run / name).read_bytes() for name in ("last.pth", "best.pth")}
    if writer == "checkpoint":
        monkeypatch.setattr(state, "torch_save", _half_then_full(state.torch_save))
    elif writer == "metrics":
        monkeypatch.setattr(trainer, "_append_jsonl", _no_space)
    else:
        monkeypatch.setattr(trainer, "plot_curves", _no_space)
    capsys.readouterr()
    assert main([*args, "--resume", "epochs=2"]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "the disk is full" in err[0] and "--resume" in err[0], err
    if writer == "checkpoint":
        assert "keeps its previous contents" in err[0]
    after = {name: (run / name).read_bytes() for name in ("last.pth", "best.pth")}
    if writer == "curves":  # the checkpoints of epoch 2 were saved before the plot failed
        assert after["last.pth"] != before["last.pth"]
    else:
        assert after == before
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
