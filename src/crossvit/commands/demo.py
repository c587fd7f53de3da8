"""`crossvit demo`: train the Fashion-MNIST recipe on this machine, evaluate it, show the results."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="train crossvit_micro_28 on Fashion-MNIST (about 10 minutes on 2 cores)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="changes to the fashion_mnist recipe")
    p.add_argument("--output", default="runs/demo-fashion-mnist", help="run directory (continued if it exists)")
    p.add_argument("--data", help="Fashion-MNIST's folder (default /usr/share/datasets/fashion-mnist)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import write_report
    from ..inference import evaluate_checkpoint, format_report
    from ..training.trainer import start_or_resume, train

    output = Path(args.output)
    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    # An interrupted or finished demo continues.
    config, state = start_or_resume(output, "fashion_mnist", overrides, resume="if_started")
    length = (f"{config.train.time_limit:g} minutes (at most {config.epochs} epochs)" if config.train.time_limit
              else f"{config.epochs} epochs")
    print(f"training {config.model.name} on Fashion-MNIST for {length} into {output}" + (" (continuing)" if state else ""))
    result = train(config, output, state, command=args.command_line)
    if result.interrupted:
        print(f"stopped; `crossvit demo --output {output}` continues where it stopped")
        return 130
    report = evaluate_checkpoint(str(output / "best.pth"), output=str(output / "eval"))
    print("\n" + format_report(report))
    if result.expectation:
        print(result.expectation)
    files = (f"\nrun directory {output}:\n"
             f"  config.yaml    the resolved recipe\n"
             f"  metrics.jsonl  one line per epoch\n"
             f"  curves.png     loss, top-1 of the heads averaged and alone, learning rate\n"
             f"  best.pth       the best weights (crossvit eval / create_model(checkpoint=...) read it)\n"
             f"  eval/          eval.json and confusion.png of best.pth on the 10,000 test images")
    if config.aug.hflip > 0:  # mirror averaging helps only a model that was shown mirrored images
        flipped = evaluate_checkpoint(str(output / "best.pth"), output=str(output / "eval-flip"), flip=True)
        print(f"averaging each image with its mirror image (crossvit eval --flip): top-1 {flipped['top1']:.2f}%")
        files += "\n  eval-flip/     the same, each image averaged with its mirror image"
    write_report(output)
    files += "\n  report.html    all of it on one page, with the images it gets most wrong: open it in a browser"
    print(files)
    return 0
