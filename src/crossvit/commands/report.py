"""`crossvit report RUN_DIR [--output FILE] [--worst N]`: one self-contained report.html of a run."""

from __future__ import annotations

import argparse

from . import int_at_least


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="one self-contained report.html of a run: curves, per-class accuracy, confusion, mistakes",
        description="Evaluate a run's best weights on its validation images and write one HTML file (figures "
                    "inside it) to open in any browser: training curves, accuracy by class, confusion matrix, the "
                    "images the model gets most wrong with its attention maps, the epochs, the command and config.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder `crossvit train --output` wrote")
    p.add_argument("--output", help="the HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--checkpoint", help="the weights to evaluate: a file, or a name in RUN_DIR (default: best.pth, "
                                        "else last.pth)")
    p.add_argument("--data", help="where the validation images are, if not where the run read them")
    p.add_argument("--worst", type=int_at_least(0), default=12, help="how many of the worst mistakes to show (12)")
    p.add_argument("--limit", type=int_at_least(1), help="evaluate the first N validation images only")
    p.add_argument("--batch-size", type=int_at_least(1), default=256)
    p.add_argument("--workers", type=int_at_least(0), default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import write_report

    path = write_report(args.run_dir, args.output, args.checkpoint, args.data, args.worst, args.limit,
                        args.batch_size, args.workers)
    print(f"wrote {path} ({path.stat().st_size / 2**10:.0f} KiB): open it in a browser")
    return 0
