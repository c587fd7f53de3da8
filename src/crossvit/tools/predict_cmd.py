"""`crossvit predict CHECKPOINT IMAGE_OR_FOLDER... [--top-k K] [--json]`: the classes a checkpoint sees.

From Python:

    model, names = load_for_inference("runs/fm/best.pth")
    predictions, failures = predict_paths(model, ["shoe.png", "photos/"], top_k=3, class_names=names)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import CrossViTError
from ..model.checkpoint import read_checkpoint
from ..model.crossvit import CrossViT
from ..model.factory import create_model


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="top-k classes of images or folders of images")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders searched recursively")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes shown per image (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def load_for_inference(checkpoint: str | os.PathLike, model_name: str | None = None) -> tuple[CrossViT, list[str]]:
    """The checkpoint's model in eval mode (on the GPU if there is one) and its class names:
    the checkpoint's own, else the variant's, else class_0, class_1, ..."""
    from ..deploy.quantize import is_quantized, load_quantized

    stored = read_checkpoint(checkpoint)
    quantized = is_quantized(stored)  # int8 models run on the CPU only
    model = (load_quantized(stored) if quantized else create_model(model_name, checkpoint=stored)).eval()
    if model.num_classes == 0:
        raise CrossViTError(f"checkpoint {checkpoint} has no classifier heads (num_classes=0); fine-tune it on labelled images first")
    model.to("cuda" if torch.cuda.is_available() and not quantized else "cpu")
    for names in (stored.meta.get("class_names"), model.meta.class_names if model.meta else None):
        if names and len(names) == model.num_classes:
            return model, list(names)
    return model, [f"class_{i}" for i in range(model.num_classes)]


def image_mode(model: CrossViT) -> str:
    """The PIL mode the model's first layer expects: grey for one channel, else RGB."""
    return "L" if model.config.in_chans == 1 else "RGB"


def gather_images(inputs: list[str]) -> tuple[list[str], list[dict]]:
    """Files named directly are kept whatever their extension (reading them decides); folders
    are searched recursively for image extensions. Returns the paths and the folders without images."""
    from ..data.folders import IMAGE_EXTENSIONS, image_files  # crossvit.data loads timm: only when needed

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


def predict_paths(model: CrossViT, paths: list[str], top_k: int = 5, batch_size: int = 32,
                  class_names: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Top-k softmax probabilities of the averaged logits for each readable image, in the order given.

    Returns (predictions, failures): [{"path", "top_k": [{"class", "index", "probability"}]}] and
    [{"path", "error"}] for files that could not be read. Puts the model in eval mode.
    """
    from ..data.images import load_image
    from ..data.transforms import eval_transform

    if model.meta is None:
        raise CrossViTError("the model has no preprocessing metadata (model.meta); build it with crossvit.create_model")
    model.eval()
    names = class_names or [f"class_{i}" for i in range(model.num_classes)]
    transform, mode = eval_transform(model.meta), image_mode(model)
    device = next(model.parameters()).device
    k = min(top_k, model.num_classes)
    predictions: list[dict] = []
    failures: list[dict] = []

    def flush(batch: list[torch.Tensor], batch_paths: list[str]) -> None:
        with torch.inference_mode():
            probs = model(torch.stack(batch).to(device)).float().softmax(-1)
        values, indices = probs.topk(k, dim=-1)
        for path, vs, ix in zip(batch_paths, values.tolist(), indices.tolist()):
            top = [{"class": names[i], "index": i, "probability": v} for v, i in zip(vs, ix)]
            predictions.append({"path": path, "top_k": top})

    batch, batch_paths = [], []
    for path in map(str, paths):
        try:
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


def run(args: argparse.Namespace) -> int:
    from ..data.folders import IMAGE_EXTENSIONS

    model, names = load_for_inference(args.checkpoint, args.model)
    paths, failures = gather_images(args.inputs)
    if not paths:
        raise CrossViTError(f"no images found in {' '.join(args.inputs)}; give image files or folders holding "
                            f"{', '.join(IMAGE_EXTENSIONS)} files")
    predictions, unreadable = predict_paths(model, paths, args.top_k, args.batch_size, names)
    failures += unreadable
    for failure in failures:
        print(f"crossvit predict: {failure['path']}: {failure['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "predictions": predictions, "failed": failures}, indent=2))
    else:
        width = max(len(p["path"]) for p in predictions) if predictions else 0
        for p in predictions:
            top = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in p["top_k"])
            print(f"{p['path']:<{width}}  {top}")
    return 1 if failures else 0
