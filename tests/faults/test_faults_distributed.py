"""torchrun with two processes (gloo on CPU), one of them killed: the other stops within a bounded
time with a one-line message saying how to continue, and the run resumes from its last checkpoint."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from crossvit.training.trainer import train
from imagegen import make_folder_dataset
from tinyrun import PLAIN, assert_same_weights, tiny_args, tiny_config

# As in the test that two processes match one: SGD with clipping keeps rounding differences small.
RUN = (*PLAIN, "epochs=4", "train.checkpoint_minutes=1e-6", "optim.clip_grad=1.0", "optim.name=sgd", "optim.lr=0.05")


def _torchrun(folder, run: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "crossvit", "train", *tiny_args(folder, *RUN), "--output", str(run), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _worker_of_rank(launcher: int, rank: int) -> int:
    """The pid of the process that torchrun started for `rank`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(entry)
    raise AssertionError(f"torchrun {launcher} has no process of rank {rank}")


def test_a_killed_process_stops_the_other_and_the_run_resumes(tmp_path):
    folder = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=16, val_per_class=8)
    run = tmp_path / "run"
    launcher = _torchrun(folder, run)
    deadline = time.time() + 180
    while not (run / "last.pth").exists() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert launcher.poll() is None, launcher.communicate()[0][-3000:]
    os.kill(_worker_of_rank(launcher.pid, 1), signal.SIGKILL)
    killed = time.time()
    output = launcher.communicate(timeout=120)[0]
    waited = time.time() - killed
    try:
        os.killpg(launcher.pid, signal.SIGKILL)  # loader workers, if any outlived their process
    except ProcessLookupError:
        pass
    assert launcher.returncode != 0 and waited < 60, (launcher.returncode, waited)
    ours = [line for line in output.splitlines() if "crossvit train: error:" in line]
    assert len(ours) == 1 and "process 0 of 2 stopped" in ours[0] and "--resume" in ours[0], output[-3000:]
    assert "[rank0]:Traceback" not in output.replace(" ", ""), output[-3000:]

    resumed = _torchrun(folder, run, "--resume")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    train(tiny_config(folder, *RUN), tmp_path / "one")  # one process, never stopped
    assert_same_weights(tmp_path / "one" / "last.pth", run / "last.pth", atol=1e-5)
