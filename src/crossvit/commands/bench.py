"""`crossvit bench MODEL [--compare timm]`: latency, throughput and training speed, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


# analysis.benchmark's modes and precisions (tests/test_bench.py keeps them equal), named here so that
# building the parser does not import torch.
MODES = ("latency", "infer", "train")
PRECISIONS = ("fp32", "bf16", "fp16")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="time inference and training, optionally against timm's CrossViT")
    p.add_argument("model", help="a registered variant, e.g. crossvit_9_240")
    p.add_argument("--mode", nargs="+", choices=MODES, default=["latency", "infer"],
                   help="latency: batch 1; infer: img/s at --batch-size; train: forward+backward+AdamW step")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                   help="fp32, or bf16/fp16 autocast")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--compile", choices=("off", "on", "both"), default="off", help="torch.compile the models")
    p.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"), default="default",
                   help="torch.compile's mode (reduce-overhead: CUDA graphs on GPU)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay inference as one CUDA graph, captured once (both models; CUDA, latency/infer only)")
    p.add_argument("--img-size", type=int, help="input size (default: the variant's)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the GPU if there is one)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per setting")
    p.add_argument("--round-seconds", type=float, default=2.0, help="length of one round of one contender")
    p.add_argument("--compare", choices=("timm",), help="also time timm's model with the same weights")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--csv", metavar="PATH", help="also write the results as CSV")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.bench_report import bench_report, format_table, to_csv

    report = bench_report(args.model, args.mode, args.precision, args.batch_size, args.compile, args.compile_mode,
                          args.cuda_graph, args.img_size, args.device, args.threads, args.rounds, args.round_seconds,
                          compare_timm=args.compare == "timm")
    if args.csv:
        from ..files import atomic_write

        text = to_csv(report)
        atomic_write(Path(args.csv), lambda tmp: Path(tmp).write_text(text))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
