"""`crossvit quantize CHECKPOINT [--output PATH] [--bench] [--data PATH]`: an int8 model for CPU inference."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import int_at_least

if TYPE_CHECKING:  # torch is imported when a command runs, not when `crossvit --help` does
    import torch
    from torch import nn


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quantize", help="int8 dynamic quantization of the Linear layers for CPU inference",
        description="Quantize a checkpoint's Linear layers to int8 (dynamic activations) and save the result, "
                    "which `crossvit eval` reads. --bench times fp32 against int8; --data compares their top-1.")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("--output", help="output file (default: CHECKPOINT's name with .int8.safetensors)")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.add_argument("--bench", action="store_true", help="time fp32 and int8 on the CPU (batch --bench-batch)")
    p.add_argument("--bench-batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per model with --bench")
    p.add_argument("--data", help="dataset to compare fp32 and int8 top-1 on (default: none)")
    p.add_argument("--dataset", choices=("fashion_mnist", "folder", "cifar10", "cifar100"),
                   help="dataset kind (default: the checkpoint's, else folder)")
    p.add_argument("--limit", type=int_at_least(1), help="compare on the first N images only")
    p.add_argument("--batch-size", type=int_at_least(1), default=256, help="evaluation batch size")
    p.set_defaults(run=run)


def compare_speed(models: dict[str, nn.Module], images: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Images per second of each model in each round; one batch per model per round, the models
    taking turns, so that a slow spell of a shared machine hits them alike."""
    import torch

    from ..analysis.benchmark import time_interleaved

    def step(model: nn.Module) -> Callable[[], None]:
        def infer() -> None:
            with torch.inference_mode():
                model(images)
        return infer

    seconds = time_interleaved({name: step(m) for name, m in models.items()}, images.device, rounds, min_seconds=0)
    return {name: [len(images) / s for s in per_round] for name, per_round in seconds.items()}


def format_speeds(speeds: dict[str, list[float]]) -> str:
    """img/s (min and median) per model, and the median speed-up of the last model over the first."""
    lines = [f"{name:>7}: {min(v):7.1f} img/s min, {statistics.median(v):7.1f} median over {len(v)} rounds"
             for name, v in speeds.items()]
    first, last = list(speeds.values())[0], list(speeds.values())[-1]
    lines.append(f"speed-up (median): {statistics.median(last) / statistics.median(first):.2f}x")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import CrossViTError
    from ..deploy.export import random_images
    from ..deploy.quantize import quantize_model, save_quantized
    from ..inference import evaluate_checkpoint, load_for_inference

    source = Path(args.checkpoint)
    output = Path(args.output) if args.output else source.with_name(f"{source.stem}.int8.safetensors")
    if output.resolve() == source.resolve():
        raise CrossViTError(f"quantizing {source} would overwrite it; name another file with --output")
    if args.bench_batch < 1 or args.rounds < 1:
        raise CrossViTError("--bench-batch and --rounds must be at least 1")
    model, _ = load_for_inference(source, args.model, device="cpu", need_classifier=False,
                                  int8_error=f"{source} is already an int8 model; quantize the fp32 checkpoint it was made from")
    quantized = quantize_model(model)
    save_quantized(quantized, output)
    images = random_images(model, 8)
    with torch.inference_mode():
        diff = (quantized(images) - model(images)).abs().max().item()
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB): max |logit difference| from fp32 {diff:.3g} "
          "on random images")

    if args.bench:
        speeds = compare_speed({"fp32": model, "int8": quantized}, random_images(model, args.bench_batch),
                               args.rounds)
        print(f"CPU speed, batch {args.bench_batch}, {torch.get_num_threads()} threads:\n{format_speeds(speeds)}")
    if args.data or args.dataset:
        with tempfile.TemporaryDirectory() as scratch:  # eval.json and confusion.png are not wanted here
            fp32 = evaluate_checkpoint(str(source), args.data, args.dataset, args.model, args.batch_size,
                                       limit=args.limit, output=scratch)
            # The int8 file does not record the training data; the source checkpoint may have.
            int8 = evaluate_checkpoint(str(output), fp32["path"], fp32["dataset"], None, args.batch_size,
                                       limit=args.limit, output=scratch)
        print(f"top-1 on {fp32['samples']} images: fp32 {fp32['top1']:.2f}%, int8 {int8['top1']:.2f}% "
              f"(change {int8['top1'] - fp32['top1']:+.2f} points)")
    return 0
