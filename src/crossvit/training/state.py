"""Training checkpoints: plain dictionaries of tensors and numbers, written atomically, that
`torch.load(weights_only=True)` reads back; our model loader reads their weights too.

best.pth holds the weights to use, the run's progress and its config; last.pth adds all that
resuming needs: the optimizer's and loss scaler's states and, in a run with an EMA, the trained
weights beside the averaged ones (which are the file's weights).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files import atomic_write
from ..model.checkpoint import FORMAT_TAG, model_record, read_raw, torch_save


@dataclass
class Progress:
    """Where a run stands: saved in every checkpoint, restored when it resumes."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # optimizer steps done in the epoch after those (mid-epoch checkpoints)
    best_top1: float | None = None
    best_epoch: int | None = None
    train_seconds: float = 0.0  # of training (steps and data, not evaluation), over all resumptions

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        # Checkpoints from before time limits have no train_seconds.
        return cls(saved["epoch"], saved["step_in_epoch"], saved["best_top1"], saved["best_epoch"],
                   saved.get("train_seconds", 0.0))


@dataclass
class TrainingState:
    """A training checkpoint (last.pth) as a resumed run reads it."""

    path: Path
    progress: Progress
    run_config: dict[str, Any]  # the config the run was saved with
    architecture: dict[str, Any]  # the model's config and metadata: the run rebuilds its model from them
    weights: dict[str, torch.Tensor]  # the trained weights (not the EMA's)
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    ema: dict[str, torch.Tensor] | None


def save_state(path: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor], progress: Progress,
               run_config: dict[str, Any], optimizer: torch.optim.Optimizer | None = None,
               scaler: torch.amp.GradScaler | None = None, ema: torch.nn.Module | None = None) -> None:
    """`weights` (the ones to use: an EMA's average, if any) with `model`'s architecture, the progress
    and the config; with `optimizer`, also what resuming needs (last.pth)."""
    payload = {"model": {k: v.detach().cpu() for k, v in weights.items()}, FORMAT_TAG: model_record(model),
               "progress": dataclasses.asdict(progress), "run_config": run_config}
    if optimizer is not None:
        payload.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict() if scaler else None)
        if ema is not None:  # the file's weights are the average's; keep the trained ones too
            payload.update(model_train=model.state_dict(), ema=ema.state_dict())
    atomic_write(path, lambda tmp: torch_save(payload, tmp))


def load_state(path: Path) -> TrainingState:
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
    return TrainingState(path=Path(path), progress=Progress.from_dict(obj["progress"]), run_config=obj["run_config"],
                         architecture=record, weights=obj.get("model_train") or obj["model"],
                         optimizer=obj["optimizer"], scaler=obj.get("scaler"), ema=obj.get("ema"))
