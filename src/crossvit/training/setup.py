"""What a training run is built from: the config resolved for this machine, the model, the data,
the optimizer and its schedule, the loss; a resumed run's saved states loaded into them."""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import data as datasets
from ..errors import CheckpointError, CrossViTError, first_line
from ..model import CrossViT, CrossViTConfig, ModelMeta
from ..model.factory import create_model
from ..runconfig import RunConfig
from . import distributed
from .distributed import World
from .engine import StepContext, compile_unavailable, native_bf16
from .state import Progress, TrainingState

log = logging.getLogger("crossvit")


def resolve(config: RunConfig, device: torch.device, announce: bool = True) -> RunConfig:
    """A copy of `config` with what it leaves open decided, as the run saves it: the learning
    rate scaled to the global batch (optim.effective_lr), the evaluation batch, and for this
    machine train.precision=auto (bf16 where `device` runs it natively, else fp32) and
    train.compile (off where torch.compile cannot work). `announce`: log the machine's choices."""
    resolved = copy.deepcopy(config)
    data, optim, train = resolved.data, resolved.optim, resolved.train
    optim.effective_lr = optim.lr * data.batch_size / optim.lr_base_batch if optim.lr_base_batch else optim.lr
    data.eval_batch_size = data.eval_batch_size or 2 * data.batch_size
    if train.precision == "auto":
        train.precision = "bf16" if native_bf16(device) else "fp32"
        if announce:
            log.info("train.precision=auto: %s on this %s", train.precision, device.type.upper())
    if train.compile and (reason := compile_unavailable(device)):
        train.compile = False
        if announce:
            log.warning("train.compile=true, but torch.compile does not work here (%s); training without it. "
                        "On a CPU it needs a C++ compiler and Python's headers (apt-get install g++ python3-dev)",
                        reason)
    return resolved


def build_model(config: RunConfig, class_names: list[str], saved: TrainingState | None = None) -> nn.Module:
    """The recipe's model; for a resumed run, the architecture saved in its last checkpoint, so
    that the pretrained weights or the checkpoint it started from are no longer needed."""
    section = config.model
    if saved is not None:  # its weights are loaded with the optimizer's state, by restore()
        model = CrossViT(CrossViTConfig.from_dict(saved.architecture["config"]))
        model.meta = ModelMeta.from_dict(saved.architecture["meta"])
    else:
        options = dict(section.options)
        if section.img_size is not None:
            options["img_size"] = section.img_size
        model = create_model(section.name, pretrained=section.pretrained, checkpoint=section.checkpoint,
                             num_classes=len(class_names), drop_path_rate=section.drop_path_rate, **options)
    model.meta = dataclasses.replace(model.meta, class_names=tuple(class_names))
    if section.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("heads.")
    return model


def build_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW or SGD at the resolved config's optim.effective_lr (the paper's linear scaling with
    the batch); no weight decay on norms, biases, CLS tokens and position embeddings (timm's
    grouping reads model.no_weight_decay)."""
    from timm.optim import create_optimizer_v2

    optim = config.optim
    kwargs: dict = {"momentum": optim.momentum} if optim.name == "sgd" else {"betas": optim.betas}
    # One fused kernel per step instead of a loop over the parameters: 7% of a small model's step on a CPU.
    kwargs["fused"] = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())
    if optim.layer_decay is not None and optim.layer_decay != 1.0:  # timm groups by model.group_matcher's depths
        kwargs["layer_decay"] = optim.layer_decay
    return create_optimizer_v2(model, opt=optim.name, lr=optim.effective_lr, weight_decay=optim.weight_decay, **kwargs)


def lr_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[dict]:
    """Each parameter group's depth range, lr scale, peak lr (after warm-up), weight decay and size,
    for the run's log and lr_groups.json (with layer decay, one group per depth and decay kind)."""
    depth_of = {id(p): model.layer_depth(name) for name, p in model.named_parameters()}
    rows = []
    for group in optimizer.param_groups:
        depths = sorted({depth_of[id(p)] for p in group["params"]})
        scale = group.get("lr_scale", 1.0)  # timm's scheduler multiplies every rate it sets by it
        rows.append({"depths": [depths[0], depths[-1]], "lr_scale": scale,
                     "lr": group.get("initial_lr", group["lr"]) * scale, "weight_decay": group["weight_decay"],
                     "parameters": sum(p.numel() for p in group["params"])})
    return sorted(rows, key=lambda r: (r["depths"], r["weight_decay"]))


@dataclass
class RunParts:
    """Everything a run trains with, built by build()."""

    config: RunConfig  # resolved for this machine
    class_names: list[str]
    model: nn.Module  # the plain model; StepContext.model is it wrapped for DDP and torch.compile
    train_set: Dataset
    val_loader: DataLoader
    micro_batch: int  # images per process and forward pass
    steps_per_epoch: int  # optimizer steps
    optimizer: torch.optim.Optimizer
    scheduler: Any  # timm's cosine schedule, stepped per optimizer step
    scaler: torch.amp.GradScaler | None  # fp16 only
    ema: Any  # timm's ModelEmaV3, or None
    mixup: Callable | None
    criterion: nn.Module


