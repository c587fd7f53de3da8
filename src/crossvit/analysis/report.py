"""A training run's report: one self-contained HTML file to open in a browser, without a server.

    from crossvit.analysis.report import write_report
    path = write_report("runs/fm")  # runs/fm/report.html

It holds the training curves, the per-class accuracy and the confusion matrix of the run's best
weights on the validation split, the validation images the model gets most wrong with where each
branch's CLS token looked (attention rollout, and the last fusion's maps), the epochs as a table,
and the command and config that made the run. Figures are PNGs inside the page (data: URIs), so
the file can be mailed or archived alone. `crossvit report RUN_DIR` writes it.
"""

from __future__ import annotations

import base64
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import CrossViTError
from ..files import atomic_write
from ..inference import load_for_inference, validation_data
from ..model.checkpoint import read_checkpoint
from ..model.crossvit import CrossViT
from ..training import rundir
from ..training.plots import confusion_figure, curves_figure, per_class_figure, png_bytes
from .attention import attention_maps
from .attention_plot import strip_figure, unnormalise
from .report_html import Mistake, Page, Plot, render


@dataclass
class Predictions:
    """The model's answers on the validation split: counts, and the worst mistakes with their images."""

    confusion: Tensor  # (classes, classes), rows: true class
    loss: float  # mean cross-entropy of the averaged heads
    unreadable: int
    worst: list[tuple[float, int, int, int, float, Tensor]] = field(default_factory=list)
    # (probability of the true class, index in the split, true class, predicted class, its probability, image)


def predict_split(model: CrossViT, loader, num_classes: int, keep_worst: int) -> Predictions:
    """One pass over `loader` (images in order, as validation_data gives them): the confusion matrix,
    the loss, and the `keep_worst` misclassified images whose true class got the least probability."""
    model.eval()
    device = next(model.parameters()).device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss, unreadable, offset, worst = 0.0, 0, 0, []
    files = _split_files(loader)
    for batch in loader:
        unreadable += len(batch.bad)
        positions = _readable_positions(range(offset, offset + len(batch.images) + len(batch.bad)), batch.bad, files)
        offset += len(batch.images) + len(batch.bad)
        if not len(batch.images):
            continue
        with torch.inference_mode():
            probs = model(batch.images.to(device)).float().softmax(-1).cpu()
        targets = batch.targets
        predicted = probs.argmax(1)
        confusion += torch.bincount(targets * num_classes + predicted, minlength=num_classes ** 2).view_as(confusion)
        p_true = probs.gather(1, targets[:, None])[:, 0]
        loss += -p_true.clamp(min=1e-12).log().sum().item()
        for i in (predicted != targets).nonzero()[:, 0].tolist():
            worst.append((p_true[i].item(), positions[i], int(targets[i]), int(predicted[i]),
                          probs[i, predicted[i]].item(), batch.images[i].clone()))
        worst = sorted(worst, key=lambda w: w[0])[:keep_worst]
    return Predictions(confusion, loss / max(1, int(confusion.sum())), unreadable, worst)


def _split_files(loader) -> list[tuple[str, int]] | None:
    """The (file, class) of each image of the split, in order, for datasets read from files (else None)."""
    dataset = getattr(loader.dataset, "dataset", loader.dataset)  # eval_loader wraps it in a Subset
    return getattr(dataset, "samples", None)


def _readable_positions(span: range, bad: list, files: list[tuple[str, int]] | None) -> list[int]:
    """The split positions of a batch's readable images: its span, less the unreadable files (found by path)."""
    if not bad or files is None:
        return list(span)
    bad_paths = {b.path for b in bad}
    return [p for p in span if files[p][0] not in bad_paths]


def sample_name(files: list[tuple[str, int]] | None, position: int) -> str:
    """How the report names a validation image: its file, if the dataset has files, else its index."""
    return str(files[position][0]) if files is not None else f"validation image {position}"


def mistake_maps(model: CrossViT, image: Tensor) -> dict[str, np.ndarray]:
    """The maps shown beside a mistake: each branch's rollout, then the last encoder's fusion maps."""
    maps = attention_maps(model, image, with_rollout=True)
    last = f"encoder{len(model.encoders) - 1}_fusion"
    chosen = {k: v for k, v in maps.items() if k.endswith("_rollout")}
    chosen.update({k: v for k, v in maps.items() if k.startswith(last)})
    return chosen


def _panel_title(name: str) -> str:
    if name.endswith("_rollout"):
        return f"branch {name[len('branch'):-len('_rollout')]}: rollout"
    fusion = name.split("_", 1)[1]  # fusion{l}_branch{i}_over_branch{j}
    return fusion.replace("_over_", " over ").replace("_", " ").replace("fusion", "last fusion ", 1)


