"""`crossvit attention CHECKPOINT IMAGE [--output DIR] [--per-head] [--rollout]`: overlays of
where each branch's CLS token looks, drawn over the preprocessed image, with the raw maps as .npy."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("attention", help="PNG overlays and .npy arrays of where each branch's CLS token looks")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("image", help="one image file")
    p.add_argument("--output", help="folder for the PNGs and .npy files (default: ./attention-<image name>)")
    p.add_argument("--per-head", action="store_true", help="also each head alone: <map>_heads.png and <map>_heads.npy")
    p.add_argument("--rollout", action="store_true", help="add the attention rollout through each branch's blocks")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.attention import FUSIONS_WITH_ATTENTION
    from ..analysis.attention_plot import save_attention_figures  # matplotlib loads slowly: only when needed
    from ..errors import CrossViTError
    from ..inference import load_for_inference, read_image

    out = Path(args.output or f"attention-{Path(args.image).stem}")
    if out.exists() and not out.is_dir():
        raise CrossViTError(f"--output {out} is a file; give a folder")
    model, class_names = load_for_inference(args.checkpoint, args.model)
    image = read_image(args.image, model)
    written = save_attention_figures(model, image, out, class_names, image_name=Path(args.image).name,
                                     source=Path(args.checkpoint).name, per_head=args.per_head,
                                     with_rollout=args.rollout)
    if model.config.fusion not in FUSIONS_WITH_ATTENTION:
        print(f"fusion '{model.config.fusion}' has no attention weights, so there are no fusion maps; "
              "showing each branch's self-attention only")
    for path, contents in written:
        print(f"{path}  {contents}")
    return 0
