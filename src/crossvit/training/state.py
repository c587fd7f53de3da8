"""Training checkpoints: plain dictionaries of tensors and numbers, written atomically, that
`torch.load(weights_only=True)` reads back; our model loader reads their weights too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..model.checkpoint import FORMAT_TAG, atomic_write, model_record, read_raw


def save_state(path: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor], **parts: Any) -> None:
    payload = {"model": {k: v.detach().cpu() for k, v in weights.items()}, FORMAT_TAG: model_record(model), **parts}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_state(path: Path) -> dict[str, Any]:
    obj, _ = read_raw(path)
    if not isinstance(obj, dict) or "progress" not in obj or "optimizer" not in obj:
        raise CheckpointError(f"{path} is not a training checkpoint of crossvit (no optimizer or progress saved)")
    return obj
