"""Kills and stop signals: a training run killed at any moment (also in the middle of writing a
checkpoint) resumes and ends with the weights of a run that was never stopped; SIGTERM and SIGINT
finish the current step, save and exit cleanly."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crossvit.training.rundir import read_metrics
from crossvit.training.trainer import train
from imagegen import make_folder_dataset
from tinyrun import PLAIN, assert_same_weights, tiny_args, tiny_config

# A checkpoint after every step, so that kills land in writes as often as between them.
RUN = (*PLAIN, "epochs=6", "train.checkpoint_minutes=1e-6")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The data, and a run of the same recipe that nothing interrupted."""
    folder = make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=16, val_per_class=8)
    run = tmp_path_factory.mktemp("straight")
    train(tiny_config(folder, *RUN), run)
    return folder, run


def _start(folder, run: Path, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "crossvit", "train", *tiny_args(folder, *RUN), "--output", str(run)]
    return subprocess.Popen(command + (["--resume"] if resume else []), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _checkpoint_writes(run: Path) -> list[str]:
    return [n for n in os.listdir(run) if n.startswith((".last.pth.", ".best.pth.")) and n.endswith(".tmp")]


def _wait_for_progress(run: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the process has saved a checkpoint of its own (or ended)."""
    started = time.time()
    before = (run / "last.pth").stat().st_mtime_ns if (run / "last.pth").exists() else None
    while time.time() - started < timeout and proc.poll() is None:
        if (run / "last.pth").exists() and (run / "last.pth").stat().st_mtime_ns != before:
            return
        time.sleep(0.01)


def _finish(proc: subprocess.Popen) -> str:
    output = proc.communicate(timeout=120)[0]
    try:  # loader workers of a killed process go with it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return output


def _assert_same_run(straight: Path, run: Path) -> None:
    assert_same_weights(straight / "last.pth", run / "last.pth")
    assert_same_weights(straight / "best.pth", run / "best.pth")
    expected, got = read_metrics(straight / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [m["epoch"] for m in got] == [m["epoch"] for m in expected] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected, got):
        assert (a["val_top1"], a["val_loss"]) == (b["val_top1"], b["val_loss"])
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]


def test_sigkill_at_random_moments_loses_nothing(straight, tmp_path):
    """Seven SIGKILLs: during checkpoint writes, at random moments, and before the first
    checkpoint; after each, every file in the run directory is whole and --resume goes on."""
    folder, reference = straight
    run = tmp_path / "run"
    rng = random.Random(6)
    kills = torn_writes = 0
    for moment in ("write", "random", "early", "write", "random", "write", "random"):
        proc = _start(folder, run, resume=(run / "config.yaml").exists())
        if moment == "early":  # while it starts, before anything of the run is saved
            time.sleep(rng.uniform(0.5, 3.0))
        elif moment == "random":
            _wait_for_progress(run, proc)
            time.sleep(rng.uniform(0.0, 0.5))
        else:  # the moment a checkpoint is being written
            deadline = time.time() + 120
            while not (run.is_dir() and _checkpoint_writes(run)) and proc.poll() is None and time.time() < deadline:
                pass
        if proc.poll() is not None:
            break  # it finished first
        proc.send_signal(signal.SIGKILL)
        _finish(proc)
        kills += 1
        torn_writes += bool(moment == "write" and _checkpoint_writes(run))
        for name in ("last.pth", "best.pth"):
            if (run / name).exists():  # whatever survived is a whole checkpoint
                torch.load(run / name, weights_only=True)
    assert kills >= 5 and torn_writes >= 1, (kills, torn_writes)
    proc = _start(folder, run, resume=True)
    output = _finish(proc)
    assert proc.returncode == 0, output[-2000:]
    _assert_same_run(reference, run)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_stop_signal_saves_the_step_and_exits_cleanly(straight, tmp_path, sig):
    """SIGTERM to the process (a scheduler's stop), SIGINT to its process group (Ctrl-C in a
    terminal, which its loader workers get too): it saves after the current step, says how to
    continue, exits with 130, and the resumed run ends as if never stopped."""
    folder, reference = straight
    run = tmp_path / "run"
    proc = _start(folder, run, resume=False)
    _wait_for_progress(run, proc)
    assert proc.poll() is None, "the run ended before it could be stopped"
    if sig == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    output = _finish(proc)
    assert proc.returncode == 130, output[-2000:]
    assert "stopped after saving" in output and "--resume" in output and "Traceback" not in output
    progress = torch.load(run / "last.pth", weights_only=True)["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) < (6, 0)
    proc = _start(folder, run, resume=True)
    output = _finish(proc)
    assert proc.returncode == 0, output[-2000:]
    _assert_same_run(reference, run)
