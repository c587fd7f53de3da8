"""A training run from a RunConfig: model, data, optimisation, checkpoints, logs, resumption."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .. import data as datasets
from ..errors import CheckpointError, CrossViTError, first_line
from ..files import atomic_write, is_disk_full
from ..model import CrossViT, CrossViTConfig, ModelMeta
from ..model.checkpoint import FORMAT_TAG
from ..model.factory import create_model
from ..model.fastpaths import cpu_support
from . import distributed
from ..runconfig import RunConfig, load_config, save_config
from .expectation import Expectation
from .engine import EvalResult, LossDiverged, StepContext, compile_unavailable, evaluate, native_bf16, train_one_epoch
from .plots import plot_curves
from .state import load_state, save_state

log = logging.getLogger("crossvit")


@dataclass
class RunResult:
    output: Path
    epochs_done: int
    best_top1: float | None
    best_epoch: int | None
    final: EvalResult | None
    seconds: float
    interrupted: bool
    bad_files: int
    main_process: bool = True  # under torchrun, only one process reports
    expectation: str | None = None  # how the run compares with the recipe's measured curve (time-limited recipes)


class StopSignals:
    """SIGINT / SIGTERM ask the run to finish its current step, save and exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_model(config: RunConfig, class_names: list[str], resumed: dict | None = None) -> nn.Module:
    """The recipe's model; for a resumed run, the architecture saved in its last checkpoint, so
    that the pretrained weights or the checkpoint it started from are no longer needed."""
    m = config.model
    if resumed is not None:  # its weights are loaded with the optimizer's state below
        record = resumed[FORMAT_TAG]
        model = CrossViT(CrossViTConfig.from_dict(record["config"]))
        model.meta = ModelMeta.from_dict(record["meta"])
    else:
        options = dict(m.options)
        if m.img_size is not None:
            options["img_size"] = m.img_size
        model = create_model(m.name, pretrained=m.pretrained, checkpoint=m.checkpoint, num_classes=len(class_names),
                             drop_path_rate=m.drop_path_rate, **options)
    model.meta = dataclasses.replace(model.meta, class_names=tuple(class_names))
    if m.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("heads.")
    return model


def build_optimizer(model: nn.Module, config: RunConfig, global_batch: int) -> torch.optim.Optimizer:
    """AdamW or SGD with the paper's linear learning-rate scaling; no weight decay on norms,
    biases, CLS tokens and position embeddings (timm's grouping reads model.no_weight_decay)."""
    from timm.optim import create_optimizer_v2

    o = config.optim
    lr = o.lr * global_batch / o.lr_base_batch if o.lr_base_batch else o.lr
    kwargs: dict = {"momentum": o.momentum} if o.name == "sgd" else {"betas": o.betas}
    # One fused kernel per step instead of a loop over the parameters: 7% of a small model's step on a CPU.
    kwargs["fused"] = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())
    return create_optimizer_v2(model, opt=o.name, lr=lr, weight_decay=o.weight_decay, **kwargs)


def config_of_run(output: str | Path, overrides: list[str] | None = None) -> tuple[RunConfig, dict | None]:
    """The config a run in `output` was started with, with KEY=VALUE changes (e.g. more epochs),
    and its last state, to pass on as `train(..., resume=state)` (read once). A run stopped before
    its first checkpoint has no state (None) and starts again from its saved config.yaml."""
    output = Path(output)
    path = output / "last.pth"
    if path.exists():  # load_state names what is wrong with anything there that is no checkpoint
        state = load_state(path)
        return load_config(data=state["run_config"], overrides=overrides), state
    if (output / "config.yaml").is_file():
        log.info("no checkpoint in %s yet: starting the run again from its config.yaml", output)
        return load_config(str(output / "config.yaml"), overrides), None
    raise CrossViTError(f"nothing to resume in {output}: no last.pth there; start it without --resume")


