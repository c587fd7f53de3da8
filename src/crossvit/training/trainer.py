"""A training run: start_or_resume() picks the config and the checkpoint to continue, train()
runs it. Run holds a run in progress and its steps: run_epoch() trains, end_epoch() evaluates,
records, saves and plots; setup.py builds what it trains with, engine.py does the steps."""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from tqdm import tqdm

from .. import data as datasets
from ..errors import CrossViTError, first_line
from ..files import atomic_write, is_disk_full
from ..model.fastpaths import cpu_support
from ..runconfig import RunConfig, load_config, save_config
from . import distributed, rundir
from .engine import EpochStats, EvalResult, LossDiverged, StepContext, evaluate, train_one_epoch
from .expectation import Expectation
from .plots import plot_curves
from .tensorboard import RunLog
from .setup import RunParts, build, lr_groups, restore, step_context
from .state import Progress, TrainingState, load_state, save_state

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


def start_or_resume(output: str | Path, recipe: str | RunConfig, overrides: list[str] | None = None,
                    resume: bool | Literal["if_started"] = False) -> tuple[RunConfig, TrainingState | None]:
    """The config of the run to train into `output`, and the checkpoint it continues from (None:
    it starts at its first step); pass both on to train(), which reads nothing again.

    A new run (resume=False) takes `recipe` (a recipe's name or file with KEY=VALUE `overrides`,
    or a RunConfig as it is). resume=True continues the run in `output` with `overrides` (e.g.
    more epochs): from its last.pth, or, stopped before its first checkpoint, from its config.yaml.
    resume="if_started" continues a run started there and starts one otherwise."""
    output = Path(output)
    last, saved_config = output / rundir.LAST, output / rundir.CONFIG
    if resume is True or (resume == "if_started" and (last.exists() or saved_config.is_file())):
        if last.exists():  # load_state names what is wrong with anything there that is no checkpoint
            state = load_state(last)
            return load_config(data=state.run_config, overrides=overrides), state
        if saved_config.is_file():
            log.info("no checkpoint in %s yet: starting the run again from its config.yaml", output)
            return load_config(str(saved_config), overrides), None
        raise CrossViTError(f"nothing to resume in {output}: no last.pth there; start it without --resume")
    return (recipe if isinstance(recipe, RunConfig) else load_config(recipe, overrides)), None


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def train(config: RunConfig, output: str | Path, state: TrainingState | None = None, alone: bool = False,
          command: str | None = None) -> RunResult:
    """Run the training that `config` describes, writing into `output`: a new run, or with `state`
    (see start_or_resume) the continuation of the run there. `alone`: this process trains by
    itself even under torchrun (no DDP). `command`: the command line that asked for it, added to
    the run's command.txt (a new run's first line, then one per resume)."""
    output = Path(output)
    world = distributed.setup(config.train.device, join=not alone)
    try:
        with StopSignals() as signals:
            return _train(config, output, state, world, signals, command)
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


def _train(config: RunConfig, output: Path, saved: TrainingState | None, world: distributed.World,
           signals: StopSignals, command: str | None) -> RunResult:
    if saved is None and (output / rundir.LAST).is_file():
        raise CrossViTError(f"{output} already holds a run (last.pth): pass --resume to continue it, "
                            "or choose another --output")
    if world.is_main and output.is_dir():
        for leftover in output.glob(".*.tmp"):  # a write that a kill interrupted; its target is intact
            leftover.unlink()
    parts = build(config, world, saved)
    progress = Progress()
    if saved is not None:
        progress = restore(parts, saved)
        if world.is_main:
            log.info("resuming %s at epoch %d, step %d", output, progress.epoch + 1, progress.step_in_epoch)
    step = step_context(parts, world, progress)
    if saved is not None:  # the learning rate where the checkpoint left it
        parts.scheduler.step_update(step.schedule_position(progress.epoch * parts.steps_per_epoch
                                                           + progress.step_in_epoch))
    return Run(parts, step, progress, world, output, signals, command).run()


