"""One training epoch and one evaluation pass; the loop around them is in trainer.py."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Batch, mix_seed, seed_everything
from ..errors import CrossViTError, first_line
from ..model.fastpaths import cpu_support
from .distributed import World, all_sum

log = logging.getLogger("crossvit")


class LossDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 matmuls natively. On a CPU without AVX512-BF16 or AMX, bf16 is
    emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_support().native_bf16


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot build kernels on `device` here, or None when it can. On a CPU,
    inductor compiles C++ at run time and needs a compiler and Python's headers, which a fresh
    machine may lack; a one-line function tells in seconds, before the run depends on it."""
    try:
        torch.compile(_compile_probe, fullgraph=True)(torch.ones(4, device=device))
    except Exception as e:  # inductor and the toolchain raise many types; the message names what failed
        return first_line(e)[:200]
    return None


def _compile_probe(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class StepContext:
    """Everything a training step touches."""

    model: nn.Module  # possibly DDP-wrapped and compiled
    optimizer: torch.optim.Optimizer
    scheduler: object  # timm scheduler, stepped per optimizer step
    criterion: Callable
    mixup: Callable | None
    scaler: torch.amp.GradScaler | None
    ema: object | None
    world: World
    precision: str
    accum_steps: int
    clip_grad: float | None
    seed: int
    strict: bool = False  # an unreadable image stops the run
    total_steps: int = 0  # optimizer steps of the whole schedule
    # Seconds spent training (steps and data, not evaluation), over epochs and resumptions. With
    # a budget the lr schedule follows this clock or the step count, whichever is further along,
    # and the run ends when either is spent: the same recipe then uses the same minutes on a slow
    # or a fast machine, and fewer epochs than the minutes allow still end annealed.
    train_seconds: float = 0.0
    budget_seconds: float | None = None

    def schedule_position(self, global_step: int) -> float:
        if self.budget_seconds is None:
            return global_step
        return max(global_step, min(1.0, self.train_seconds / self.budget_seconds) * self.total_steps)

    def budget_spent(self) -> bool:
        return self.budget_seconds is not None and self.train_seconds >= self.budget_seconds


def _report_bad(batch: Batch, strict: bool) -> None:
    for sample in batch.bad:
        if strict:
            raise CrossViTError(f"unreadable image {sample.path} ({sample.reason}); set data.strict=false to skip such files")
        log.warning("skipping unreadable image %s (%s)", sample.path, sample.reason)


@dataclass
class EpochStats:
    loss_sum: float = 0.0
    samples: int = 0
    steps: int = 0
    bad_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.samples)


