"""Running a trained CrossViT: load a checkpoint, classify image files, measure accuracy on a dataset.

    from crossvit.inference import evaluate_checkpoint, gather_images, load_for_inference, predict_paths

    model, names = load_for_inference("runs/fm/best.pth")
    paths, _ = gather_images(["shoe.png", "photos/"])  # folders are searched for images
    predictions, failures = predict_paths(model, paths, top_k=3, class_names=names)
    report = evaluate_checkpoint("runs/fm/best.pth", data="/data/fashion-mnist")

`crossvit predict`, `eval`, `attention`, `export` and `quantize` load their checkpoints here.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .deploy.quantize import is_quantized, load_quantized
from .errors import CrossViTError
from .model.checkpoint import StoredCheckpoint, read_checkpoint
from .model.crossvit import CrossViT
from .model.factory import create_model


def load_for_inference(checkpoint: str | os.PathLike | StoredCheckpoint, model_name: str | None = None, *,
                       device: str | torch.device | None = None, need_classifier: bool = True,
                       int8_error: str | None = None) -> tuple[CrossViT, list[str]]:
    """The checkpoint's model in eval mode, and its class names: the checkpoint's own, else the
    variant's, else class_0, class_1, ...

    checkpoint: a file (ours, the authors' or timm's; an int8 model from `crossvit quantize`), or
        one already read by `read_checkpoint`.
    model_name: the architecture, for files that do not record it.
    device: where the model goes; by default the GPU if there is one. An int8 model stays on the CPU,
        the only place its kernels run.
    need_classifier: refuse a model without classifier heads (num_classes=0).
    int8_error: refuse an int8 model with this message, where the fp32 weights are needed.
    """
    stored = checkpoint if isinstance(checkpoint, StoredCheckpoint) else read_checkpoint(checkpoint)
    quantized = is_quantized(stored)
    if quantized and int8_error:
        raise CrossViTError(int8_error)
    model = (load_quantized(stored) if quantized else create_model(model_name, checkpoint=stored)).eval()
    if need_classifier and model.num_classes == 0:
        raise CrossViTError(f"checkpoint {stored.origin} has no classifier heads (num_classes=0); "
                            "fine-tune it on labelled images first")
    if quantized or device is None:
        device = "cuda" if torch.cuda.is_available() and not quantized else "cpu"
    model.to(device)
    for names in (stored.meta.get("class_names"), model.meta.class_names if model.meta else None):
        if names and len(names) == model.num_classes:
            return model, list(names)
    return model, [f"class_{i}" for i in range(model.num_classes)]


def image_mode(model: CrossViT) -> str:
    """The PIL mode the model's first layer expects: grey for one channel, else RGB."""
    return "L" if model.config.in_chans == 1 else "RGB"