class Run:
    """A run in progress: the parts it trains with, where it stands, and the files it writes
    into `output`: config.yaml, command.txt, metrics.jsonl, curves.png, last.pth and best.pth."""

    started: float  # perf_counter() when training began (elapsed_seconds)
    last_save: float  # monotonic() of the latest checkpoint

    def __init__(self, parts: RunParts, step: StepContext, progress: Progress, world: distributed.World,
                 output: Path, signals: StopSignals, command: str | None = None) -> None:
        self.parts, self.config, self.step, self.progress = parts, parts.config, step, progress
        self.world, self.output, self.signals, self.command = world, output, signals, command
        self.last_path, self.best_path, self.metrics_path = output / rundir.LAST, output / rundir.BEST, output / rundir.METRICS
        self.bad_files: set[str] = set()
        self.epochs_done = float(progress.epoch)  # with the share of a last epoch that a time limit cut short
        self.final: EvalResult | None = None  # the latest evaluation
        train = self.config.train
        self.expectation = None
        if train.time_limit and self.config.expected_top1 and world.is_main:
            self.expectation = Expectation(self.config.expected_top1, train.time_limit * 60,
                                           parts.steps_per_epoch * self.config.data.batch_size, self.config.epochs)
        self.machine = _machine_class(world.device, train.precision)

    def run(self) -> RunResult:
        """Train epoch after epoch until the epochs or the time limit are spent, or a signal asks to stop."""
        self._start_files()
        self.tensorboard = RunLog.open(self.output, self.config, self.world.is_main)
        self.started = time.perf_counter()
        self.last_save = time.monotonic()
        interrupted = False
        try:
            while self.progress.epoch < self.config.epochs and not self.step.budget_spent():
                stats, stopped_by = self.run_epoch()
                self.bad_files.update(stats.bad_files)
                if stopped_by == "signal":
                    interrupted = True
                    break
                self.end_epoch(stats, stopped_by)
        except LossDiverged as e:
            raise CrossViTError(f"{e}; stopped, and {self.last_path} (the last good state) is kept: lower optim.lr, "
                                "set optim.clip_grad, or use train.precision=fp32") from None
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close(self.config, self.final.top1 if self.final else None, self.progress.best_top1)
        if interrupted and self.world.is_main:
            log.info("stopped by a signal: state saved in %s; continue with --resume --output %s", self.last_path,
                     self.output)
        verdict = None
        if self.expectation and self.final is not None and not interrupted:
            verdict = self.expectation.verdict(self.epochs_done, self.final.top1)
            tqdm.write(verdict)
        return RunResult(self.output, self.progress.epoch, self.progress.best_top1, self.progress.best_epoch,
                         self.final, time.perf_counter() - self.started, interrupted, len(self.bad_files),
                         self.world.is_main, verdict)

    def _start_files(self) -> None:
        """config.yaml as resolved, and the metrics of the epochs the checkpoint holds (none for a new run)."""
        if not self.world.is_main:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.output / rundir.CONFIG)
        if self.command:
            rundir.record_command(self.output, self.command)
        if self.config.optim.layer_decay not in (None, 1.0):
            groups = lr_groups(self.parts.model, self.parts.optimizer)
            for g in groups:
                log.info("layer decay %g: depths %d-%d learn at %.3g x lr = %.3g (weight decay %g, %d parameters)",
                         self.config.optim.layer_decay, *g["depths"], g["lr_scale"], g["lr"], g["weight_decay"],
                         g["parameters"])
            text = json.dumps(groups, indent=1)
            atomic_write(self.output / "lr_groups.json", lambda tmp: Path(tmp).write_text(text))
        if self.metrics_path.is_file():
            kept = "".join(json.dumps(r) + "\n" for r in rundir.read_metrics(self.metrics_path)
                           if r["epoch"] <= self.progress.epoch)
            atomic_write(self.metrics_path, lambda tmp: Path(tmp).write_text(kept))

    def run_epoch(self) -> tuple[EpochStats, str | None]:
        """Train the current epoch from the step the run stands at; see train_one_epoch for why it may stop early."""
        parts, config, world = self.parts, self.config, self.world
        epoch, first_step = self.progress.epoch, self.progress.step_in_epoch
        parts.train_set.set_epoch(epoch)
        loader = datasets.train_loader(parts.train_set, parts.micro_batch, config.data.workers, world.rank,
                                       world.size, config.seed, config.aug.repeated,
                                       first_step * config.optim.accum_steps, world.device.type == "cuda")
        loader.sampler.set_epoch(epoch)
        bar = tqdm(total=parts.steps_per_epoch, initial=first_step, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not world.is_main, leave=False, dynamic_ncols=True, mininterval=1.0)
        try:
            return train_one_epoch(self.step, loader, epoch, first_step, parts.steps_per_epoch, self._requests,
                                   lambda step, stats, save_now: self._after_step(bar, step, stats, save_now))
        finally:  # an error's message then starts on a line of its own
            bar.close()

    def _requests(self) -> tuple[bool, bool]:
        """Whether this process wants a checkpoint now (one is due), and whether it wants to stop."""
        due = time.monotonic() - self.last_save > self.config.train.checkpoint_minutes * 60
        return due, self.signals.requested

    def _after_step(self, bar: tqdm, step: int, stats: EpochStats, save_now: bool) -> None:
        """The progress bar, the time-limit forecast, and a mid-epoch checkpoint when asked."""
        self.progress.step_in_epoch = step
        bar.update(1)
        if step % self.config.train.log_every == 0 or step == self.parts.steps_per_epoch:
            bar.set_postfix(loss=f"{stats.loss:.3f}", lr=f"{self.parts.optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{self._images_per_second(stats):.0f}")
            if self.tensorboard is not None:
                self.tensorboard.step(self.progress.epoch * self.parts.steps_per_epoch + step, stats.loss,
                                      [g["lr"] for g in self.parts.optimizer.param_groups],
                                      self._images_per_second(stats))
        if self.expectation and (forecast := self.expectation.forecast(stats.samples * self.world.size, stats.seconds,
                                                                        self.machine)):
            tqdm.write(forecast)
        if save_now and step < self.parts.steps_per_epoch:
            self.save(self.last_path)
            self.last_save = time.monotonic()

    def _images_per_second(self, stats: EpochStats) -> float:
        return stats.samples * self.world.size / max(stats.seconds, 1e-9)

    def end_epoch(self, stats: EpochStats, stopped_by: str | None) -> None:
        """Record the epoch, evaluate when due, save best.pth (if better) and last.pth, plot, print its line."""
        config, world = self.config, self.world
        epoch_images = self.parts.steps_per_epoch * config.data.batch_size
        record = {"epoch": self.progress.epoch + 1, "train_loss": stats.loss,
                  "lr": self.parts.optimizer.param_groups[0]["lr"],
                  "img_per_s": self._images_per_second(stats),
                  "epoch_seconds": stats.seconds, "elapsed_seconds": time.perf_counter() - self.started,
                  "train_seconds": self.step.train_seconds}
        if stopped_by == "budget":  # the last, partial epoch
            record["time_limit_reached"] = True
        self.epochs_done = self.progress.epoch + (stats.samples * world.size / epoch_images
                                                  if stopped_by == "budget" else 1)
        self.progress.epoch += 1
        self.progress.step_in_epoch = 0
        improved = self._evaluate(record)
        if self.bad_files:
            record["bad_files"] = len(self.bad_files)
        # The record, best.pth, then last.pth: a kill between two writes leaves last.pth at the
        # previous epoch, which the resumed run repeats, writing the same record and best.pth again.
        if world.is_main:
            _append_jsonl(self.metrics_path, record)
            if self.tensorboard is not None:
                self.tensorboard.epoch(record)
        if improved:
            self.save(self.best_path, resumable=False)
        self.save(self.last_path)
        self.last_save = time.monotonic()
        if world.is_main:
            plot_curves(rundir.read_metrics(self.metrics_path), self.output / rundir.CURVES)
            tqdm.write(_epoch_line(record, config.epochs))
        distributed.barrier(world)

    def _evaluate(self, record: dict) -> bool:
        """Evaluate the weights to use when an evaluation is due (adding the results to `record`);
        whether they are the best so far."""
        epoch, train = self.progress.epoch, self.config.train
        if not (epoch % train.eval_every == 0 or epoch == self.config.epochs or self.step.budget_spent()):
            return False
        parts, world, strict = self.parts, self.world, self.config.data.strict
        classes = len(parts.class_names)
        self.final = evaluate(self._weights(), parts.val_loader, classes, world, train.precision, strict)
        self.bad_files.update(self.final.bad_files)
        record.update(self.final.summary())
        if parts.ema is not None:
            record["raw_top1"] = evaluate(parts.model, parts.val_loader, classes, world, train.precision, strict).top1
            record["ema_top1"] = self.final.top1
        if self.progress.best_top1 is not None and self.final.top1 <= self.progress.best_top1:
            return False
        self.progress.best_top1, self.progress.best_epoch = self.final.top1, epoch
        return True

    def _weights(self) -> nn.Module:
        """The weights to evaluate and to use: the moving average's, if the run keeps one."""
        return self.parts.ema.module if self.parts.ema is not None else self.parts.model

    def save(self, path: Path, resumable: bool = True) -> None:
        """A checkpoint of where the run stands (from the main process); `resumable`: with what resuming needs."""
        if not self.world.is_main:
            return
        self.progress.train_seconds = self.step.train_seconds
        parts = self.parts
        resume_parts = {"optimizer": parts.optimizer, "scaler": parts.scaler,
                        "ema": parts.ema.module if parts.ema is not None else None} if resumable else {}
        save_state(path, parts.model, self._weights().state_dict(), self.progress, self.config.to_dict(),
                   **resume_parts)


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
