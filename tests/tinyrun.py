"""A tiny training run on generated images, shared by the training tests and the fault suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import crossvit
from crossvit.runconfig import RunConfig, load_config

TINY = ["model.name=crossvit_micro_32", "model.drop_path_rate=0",
        "model.options={dim: [32, 64], num_heads: [2, 2], depth: [1, 1], num_encoders: 2, mlp_ratio: 2}"]
PLAIN = ["aug.crop=pad", "aug.randaugment=null", "aug.random_erasing=0", "aug.mixup=0", "aug.cutmix=0",
         "aug.smoothing=0", "aug.hflip=0"]


def tiny_args(folder: Path, *extra: str) -> list[str]:
    """`crossvit train` arguments (recipe first) of a two-epoch run of a 0.1M-parameter model."""
    return ["small_folder", f"data.path={folder}", *TINY, "data.batch_size=8", "epochs=2", "optim.warmup_epochs=0",
            "optim.lr=3e-3", "optim.lr_base_batch=0", "train.threads=1", *extra]


def tiny_config(folder: Path, *extra: str) -> RunConfig:
    args = tiny_args(folder, *extra)
    return load_config(args[0], args[1:])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return crossvit.read_checkpoint(path).state


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread each, and the other core for the processes a test starts. (A test
    module that imports this fixture gets it for every test.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