def gather_images(inputs: list[str]) -> tuple[list[str], list[dict]]:
    """Image paths from files and folders. Files named directly are kept whatever their extension
    (reading them decides); folders are searched recursively for image extensions. Returns the
    paths, and [{"path", "error"}] for the folders without images."""
    from .data.folders import IMAGE_EXTENSIONS, image_files  # crossvit.data loads timm: only when needed

    paths, failures = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = image_files(item)
            if not found:
                failures.append({"path": item, "error": f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"})
            paths.extend(found)
        else:
            paths.append(item)
    return paths, failures


def why_unreadable(path: str, error: Exception) -> str:
    """A short reason a file could not be read, for the one line that reports it."""
    if isinstance(error, FileNotFoundError):
        if os.path.islink(path):
            return f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "no such file"
    if isinstance(error, OSError) and error.errno == errno.ELOOP:
        return "symbolic link loop (the link leads back to itself)"
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"refused as a possible decompression bomb ({error})"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image PIL can read"
    return f"{type(error).__name__}: {error}"


def read_image(path: str, model: CrossViT) -> Tensor:
    """One image file, preprocessed for `model`: (C, H, W). A file that cannot be read is a
    CrossViTError naming it and saying why."""
    from .data.images import load_image
    from .data.transforms import eval_transform

    try:
        image = load_image(path, image_mode(model))
    except Exception as e:  # any decoder error becomes one line naming the file
        raise CrossViTError(f"cannot read image {path}: {why_unreadable(path, e)}") from None
    return eval_transform(model.meta)(image)


def probabilities(model: CrossViT, images: Tensor) -> Tensor:
    """Softmax of the logits (the heads averaged) of a batch of preprocessed images, in fp32."""
    with torch.inference_mode():
        return model(images.to(next(model.parameters()).device)).float().softmax(-1)


def predict_paths(model: CrossViT, paths: list[str], top_k: int = 5, batch_size: int = 32,
                  class_names: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Top-k classes of each readable image file, in the order given (folders: see gather_images).

    Returns (predictions, failures): [{"path", "top_k": [{"class", "index", "probability"}]}] and
    [{"path", "error"}] for files that could not be read. Puts the model in eval mode.
    """
    from .data.images import load_image
    from .data.transforms import eval_transform

    if model.meta is None:
        raise CrossViTError("the model has no preprocessing metadata (model.meta); build it with crossvit.create_model")
    model.eval()
    names = class_names or [f"class_{i}" for i in range(model.num_classes)]
    transform, mode = eval_transform(model.meta), image_mode(model)
    k = min(top_k, model.num_classes)
    predictions: list[dict] = []
    failures: list[dict] = []

    def flush(batch: list[Tensor], batch_paths: list[str]) -> None:
        values, indices = probabilities(model, torch.stack(batch)).topk(k, dim=-1)
        for path, vs, ix in zip(batch_paths, values.tolist(), indices.tolist()):
            top = [{"class": names[i], "index": i, "probability": v} for v, i in zip(vs, ix)]
            predictions.append({"path": path, "top_k": top})

    batch, batch_paths = [], []
    for path in map(str, paths):
        try:  # not read_image: one bad file is reported and the others go on
            batch.append(transform(load_image(path, mode)))
        except Exception as e:  # any decoder error: name the file, go on with the others
            failures.append({"path": path, "error": why_unreadable(path, e)})
            continue
        batch_paths.append(path)
        if len(batch) == batch_size:
            flush(batch, batch_paths)
            batch, batch_paths = [], []
    if batch:
        flush(batch, batch_paths)
    return predictions, failures


def validation_data(stored: StoredCheckpoint, model: CrossViT, data: str | None = None, dataset: str | None = None,
                    limit: int | None = None, workers: int = 0, batch_size: int = 256):
    """(loader, class names, data section) of the validation split a checkpoint's model is measured
    on: `data`/`dataset` where given, else the dataset the checkpoint was trained on, else a folder.
    The model's preprocessing; the images in order. Refuses a dataset with another class count."""
    from . import data as datasets
    from .runconfig import load_config

    trained_on = load_config(data=stored.run_config).data if stored.run_config else None
    data_cfg = load_config(data={"data": {
        "dataset": dataset or (trained_on.dataset if trained_on else "folder"),
        "path": data or (trained_on.path if trained_on else None),
        "limit_val": limit, "workers": workers,
    }}).data
    class_names = datasets.class_names(data_cfg)
    if len(class_names) != model.num_classes:
        raise CrossViTError(f"{stored.origin} predicts {model.num_classes} classes but {data_cfg.path or data_cfg.dataset} "
                            f"has {len(class_names)}; fine-tune it first (crossvit train ... model.checkpoint=...)")
    val_set = datasets.build_dataset(data_cfg, "val", model.meta, None, 0)
    on_gpu = next(model.parameters()).device.type == "cuda"
    return datasets.eval_loader(val_set, batch_size, workers, 0, 1, on_gpu), class_names, data_cfg


def evaluate_checkpoint(checkpoint: str, data: str | None = None, dataset: str | None = None,
                        model_name: str | None = None, batch_size: int = 256, workers: int = 0,
                        precision: str = "fp32", limit: int | None = None, output: str | None = None,
                        flip: bool = False) -> dict:
    """Top-1, top-5, loss, each head alone, per-class accuracy and the confusion matrix of
    `checkpoint` on a dataset's validation split; writes eval.json and confusion.png into `output`
    (default: beside the checkpoint) and returns the report that eval.json holds.

    data, dataset: where and what the images are (folder, fashion_mnist, cifar10, cifar100); by
        default the dataset the checkpoint was trained on, if it records one.
    precision: fp32, or bf16/fp16 autocast. flip: average each head over the image and its mirror.
    """
    from .training import distributed
    from .training.engine import evaluate
    from .training.plots import plot_confusion

    stored = read_checkpoint(checkpoint)  # read once: the model, and the data it was trained on
    int8_error = f"{checkpoint} is an int8 model, which runs in fp32 on the CPU; leave out --precision"
    model, _ = load_for_inference(stored, model_name, need_classifier=False,
                                  int8_error=None if precision == "fp32" else int8_error)
    loader, class_names, data_cfg = validation_data(stored, model, data, dataset, limit, workers, batch_size)
    world = distributed.World(0, 1, 0, next(model.parameters()).device)
    result = evaluate(model, loader, len(class_names), world, precision, flip=flip)

    out = Path(output) if output else Path(checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint), "dataset": data_cfg.dataset, "path": data_cfg.path,
              "top1": result.top1, "top5": result.top5, "loss": result.loss, "branch_top1": result.branch_top1,
              "samples": result.samples, "flip": flip, "unreadable": len(result.bad_files), "class_names": class_names,
              "per_class_top1": dict(zip(class_names, result.per_class)), "confusion": result.confusion,
              "confusion_png": str(out / "confusion.png")}
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    plot_confusion(result.confusion, class_names, out / "confusion.png",
                   title=f"{Path(checkpoint).name}: top-1 {result.top1:.2f}%")
    return report


def format_report(report: dict) -> str:
    """An `evaluate_checkpoint` report as the lines `crossvit eval` prints."""
    heads = " / ".join(f"{v:.2f}" for v in report["branch_top1"])
    mirrored = " (each with its mirror image)" if report.get("flip") else ""
    lines = [f"{report['checkpoint']} on {report['samples']} images{mirrored}: top-1 {report['top1']:.2f}%  "
             f"top-5 {report['top5']:.2f}%  loss {report['loss']:.4f}  heads alone {heads}"]
    width = max(len(c) for c in report["class_names"])
    lines += [f"  {name:<{width}}  {acc:6.2f}%" for name, acc in report["per_class_top1"].items()]
    if report["unreadable"]:
        lines.append(f"{report['unreadable']} unreadable image(s) skipped")
    lines.append(f"confusion matrix: {report['confusion_png']}")
    return "\n".join(lines)
