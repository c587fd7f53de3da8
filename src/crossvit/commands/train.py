"""`crossvit train RECIPE [--data PATH] [--output DIR] [--resume] [KEY=VALUE ...]`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a CrossViT from a recipe",
        description="Train from a recipe (a YAML file, or the name of one in crossvit/configs). "
                    "KEY=VALUE arguments change any config key: epochs=5 optim.lr=1e-3 model.name=crossvit_9_240. "
                    "Under torchrun the same command trains with one process per GPU or CPU (DDP).")
    p.add_argument("recipe", help="recipe name (e.g. fashion_mnist) or YAML file; ignored with --resume")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config changes")
    p.add_argument("--data", help="dataset location (sets data.path)")
    p.add_argument("--output", help="run directory (default: runs/RECIPE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output where it stopped")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CrossViTError
    from ..runconfig import recipe_path
    from ..training.trainer import start_or_resume, train

    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    if args.resume and not args.output:
        raise CrossViTError("--resume needs --output DIR, the run to continue")
    output = Path(args.output or f"runs/{recipe_path(args.recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    config, state = start_or_resume(output, args.recipe, overrides, resume=args.resume)
    result = train(config, output, state, command=args.command_line)
    if not result.main_process:
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"stopped after saving {output / 'last.pth'}; continue with: "
              f"crossvit train {args.recipe} --output {output} --resume")
        return 130
    if result.final is not None:
        f = result.final
        print(f"\ndone in {result.seconds / 60:.1f} min: val top-1 {f.top1:.2f}%, top-5 {f.top5:.2f}%, "
              f"heads alone {' / '.join(f'{v:.2f}' for v in f.branch_top1)}; best top-1 {result.best_top1:.2f}% "
              f"(epoch {result.best_epoch})")
    if result.bad_files:
        print(f"{result.bad_files} unreadable image(s) skipped (named in the log above)")
    print(f"run directory {output}: config.yaml, metrics.jsonl, curves.png, last.pth, best.pth")
    return 0
