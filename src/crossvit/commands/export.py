"""`crossvit export CHECKPOINT --format onnx|torch-export|safetensors`: a checked, self-describing copy."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a checkpoint as ONNX, a torch.export program or our safetensors file",
        description="Export a checkpoint for inference elsewhere. ONNX and torch.export files take images of any "
                    "batch size; each file is loaded back and compared with the PyTorch model before it is kept.")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("--format", required=True, choices=("onnx", "torch-export", "safetensors"), dest="fmt")
    p.add_argument("--output", help="output file (default: the checkpoint's name with .onnx, .pt2 or .safetensors); "
                                    "missing folders are created")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--batch-size", type=int, default=2,
                   help="batch of the example traced (default 2); the check runs batch 1 and this plus one")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import FORMATS, check_output_path, export
    from ..errors import CrossViTError
    from ..inference import load_for_inference

    source = Path(args.checkpoint)
    output = Path(args.output) if args.output else source.with_suffix(FORMATS[args.fmt])
    # realpath, not Path.resolve: that raises RuntimeError on a symlink loop (Python < 3.13).
    if os.path.realpath(output) == os.path.realpath(source):
        raise CrossViTError(f"exporting {source} would overwrite it; name another file with --output")
    if args.opset is not None and args.fmt != "onnx":
        raise CrossViTError(f"--opset applies to --format onnx only, not {args.fmt}")
    if args.batch_size < 1:
        raise CrossViTError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_output_path(output)  # before reading and tracing the model, which take a while
    model, _ = load_for_inference(source, args.model, device="cpu", need_classifier=False, int8_error=(
        f"{source} is an int8 model from `crossvit quantize`, which runs only in PyTorch on the CPU; "
        "export the fp32 checkpoint it was made from"))
    diff = export(model, output, args.fmt, args.opset, args.batch_size)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB): max |difference| from the PyTorch model "
          f"{diff:.2e} on random images")
    return 0