def read_metrics(path: Path) -> list[dict]:
    """The records of metrics.jsonl; a line cut short by a kill is left out."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def train(config: RunConfig, output: str | Path, resume: bool | dict | None = False, alone: bool = False) -> RunResult:
    """Run (or continue, with `resume`) the training that `config` describes, writing into `output`.
    `resume` may be the state config_of_run already read. `alone`: this process trains by
    itself even under torchrun (no DDP)."""
    output = Path(output)
    world = distributed.setup(config.train.device, join=not alone)
    try:
        with StopSignals() as signals:
            return _train(config, output, resume, world, signals)
    except CrossViTError:
        raise
    except Exception as e:
        if is_disk_full(e):  # metrics, plots or config (checkpoints say so themselves)
            raise CrossViTError(f"the disk is full: writing into {output} failed; free some space, then continue "
                                "with --resume (last.pth holds the last saved state)") from None
        if world.distributed:  # a peer died: collectives fail here, or torchrun stopped this process
            raise CrossViTError(f"process {world.rank} of {world.size} stopped ({type(e).__name__}: {first_line(e)[:200]}); "
                                "another process of the run probably failed or was killed: run the same command with "
                                f"--resume to continue from {output / 'last.pth'}") from e
        raise
    finally:
        distributed.teardown()


def _train(config: RunConfig, output: Path, resume: bool | dict | None, world: distributed.World,
           signals: StopSignals) -> RunResult:
    last_path, best_path = output / "last.pth", output / "best.pth"
    state = None
    if isinstance(resume, dict):
        state = resume
    elif resume:
        if not last_path.is_file():
            raise CrossViTError(f"nothing to resume in {output}: no last.pth there; start it without --resume")
        state = load_state(last_path)
    elif last_path.is_file():
        raise CrossViTError(f"{output} already holds a run (last.pth): pass --resume to continue it, "
                            "or choose another --output")
    if world.is_main and output.is_dir():
        for leftover in output.glob(".*.tmp"):  # a write that a kill interrupted; its target is intact
            leftover.unlink()
    torch.set_num_threads(config.train.threads or distributed.threads_per_process())
    datasets.seed_everything(config.seed)

    d, t, o = config.data, config.train, config.optim
    if d.batch_size % (world.size * o.accum_steps):
        raise CrossViTError(f"data.batch_size={d.batch_size} must be divisible by processes x optim.accum_steps "
                            f"= {world.size} x {o.accum_steps}")
    if t.precision == "fp16" and world.device.type != "cuda":
        raise CrossViTError("train.precision=fp16 needs a GPU; on a CPU use train.precision=bf16")
    class_names = datasets.class_names(d)
    model = build_model(config, class_names, state)
    if t.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(world.device)

    micro_batch = d.batch_size // (world.size * o.accum_steps)
    train_set = datasets.build_dataset(d, "train", model.meta, config.aug, config.seed)
    val_set = datasets.build_dataset(d, "val", model.meta, None, config.seed)
    # Settings resolved for this machine, once the data is known to be there (bad input stays one line).
    if t.precision == "auto":
        t.precision = "bf16" if native_bf16(world.device) else "fp32"  # saved as chosen
        if world.is_main:
            log.info("train.precision=auto: %s on this %s", t.precision, world.device.type.upper())
    if t.compile and (reason := compile_unavailable(world.device)):
        t.compile = False  # saved as chosen, like precision
        if world.is_main:
            log.warning("train.compile=true, but torch.compile does not work here (%s); training without it. "
                        "On a CPU it needs a C++ compiler and Python's headers (apt-get install g++ python3-dev)",
                        reason)
    a = config.aug
    steps_per_epoch = len(datasets.train_loader(train_set, micro_batch, 0, world.rank, world.size, config.seed,
                                                a.repeated)) // o.accum_steps
    if steps_per_epoch == 0:
        raise CrossViTError(f"the training split has {len(train_set)} images, fewer than one batch of {d.batch_size}; "
                            "lower data.batch_size")
    optimizer = build_optimizer(model, config, d.batch_size)
    from timm.scheduler import CosineLRScheduler

    scheduler = CosineLRScheduler(optimizer, t_initial=config.epochs * steps_per_epoch, lr_min=o.min_lr,
                                  warmup_t=round(o.warmup_epochs * steps_per_epoch), warmup_lr_init=o.warmup_lr,
                                  t_in_epochs=False)
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
    ema = None
    if t.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.ema)

    epoch, first_step, best_top1, best_epoch = 0, 0, None, None
    if state is not None:
        try:
            model.load_state_dict(state.get("model_train") or state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema"):
                ema.module.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:  # a file edited or swapped since it was saved
            raise CheckpointError(f"{last_path} does not fit the run it was saved by ({first_line(e)[:160]}); restore "
                                  "the file, or start the run again without --resume") from None
        progress = state["progress"]
        epoch, first_step = progress["epoch"], progress["step_in_epoch"]
        best_top1, best_epoch = progress["best_top1"], progress["best_epoch"]
        if world.is_main:
            log.info("resuming %s at epoch %d, step %d", output, epoch + 1, first_step)

    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    mixup = None
    if a.mixup > 0 or a.cutmix > 0:
        mixup = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, switch_prob=a.mixup_switch_prob,
                      label_smoothing=a.smoothing, num_classes=len(class_names))
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=a.smoothing)

    train_model: nn.Module = model
    if world.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    if t.compile:
        train_model = torch.compile(train_model)
    ctx = StepContext(train_model, optimizer, scheduler, criterion, mixup, scaler, ema, world, t.precision,
                      o.accum_steps, o.clip_grad, config.seed, d.strict, total_steps=config.epochs * steps_per_epoch,
                      budget_seconds=t.time_limit * 60 if t.time_limit else None)
    if state is not None:
        ctx.train_seconds = state["progress"].get("train_seconds", 0.0)
        scheduler.step_update(ctx.schedule_position(epoch * steps_per_epoch + first_step))

    metrics_path = output / "metrics.jsonl"
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "config.yaml")
        if metrics_path.is_file():  # keep the records of the epochs that the checkpoint holds
            kept = "".join(json.dumps(r) + "\n" for r in read_metrics(metrics_path) if r["epoch"] <= epoch)
            atomic_write(metrics_path, lambda tmp: Path(tmp).write_text(kept))
    pin = world.device.type == "cuda"
    eval_batch = max(1, (d.eval_batch_size or 2 * d.batch_size) // world.size)
    val_loader = datasets.eval_loader(val_set, eval_batch, d.workers, world.rank, world.size, pin)
    bad_files: set[str] = set()
    started = time.perf_counter()
    last_save = time.monotonic()

    def eval_weights() -> nn.Module:
        return ema.module if ema is not None else model

    def save(path: Path, epoch_: int, step_: int, weights: nn.Module, full: bool = True) -> None:
        if not world.is_main:
            return
        parts = {
            "progress": {"epoch": epoch_, "step_in_epoch": step_, "best_top1": best_top1, "best_epoch": best_epoch,
                         "train_seconds": ctx.train_seconds},
            "run_config": config.to_dict(),
        }
        if full:
            parts.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict() if scaler else None)
            if ema is not None:  # the file's weights are the EMA's; keep the trained ones too
                parts.update(model_train=model.state_dict(), ema=ema.module.state_dict())
        save_state(path, model, weights.state_dict(), **parts)

    def requests() -> tuple[bool, bool]:
        due = time.monotonic() - last_save > t.checkpoint_minutes * 60
        return due, signals.requested

    expectation = None
    if t.time_limit and config.expected_top1 and world.is_main:
        expectation = Expectation(config.expected_top1, t.time_limit * 60, steps_per_epoch * d.batch_size, config.epochs)
    machine = _machine_class(world.device, t.precision)
    epochs_done = float(epoch)
    interrupted = False
    final: EvalResult | None = None
    try:
        while epoch < config.epochs and not ctx.budget_spent():
            train_set.set_epoch(epoch)
            loader = datasets.train_loader(train_set, micro_batch, d.workers, world.rank, world.size, config.seed,
                                           a.repeated, first_step * o.accum_steps, pin)
            loader.sampler.set_epoch(epoch)
            bar = tqdm(total=steps_per_epoch, initial=first_step, desc=f"epoch {epoch + 1}/{config.epochs}",
                       disable=not world.is_main, leave=False, dynamic_ncols=True, mininterval=1.0)

            def on_step(step: int, stats, save_now: bool) -> None:
                nonlocal last_save
                bar.update(1)
                if step % t.log_every == 0 or step == steps_per_epoch:
                    bar.set_postfix(loss=f"{stats.loss:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                    img_s=f"{stats.samples * world.size / max(stats.seconds, 1e-9):.0f}")
                if expectation and (forecast := expectation.forecast(stats.samples * world.size, stats.seconds, machine)):
                    tqdm.write(forecast)
                if save_now and step < steps_per_epoch:
                    save(last_path, epoch, step, eval_weights())
                    last_save = time.monotonic()

            try:
                stats, stopped_by = train_one_epoch(ctx, loader, epoch, first_step, steps_per_epoch, requests, on_step)
            finally:  # an error's message then starts on a line of its own
                bar.close()
            bad_files.update(stats.bad_files)
            if stopped_by == "signal":
                interrupted = True
                break
            record = {"epoch": epoch + 1, "train_loss": stats.loss, "lr": optimizer.param_groups[0]["lr"],
                      "img_per_s": stats.samples * world.size / max(stats.seconds, 1e-9),
                      "epoch_seconds": stats.seconds, "elapsed_seconds": time.perf_counter() - started,
                      "train_seconds": ctx.train_seconds}
            if stopped_by == "budget":  # the last, partial epoch
                record["time_limit_reached"] = True
            epochs_done = epoch + (stats.samples * world.size / (steps_per_epoch * d.batch_size)
                                   if stopped_by == "budget" else 1)
            epoch += 1
            first_step = 0
            evaluated = epoch % t.eval_every == 0 or epoch == config.epochs or ctx.budget_spent()
            if evaluated:
                final = evaluate(eval_weights(), val_loader, len(class_names), world, t.precision, d.strict)
                bad_files.update(final.bad_files)
                record.update(final.summary())
                if ema is not None:
                    record["raw_top1"] = evaluate(model, val_loader, len(class_names), world, t.precision, d.strict).top1
                    record["ema_top1"] = final.top1
            if bad_files:
                record["bad_files"] = len(bad_files)
            improved = evaluated and (best_top1 is None or final.top1 > best_top1)
            if improved:
                best_top1, best_epoch = final.top1, epoch
            # The record, best.pth, then last.pth: a kill between two writes leaves last.pth at the
            # previous epoch, which the resumed run repeats, writing the same record and best.pth again.
            if world.is_main:
                _append_jsonl(metrics_path, record)
            if improved:
                save(best_path, epoch, 0, eval_weights(), full=False)
            save(last_path, epoch, 0, eval_weights())
            last_save = time.monotonic()
            if world.is_main:
                plot_curves(read_metrics(metrics_path), output / "curves.png")
                tqdm.write(_epoch_line(record, config.epochs))
            distributed.barrier(world)
    except LossDiverged as e:
        raise CrossViTError(f"{e}; stopped, and {last_path} (the last good state) is kept: lower optim.lr, "
                            "set optim.clip_grad, or use train.precision=fp32") from None
    if interrupted and world.is_main:
        log.info("stopped by a signal: state saved in %s; continue with --resume --output %s", last_path, output)
    verdict = None
    if expectation and final is not None and not interrupted:
        verdict = expectation.verdict(epochs_done, final.top1)
        tqdm.write(verdict)
    return RunResult(output, epoch, best_top1, best_epoch, final, time.perf_counter() - started, interrupted,
                     len(bad_files), world.is_main, verdict)


def _machine_class(device: torch.device, precision: str) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {precision}"
    return f"{cpu_support().describe()}, {precision}, {torch.get_num_threads()} threads"


def _epoch_line(record: dict, epochs: int) -> str:
    line = (f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f}  "
            f"lr {record['lr']:.2e}  {record['img_per_s']:.0f} img/s  {record['epoch_seconds']:.0f}s")
    if "val_top1" in record:
        heads = " / ".join(f"{v:.2f}" for v in record["val_branch_top1"])
        line += f"  |  val loss {record['val_loss']:.4f}  top-1 {record['val_top1']:.2f}  top-5 {record['val_top5']:.2f}  heads {heads}"
    if record.get("time_limit_reached"):
        line += f"  |  time limit reached after {record['train_seconds'] / 60:.1f} min of training"
    if record.get("bad_files"):
        line += f"  |  {record['bad_files']} unreadable images skipped"
    return line
