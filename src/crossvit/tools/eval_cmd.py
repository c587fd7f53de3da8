"""`crossvit eval CHECKPOINT --data PATH [--json]`: accuracy of a checkpoint on a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def count(least: int):
    """An argparse type: an int of at least `least` (a batch of 0 crashed deep inside the DataLoader)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5/loss, each head alone, per-class accuracy, confusion matrix")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("--data", help="dataset location (default: the one the checkpoint was trained on)")
    p.add_argument("--dataset", choices=("fashion_mnist", "folder", "cifar10", "cifar100"),
                   help="dataset kind (default: the checkpoint's, else folder)")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.add_argument("--batch-size", type=count(1), default=256)
    p.add_argument("--workers", type=count(0), default=0)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--limit", type=count(1), help="evaluate the first N images only")
    p.add_argument("--flip", action="store_true", help="average each head over the image and its mirror image")
    p.add_argument("--output", help="where to write confusion.png and eval.json (default: beside the checkpoint)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def evaluate_checkpoint(checkpoint: str, data: str | None = None, dataset: str | None = None,
                        model_name: str | None = None, batch_size: int = 256, workers: int = 0,
                        precision: str = "fp32", limit: int | None = None, output: str | None = None,
                        flip: bool = False) -> dict:
    """Evaluate `checkpoint` on the validation split; write eval.json and confusion.png; return the report."""
    import torch

    from .. import data as datasets
    from ..errors import CrossViTError
    from ..model.checkpoint import read_checkpoint
    from ..model.factory import create_model
    from ..quantize import is_quantized, load_quantized
    from ..training import distributed
    from ..runconfig import load_config
    from ..training.engine import evaluate
    from ..training.plots import plot_confusion

    stored = read_checkpoint(checkpoint)
    quantized = is_quantized(stored)  # written by `crossvit quantize`: int8 kernels, on the CPU, in fp32
    if quantized and precision != "fp32":
        raise CrossViTError(f"{checkpoint} is an int8 model, which runs in fp32 on the CPU; leave out --precision")
    model = load_quantized(stored) if quantized else create_model(model_name, checkpoint=stored)  # the file is read once
    trained_on = load_config(data=stored.run_config).data if stored.run_config else None
    data_cfg = load_config(data={"data": {
        "dataset": dataset or (trained_on.dataset if trained_on else "folder"),
        "path": data or (trained_on.path if trained_on else None),
        "limit_val": limit, "workers": workers,
    }}).data
    class_names = datasets.class_names(data_cfg)
    if len(class_names) != model.num_classes:
        raise CrossViTError(f"{checkpoint} predicts {model.num_classes} classes but {data_cfg.path or data_cfg.dataset} "
                            f"has {len(class_names)}; fine-tune it first (crossvit train ... model.checkpoint=...)")
    world = distributed.World(0, 1, 0, torch.device("cuda" if torch.cuda.is_available() and not quantized else "cpu"))
    model.to(world.device)
    val_set = datasets.build_dataset(data_cfg, "val", model.meta, None, 0)
    loader = datasets.eval_loader(val_set, batch_size, workers, 0, 1, world.device.type == "cuda")
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


def run(args: argparse.Namespace) -> int:
    report = evaluate_checkpoint(args.checkpoint, args.data, args.dataset, args.model, args.batch_size,
                                 args.workers, args.precision, args.limit, args.output, args.flip)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
