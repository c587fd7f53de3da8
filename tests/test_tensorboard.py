"""TensorBoard event files of a run hold what metrics.jsonl holds."""

import json
import sys

import pytest

from crossvit import CrossViTError
from crossvit.training.trainer import train

from imagegen import make_folder_dataset
from tinyrun import PLAIN, tiny_config

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=8, val_per_class=4)


def _events(directory):
    events = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_event_files_match_the_metrics(folder, tmp_path):
    config = tiny_config(folder, *PLAIN, "epochs=3", "train.tensorboard=true", "train.log_every=1",
                         "optim.layer_decay=0.8")
    train(config, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = _events(tmp_path / "run" / "tensorboard")
    tags = events.Tags()["scalars"]

    def series(tag):
        return {e.step: e.value for e in events.Scalars(tag)}

    for key in ("train_loss", "val_loss", "val_top1", "val_top5", "img_per_s", "lr"):
        assert series(f"epoch/{key}") == pytest.approx({r["epoch"]: r[key] for r in records}, rel=1e-6), key
    for head in range(2):
        assert series(f"epoch/val_branch_top1/{head}") == pytest.approx(
            {r["epoch"]: r["val_branch_top1"][head] for r in records})
    steps = series("train/loss")
    assert len(steps) == 3 * 3  # 24 images in batches of 8, every step logged
    lr_tags = [t for t in tags if t.startswith("lr/group_")]
    assert len(lr_tags) > 2  # one per layer-decay group
    assert "config" in "".join(events.Tags()["tensors"])  # the resolved config as text
    hparams = tmp_path / "run" / "tensorboard" / "hparams"
    assert hparams.is_dir() and any(hparams.iterdir())


def test_off_writes_nothing_and_true_without_the_package_is_one_line(folder, tmp_path, monkeypatch):
    train(tiny_config(folder, *PLAIN, "epochs=1", "train.tensorboard=false"), tmp_path / "off")
    assert not (tmp_path / "off" / "tensorboard").exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    train(tiny_config(folder, *PLAIN, "epochs=1"), tmp_path / "auto")  # auto: trains without
    assert not (tmp_path / "auto" / "tensorboard").exists()
    with pytest.raises(CrossViTError, match=r"train.tensorboard=true needs the tensorboard package"):
        train(tiny_config(folder, *PLAIN, "epochs=1", "train.tensorboard=true"), tmp_path / "on")