def _png(fig) -> str:
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def pick_checkpoint(run_dir: Path, checkpoint: str | None) -> Path:
    """The weights to report on: `checkpoint` (a path, or a file name inside the run), else best.pth, else last.pth."""
    if checkpoint:
        path = Path(checkpoint) if Path(checkpoint).exists() else run_dir / checkpoint
        if not path.is_file():
            raise CrossViTError(f"--checkpoint {checkpoint}: no such file (nor {run_dir / checkpoint})")
        return path
    for name in (rundir.BEST, rundir.LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CrossViTError(f"{run_dir} holds no {rundir.BEST} or {rundir.LAST}: a run saves them after its first epoch; "
                        "train at least one, or name a checkpoint with --checkpoint")


def write_report(run_dir: str | os.PathLike, output: str | os.PathLike | None = None, checkpoint: str | None = None,
                 data: str | None = None, worst: int = 12, limit: int | None = None, batch_size: int = 256,
                 workers: int = 0) -> Path:
    """Write the report of the run in `run_dir` (see the module's docstring) to `output` (default:
    RUN_DIR/report.html) and return its path.

    checkpoint: the weights to evaluate (default best.pth, else last.pth). data: where the
    validation images are, if not where the run read them. worst: how many mistakes to show.
    limit: evaluate the first N validation images only.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CrossViTError(f"run directory {run_dir} does not exist; give the folder `crossvit train --output` wrote")
    if not (run_dir / rundir.CONFIG).is_file() and not (run_dir / rundir.METRICS).is_file():
        raise CrossViTError(f"{run_dir} is not a run directory (no {rundir.CONFIG} or {rundir.METRICS}); "
                            "give the folder `crossvit train --output` wrote")
    weights = pick_checkpoint(run_dir, checkpoint)
    out = Path(output) if output else run_dir / "report.html"
    if out.is_dir():
        raise CrossViTError(f"--output {out} is a folder; name the HTML file to write")
    stored = read_checkpoint(weights)
    model, _ = load_for_inference(stored)
    loader, class_names, data_cfg = validation_data(stored, model, data, limit=limit, workers=workers,
                                                    batch_size=batch_size)
    started = time.perf_counter()
    predictions = predict_split(model, loader, len(class_names), worst)
    if not predictions.confusion.sum():
        raise CrossViTError(f"no readable validation image in {data_cfg.path or data_cfg.dataset}; nothing to report")
    page = Page(
        run=run_dir.name, checkpoint=str(weights), epoch=(stored.progress or {}).get("epoch"),
        model=model.meta.name if model.meta else "crossvit", dataset=data_cfg.dataset, data_path=data_cfg.path,
        class_names=class_names, confusion=predictions.confusion.tolist(), loss=predictions.loss,
        unreadable=predictions.unreadable, metrics=rundir.read_metrics(run_dir / rundir.METRICS),
        commands=rundir.read_commands(run_dir), config=_read_text(run_dir / rundir.CONFIG),
        made=f"{time.strftime('%Y-%m-%d %H:%M')} by crossvit on {platform.node() or 'this machine'}, "
             f"torch {torch.__version__}")
    page.figures = _plots(page, weights.name)
    files = _split_files(loader)
    page.mistakes = [_mistake(model, sample_name(files, position), class_names[target], class_names[predicted],
                              p_predicted, p_true, image)
                     for p_true, position, target, predicted, p_predicted, image in predictions.worst]
    page.seconds = time.perf_counter() - started
    text = render(page)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out


def _plots(page: Page, checkpoint_name: str) -> list[Plot]:
    plots = []
    if page.metrics:
        plots.append(Plot("curves", "Training curves", _png(curves_figure(page.metrics)),
                          "Loss, validation top-1 (the heads averaged and each alone) and learning rate by epoch."))
    plots.append(Plot("per-class", "Accuracy by class", _png(per_class_figure(page.class_names, page.per_class,
                                                                               page.top1)),
                      "Validation top-1 of each class, worst first; the dashed line is the whole split's."))
    plots.append(Plot("confusion", "Confusion matrix", _png(confusion_figure(
        page.confusion, page.class_names, f"{checkpoint_name}: top-1 {page.top1:.2f}%")),
        "Row: the true class; column: the prediction. Colour: the share of the row; numbers: images."))
    return plots


def _mistake(model: CrossViT, label: str, true_class: str, predicted: str, p_predicted: float, p_true: float,
             image: Tensor) -> Mistake:
    """A wrongly classified image, drawn beside where each branch looked."""
    picture = unnormalise(image, model.meta)
    if model.config.cls_token:
        maps = mistake_maps(model, image)
        fig = strip_figure(picture, maps, {name: _panel_title(name) for name in maps})
    else:  # no CLS token, so no question of where it looks: the picture alone
        fig = strip_figure(picture, {})
    return Mistake(label, true_class, predicted, p_predicted, p_true, _png(fig))


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
