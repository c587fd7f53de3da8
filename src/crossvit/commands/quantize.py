"""`crossvit quantize CHECKPOINT [--output PATH] [--bench] [--data PATH]`: an int8 model for CPU inference."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import int_at_least


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


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.benchmark import compare_speed, format_speeds
    from ..deploy.export import max_difference, random_images
    from ..deploy.quantize import compare_accuracy, quantize_model, save_quantized
    from ..errors import CrossViTError
    from ..inference import load_for_inference

    source = Path(args.checkpoint)
    output = Path(args.output) if args.output else source.with_name(f"{source.stem}.int8.safetensors")
    if output.resolve() == source.resolve():
        raise CrossViTError(f"quantizing {source} would overwrite it; name another file with --output")
    if args.bench_batch < 1 or args.rounds < 1:
        raise CrossViTError("--bench-batch and --rounds must be at least 1")
    model, _ = load_for_inference(source, args.model, device="cpu", need_classifier=False, int8_error=(
        f"{source} is already an int8 model; quantize the fp32 checkpoint it was made from"))
    quantized = quantize_model(model)
    save_quantized(quantized, output)
    diff = max_difference(model, quantized, batch_sizes=(8,))
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB): max |logit difference| from fp32 {diff:.3g} "
          "on random images")

    if args.bench:
        speeds = compare_speed({"fp32": model, "int8": quantized}, random_images(model, args.bench_batch),
                               args.rounds)
        print(f"CPU speed, batch {args.bench_batch}, {torch.get_num_threads()} threads:\n{format_speeds(speeds)}")
    if args.data or args.dataset:
        fp32, int8 = compare_accuracy(source, output, args.data, args.dataset, args.model, args.batch_size, args.limit)
        print(f"top-1 on {fp32['samples']} images: fp32 {fp32['top1']:.2f}%, int8 {int8['top1']:.2f}% "
              f"(change {int8['top1'] - fp32['top1']:+.2f} points)")
    return 0
