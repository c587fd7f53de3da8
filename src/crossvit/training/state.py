"""Training checkpoints: plain dictionaries of tensors and numbers, written atomically, that
`torch.load(weights_only=True)` reads back; our model loader reads their weights too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files import atomic_write
from ..model.checkpoint import FORMAT_TAG, model_record, read_raw, torch_save


def save_state(path: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor], **parts: Any) -> None:
    payload = {"model": {k: v.detach().cpu() for k, v in weights.items()}, FORMAT_TAG: model_record(model), **parts}
    atomic_write(path, lambda tmp: torch_save(payload, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """A training checkpoint, with every part a resumed run reads present and of the right kind."""
    obj, _ = read_raw(path)
    if not isinstance(obj, dict) or "progress" not in obj or "optimizer" not in obj:
        raise CheckpointError(f"{path} is not a training checkpoint of crossvit (no optimizer or progress saved)")
    record = obj.get(FORMAT_TAG)
    parts = {"the model's weights": isinstance(obj.get("model"), dict),
             "the model's architecture": isinstance(record, dict) and isinstance(record.get("config"), dict),
             "the run's config": isinstance(obj.get("run_config"), dict),
             "the optimizer's state": isinstance(obj["optimizer"], dict),
             "the progress": isinstance(obj["progress"], dict)
             and all(k in obj["progress"] for k in ("epoch", "step_in_epoch", "best_top1", "best_epoch"))}
    missing = [name for name, ok in parts.items() if not ok]
    if missing:
        raise CheckpointError(f"{path} is not a whole training checkpoint of crossvit: {', '.join(missing)} missing or "
                              "damaged; restore the file, or start the run again without --resume")
    return obj