def build(config: RunConfig, world: World, saved: TrainingState | None) -> RunParts:
    """The parts of a run, checked against this machine. The model draws its initial weights
    first after seeding, so that the same seed starts from the same weights."""
    batch, accum_steps = config.data.batch_size, config.optim.accum_steps
    torch.set_num_threads(config.train.threads or distributed.threads_per_process())
    datasets.seed_everything(config.seed)
    if batch % (world.size * accum_steps):
        raise CrossViTError(f"data.batch_size={batch} must be divisible by processes x optim.accum_steps "
                            f"= {world.size} x {accum_steps}")
    if config.train.precision == "fp16" and world.device.type != "cuda":
        raise CrossViTError("train.precision=fp16 needs a GPU; on a CPU use train.precision=bf16")
    class_names = datasets.class_names(config.data)
    model = build_model(config, class_names, saved)
    if config.train.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(world.device)

    micro_batch = batch // (world.size * accum_steps)
    train_set = datasets.build_dataset(config.data, "train", model.meta, config.aug, config.seed)
    val_set = datasets.build_dataset(config.data, "val", model.meta, None, config.seed)
    # Resolved once the data is known to be there: a missing dataset is said before the compile probe's seconds.
    config = resolve(config, world.device, announce=world.is_main)
    data, optim = config.data, config.optim
    steps_per_epoch = len(datasets.train_loader(train_set, micro_batch, 0, world.rank, world.size, config.seed,
                                                config.aug.repeated)) // accum_steps
    if steps_per_epoch == 0:
        raise CrossViTError(f"the training split has {len(train_set)} images, fewer than one batch of {batch}; "
                            "lower data.batch_size")
    optimizer = build_optimizer(model, config)
    from timm.scheduler import CosineLRScheduler

    scheduler = CosineLRScheduler(optimizer, t_initial=config.epochs * steps_per_epoch, lr_min=optim.min_lr,
                                  warmup_t=round(optim.warmup_epochs * steps_per_epoch), warmup_lr_init=optim.warmup_lr,
                                  t_in_epochs=False)
    scaler = torch.amp.GradScaler("cuda") if config.train.precision == "fp16" else None
    ema = None
    if config.train.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=config.train.ema)
    mixup, criterion = _loss(config, len(class_names))
    val_loader = datasets.eval_loader(val_set, max(1, data.eval_batch_size // world.size), data.workers, world.rank,
                                      world.size, world.device.type == "cuda")
    return RunParts(config=config, class_names=class_names, model=model, train_set=train_set, val_loader=val_loader,
                    micro_batch=micro_batch, steps_per_epoch=steps_per_epoch, optimizer=optimizer, scheduler=scheduler,
                    scaler=scaler, ema=ema, mixup=mixup, criterion=criterion)


def _loss(config: RunConfig, num_classes: int) -> tuple[Callable | None, nn.Module]:
    """Mixup / CutMix (which mix the targets too, hence soft-target cross-entropy) or plain labels."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    aug = config.aug
    if aug.mixup > 0 or aug.cutmix > 0:
        mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, switch_prob=aug.mixup_switch_prob,
                      label_smoothing=aug.smoothing, num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    return None, nn.CrossEntropyLoss(label_smoothing=aug.smoothing)


def restore(parts: RunParts, saved: TrainingState) -> Progress:
    """Load a checkpoint's weights and the optimizer's, scaler's and EMA's states into `parts`
    (before the model is wrapped); return where the run stood."""
    try:
        parts.model.load_state_dict(saved.weights)
        parts.optimizer.load_state_dict(saved.optimizer)
        if parts.scaler is not None and saved.scaler:
            parts.scaler.load_state_dict(saved.scaler)
        if parts.ema is not None and saved.ema:
            parts.ema.module.load_state_dict(saved.ema)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:  # a file edited or swapped since it was saved
        raise CheckpointError(f"{saved.path} does not fit the run it was saved by ({first_line(e)[:160]}); restore "
                              "the file, or start the run again without --resume") from None
    return saved.progress


def step_context(parts: RunParts, world: World, progress: Progress) -> StepContext:
    """What each training step uses, with the model wrapped for DDP and torch.compile as the
    config says, and the training clock where `progress` left it."""
    config = parts.config
    model: nn.Module = parts.model
    if world.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    if config.train.compile:
        model = torch.compile(model)
    time_limit = config.train.time_limit
    return StepContext(model=model, optimizer=parts.optimizer, scheduler=parts.scheduler, criterion=parts.criterion,
                       mixup=parts.mixup, scaler=parts.scaler, ema=parts.ema, world=world,
                       precision=config.train.precision, accum_steps=config.optim.accum_steps,
                       clip_grad=config.optim.clip_grad, seed=config.seed, strict=config.data.strict,
                       total_steps=config.epochs * parts.steps_per_epoch, train_seconds=progress.train_seconds,
                       budget_seconds=time_limit * 60 if time_limit else None)