def train_one_epoch(ctx: StepContext, loader, epoch: int, first_step: int, steps_per_epoch: int,
                    requests: Callable[[], tuple[bool, bool]],
                    on_step: Callable[[int, EpochStats, bool], None]) -> tuple[EpochStats, str | None]:
    """Train from optimizer step `first_step` of `epoch` to its end; return the stats and why it
    stopped early: "signal", "budget" (ctx.budget_seconds spent) or None.

    `requests()` says whether this process wants a checkpoint now and whether it wants to stop;
    all processes agree on both, and on the budget, after every optimizer step. `on_step(step,
    stats, save)` runs then. Raises LossDiverged, before applying the step, when any process's
    loss is not finite.
    """
    world = ctx.world
    ctx.model.train()
    stats = EpochStats()
    start = tick = time.perf_counter()
    step = first_step
    micro = 0
    batches = iter(loader)
    while step < steps_per_epoch:
        try:
            batch: Batch = next(batches)
        except StopIteration:
            break
        _report_bad(batch, ctx.strict)
        stats.bad_files += [b.path for b in batch.bad]
        images, targets = batch.images.to(world.device, non_blocking=True), batch.targets.to(world.device, non_blocking=True)
        # Drop path and mixup draw from generators seeded by the step: resumable, reproducible.
        seed_everything(mix_seed(ctx.seed, epoch, step, micro, world.rank, 1))
        if ctx.mixup is not None and len(images) > 1:
            images, targets = images[: len(images) // 2 * 2], targets[: len(targets) // 2 * 2]
            images, targets = ctx.mixup(images, targets)
        last_micro_batch = micro == ctx.accum_steps - 1
        loss_value = _forward_backward(ctx, images, targets, last_micro_batch).item()  # one device sync per micro-batch
        stats.loss_sum += loss_value * len(images)
        stats.samples += len(images)
        micro += 1
        if not last_micro_batch:
            continue
        micro = 0
        now = time.perf_counter()
        ctx.train_seconds += now - tick
        tick = now
        # One agreement per step: is every loss finite, does any process want a save, or to stop,
        # and is the time budget spent (then this step is the last)? Each is a count of processes.
        save, stop = requests()
        finite, saving, stopping, spent = all_sum(torch.tensor(
            [float(math.isfinite(loss_value)), float(save), float(stop), float(ctx.budget_spent())],
            device=world.device), world).tolist()
        if finite < world.size:
            ctx.optimizer.zero_grad(set_to_none=True)
            raise LossDiverged(f"the training loss became {loss_value} at epoch {epoch + 1}, step {step + 1}")
        _apply_step(ctx, global_step=epoch * steps_per_epoch + step + 1)
        step += 1
        stats.steps += 1
        stats.seconds = now - start  # on_step reports img/s
        reason = "signal" if stopping > 0 else "budget" if spent > 0 else None
        on_step(step, stats, reason == "signal" or saving > 0)
        if reason:
            return stats, reason
    stats.seconds = time.perf_counter() - start
    return stats, None


def _forward_backward(ctx: StepContext, images: torch.Tensor, targets: torch.Tensor, last_micro_batch: bool) -> torch.Tensor:
    """One micro-batch's loss, its gradient added to the parameters'. Under DDP the processes
    exchange gradients on the step's last micro-batch only."""
    model, world = ctx.model, ctx.world
    exchange = last_micro_batch or not world.distributed or not hasattr(model, "no_sync")
    with contextlib.nullcontext() if exchange else model.no_sync():
        if len(images):
            with autocast(world.device, ctx.precision):
                loss = ctx.criterion(model(images), targets)
        else:  # every image of the batch was unreadable
            loss = sum(p.sum() * 0 for p in model.parameters() if p.requires_grad)
        scaled = loss / ctx.accum_steps
        (ctx.scaler.scale(scaled) if ctx.scaler else scaled).backward()
    return loss


def _apply_step(ctx: StepContext, global_step: int) -> None:
    """The optimizer step on the accumulated gradients (clipped if asked; through the loss scaler
    in fp16), then the learning rate and the EMA at `global_step`."""
    if ctx.clip_grad:
        if ctx.scaler:
            ctx.scaler.unscale_(ctx.optimizer)
        nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.clip_grad)
    if ctx.scaler:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scheduler.step_update(ctx.schedule_position(global_step))
    if ctx.ema is not None:
        ctx.ema.update(ctx.model, step=global_step)


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    branch_top1: list[float]
    per_class: list[float]
    confusion: list[list[int]]
    samples: int
    bad_files: list[str]

    def summary(self) -> dict:
        return {"val_loss": self.loss, "val_top1": self.top1, "val_top5": self.top5,
                "val_branch_top1": self.branch_top1, "val_samples": self.samples}


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, world: World, precision: str = "fp32",
             strict: bool = False, flip: bool = False) -> EvalResult:
    """Top-1/top-5/loss of the averaged heads, top-1 of each head alone, per-class accuracy and
    the confusion matrix (rows: true class), summed over all processes. `flip`: each head's
    logits are averaged over the image and its mirror image (test-time augmentation)."""
    model.eval()
    branches = model.config.num_branches
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64)
    sums = torch.zeros(3 + branches, dtype=torch.float64)  # loss, top5, samples, per-branch correct
    bad: list[str] = []
    for batch in loader:
        _report_bad(batch, strict)
        bad += [b.path for b in batch.bad]
        if not len(batch.images):
            continue
        images, targets = batch.images.to(world.device), batch.targets.to(world.device)
        n = len(images)
        inputs = torch.cat([images, images.flip(-1)]) if flip else images  # one forward over both
        with autocast(world.device, precision):
            per_branch = [logits.float() for logits in model.branch_logits(model.forward_features(inputs))]
        if flip:
            per_branch = [(logits[:n] + logits[n:]) / 2 for logits in per_branch]
        logits = torch.stack(per_branch).mean(0)
        prediction = logits.argmax(1)
        top5 = logits.topk(min(5, num_classes), dim=1).indices.eq(targets[:, None]).any(1)
        confusion += torch.bincount((targets * num_classes + prediction).cpu(), minlength=num_classes ** 2).double()
        sums[0] += F.cross_entropy(logits, targets, reduction="sum").item()
        sums[1] += top5.sum().item()
        sums[2] += len(targets)
        for b, branch_logits in enumerate(per_branch):
            sums[3 + b] += branch_logits.argmax(1).eq(targets).sum().item()
    confusion = all_sum(confusion.to(world.device), world).cpu().reshape(num_classes, num_classes)
    sums = all_sum(sums.to(world.device), world).cpu()
    n = max(1.0, sums[2].item())
    per_class_total = confusion.sum(1)
    per_class = (confusion.diag() / per_class_total.clamp(min=1) * 100).tolist()
    return EvalResult(
        loss=sums[0].item() / n, top1=confusion.diag().sum().item() / n * 100, top5=sums[1].item() / n * 100,
        branch_top1=[(sums[3 + b] / n * 100).item() for b in range(branches)], per_class=per_class,
        confusion=confusion.long().tolist(), samples=int(sums[2].item()), bad_files=bad,
    )
