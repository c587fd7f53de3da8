"""TensorBoard event files of a run, in OUTPUT/tensorboard/ (`tensorboard --logdir runs/`).

train.tensorboard: "auto" writes them when the tensorboard package is installed
(`pip install 'crossvit[tensorboard]'`), "true" insists, "false" never. Per optimizer step: the
loss, every parameter group's learning rate and img/s; per epoch: every number of the epoch's
metrics.jsonl record (each head's top-1 alone too); the resolved config as text, and at the end
its scalar settings as hparams beside the final top-1. Under torchrun only the first process writes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from ..errors import CrossViTError
from ..runconfig import RunConfig

log = logging.getLogger("crossvit")


class RunLog:
    def __init__(self, writer) -> None:
        self.writer = writer

    @classmethod
    def open(cls, output: Path, config: RunConfig, is_main: bool) -> RunLog | None:
        wanted = config.train.tensorboard
        if wanted == "false" or not is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            if wanted == "true":
                raise CrossViTError("train.tensorboard=true needs the tensorboard package: pip install "
                                    "'crossvit[tensorboard]' (or set train.tensorboard=auto)") from None
            return None
        writer = SummaryWriter(log_dir=str(output / "tensorboard"))
        text = yaml.safe_dump(config.to_dict(), sort_keys=False)
        writer.add_text("config", "```\n" + text + "\n```")
        return cls(writer)

    def step(self, global_step: int, loss: float, lrs: list[float], images_per_second: float) -> None:
        self.writer.add_scalar("train/loss", loss, global_step)
        self.writer.add_scalar("train/img_per_s", images_per_second, global_step)
        for i, lr in enumerate(lrs):
            self.writer.add_scalar("lr" if len(lrs) == 1 else f"lr/group_{i}", lr, global_step)

    def epoch(self, record: dict) -> None:
        epoch = record["epoch"]
        for key, value in record.items():
            if key == "epoch":
                continue
            if isinstance(value, list):  # each head alone
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"epoch/{key}/{i}", v, epoch)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()

    def close(self, config: RunConfig, final_top1: float | None, best_top1: float | None) -> None:
        if final_top1 is not None:
            hparams = {f"{section}.{k}": v for section, values in config.to_dict().items() if isinstance(values, dict)
                       for k, v in values.items() if isinstance(v, (int, float, str, bool))}
            hparams["epochs"] = config.epochs
            self.writer.add_hparams(hparams, {"hparams/final_top1": final_top1, "hparams/best_top1": best_top1 or 0.0},
                                    run_name="hparams")
        self.writer.close()
