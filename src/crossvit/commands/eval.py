"""`crossvit eval CHECKPOINT --data PATH [--json]`: accuracy of a checkpoint on a dataset."""

from __future__ import annotations

import argparse
import json

from . import int_at_least


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5/loss, each head alone, per-class accuracy, confusion matrix")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("--data", help="dataset location (default: the one the checkpoint was trained on)")
    p.add_argument("--dataset", choices=("fashion_mnist", "folder", "cifar10", "cifar100"),
                   help="dataset kind (default: the checkpoint's, else folder)")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.add_argument("--batch-size", type=int_at_least(1), default=256)
    p.add_argument("--workers", type=int_at_least(0), default=0)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--limit", type=int_at_least(1), help="evaluate the first N images only")
    p.add_argument("--flip", action="store_true", help="average each head over the image and its mirror image")
    p.add_argument("--output", help="where to write confusion.png and eval.json (default: beside the checkpoint)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import evaluate_checkpoint, format_report

    report = evaluate_checkpoint(args.checkpoint, args.data, args.dataset, args.model, args.batch_size,
                                 args.workers, args.precision, args.limit, args.output, args.flip)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
