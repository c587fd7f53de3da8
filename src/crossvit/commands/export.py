"""`crossvit export CHECKPOINT --format onnx|torch-export|safetensors|hub`: a checked, self-describing copy."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import int_at_least


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a checkpoint as ONNX, a torch.export program, our safetensors file or a Hub folder",
        description="Export a checkpoint for inference elsewhere. ONNX and torch.export files take images of any "
                    "batch size; each file is loaded back and compared with the PyTorch model before it is kept. "
                    "--format hub writes the Hugging Face Hub layout (config.json, model.safetensors and a model "
                    "card filled from the run: dataset, recipe, top-1, command) into a folder.")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("--format", required=True, choices=("onnx", "torch-export", "safetensors", "hub"),
                   dest="fmt")
    p.add_argument("--output", help="output file (default: the checkpoint's name with .onnx, .pt2 or .safetensors), "
                                    "or with --format hub a folder (default: NAME-hub beside the checkpoint); "
                                    "missing folders are created")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--batch-size", type=int_at_least(1), default=2,
                   help="batch of the example traced (default 2); the check runs batch 1 and this plus one")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import FORMATS, check_output_path, export, export_hub
    from ..errors import CrossViTError
    from ..inference import load_for_inference
    from ..model.checkpoint import read_checkpoint
    from ..model.hub import card_from_run
    from ..training.rundir import read_commands

    source, hub = Path(args.checkpoint), args.fmt == "hub"
    default = source.with_name(f"{source.stem}-hub") if hub else source.with_suffix(FORMATS[args.fmt])
    output = Path(args.output) if args.output else default
    # realpath, not Path.resolve: that raises RuntimeError on a symlink loop (Python < 3.13).
    if os.path.realpath(output) == os.path.realpath(source):
        raise CrossViTError(f"exporting {source} would overwrite it; name another file with --output")
    if args.opset is not None and args.fmt != "onnx":
        raise CrossViTError(f"--opset applies to --format onnx only, not {args.fmt}")
    # Before reading and tracing the model, which take a while. A hub folder's files go inside it.
    check_output_path(output / "config.json" if hub else output)
    stored = read_checkpoint(source)
    model, _ = load_for_inference(stored, args.model, device="cpu", need_classifier=False, int8_error=(
        f"{source} is an int8 model from `crossvit quantize`, which runs only in PyTorch on the CPU; "
        "export the fp32 checkpoint it was made from"))
    if hub:  # the model card tells of the run the checkpoint comes from, when it does
        card = card_from_run(stored.run_config, stored.progress, next(iter(read_commands(source.parent)), None))
        diff = export_hub(model, output, card)
        print(f"wrote {output}: config.json, model.safetensors and README.md (the model card); read back through "
              f"local-dir:, max |difference| {diff:.2e}. Share it with huggingface_hub: "
              f"HfApi().upload_folder(folder_path=\"{output}\", repo_id=\"ORG/NAME\")")
        return 0
    diff = export(model, output, args.fmt, args.opset, args.batch_size)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB): max |difference| from the PyTorch model "
          f"{diff:.2e} on random images")
    return 0
