"""`crossvit attention CHECKPOINT IMAGE [--output DIR] [--per-head] [--rollout]`: overlays of
where each branch's CLS token looks, drawn over the preprocessed image, with the raw maps as .npy.

Everything is drawn in a hidden folder beside the output and moved in only once it is all
there, so a failure (an unreadable image, a full disk) leaves no half-written results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import CrossViTError
from ..analysis.attention import FUSIONS_WITH_ATTENTION, attention_maps
from ..inference import image_mode, load_for_inference, why_unreadable


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("attention", help="PNG overlays and .npy arrays of where each branch's CLS token looks")
    p.add_argument("checkpoint", help="a checkpoint (ours; the authors' or timm's with --model)")
    p.add_argument("image", help="one image file")
    p.add_argument("--output", help="folder for the PNGs and .npy files (default: ./attention-<image name>)")
    p.add_argument("--per-head", action="store_true", help="also each head alone: <map>_heads.png and <map>_heads.npy")
    p.add_argument("--rollout", action="store_true", help="add the attention rollout through each branch's blocks")
    p.add_argument("--model", help="model name, for checkpoints that do not record their architecture")
    p.set_defaults(run=run)


def describe(path: Path, maps: dict[str, np.ndarray]) -> str:
    """What a written file holds, for the list printed at the end."""
    if path.name == "attention.png":
        return "overview: a row per branch, heads averaged"
    heads = maps[path.stem.removesuffix("_heads")]
    if path.suffix == ".png":
        return f"{len(heads)} heads"
    shape = heads.shape if path.stem.endswith("_heads") else heads.shape[1:]
    return "array " + "x".join(map(str, shape))


def write_all(out: Path, draw: Callable[[Path], None]) -> list[Path]:
    """Call draw(folder) on a hidden folder beside `out`, then move what it wrote into `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        draw(staging)
        out.mkdir(exist_ok=True)
        names = sorted(os.listdir(staging))
        for name in names:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in names]


def run(args: argparse.Namespace) -> int:
    from ..data.images import load_image  # crossvit.data (timm) and matplotlib load slowly: only when needed
    from ..data.transforms import eval_transform
    from ..analysis.attention_plot import plot_heads, plot_overview, unnormalise

    out = Path(args.output or f"attention-{Path(args.image).stem}")
    if out.exists() and not out.is_dir():
        raise CrossViTError(f"--output {out} is a file; give a folder")
    model, class_names = load_for_inference(args.checkpoint, args.model)
    try:
        image = load_image(args.image, image_mode(model))
    except Exception as e:  # any decoder error becomes one line naming the file
        raise CrossViTError(f"cannot read image {args.image}: {why_unreadable(args.image, e)}") from None
    x = eval_transform(model.meta)(image)
    maps = attention_maps(model, x, with_rollout=args.rollout)
    with torch.inference_mode():
        probs = model(x.unsqueeze(0).to(next(model.parameters()).device)).float().softmax(-1)[0]
    best = int(probs.argmax())
    title = f"{Path(args.image).name}: {class_names[best]} {100 * probs[best]:.1f}%  ({Path(args.checkpoint).name})"
    picture = unnormalise(x, model.meta)

    def draw(folder: Path) -> None:
        plot_overview(picture, maps, folder / "attention.png", title)
        for name, heads in maps.items():
            np.save(folder / f"{name}.npy", heads.mean(0))
            if args.per_head and len(heads) > 1:  # a single head (rollout) is its own average
                np.save(folder / f"{name}_heads.npy", heads)
                plot_heads(picture, heads, folder / f"{name}_heads.png", f"{name}  ({title})")

    if model.config.fusion not in FUSIONS_WITH_ATTENTION:
        print(f"fusion '{model.config.fusion}' has no attention weights, so there are no fusion maps; "
              "showing each branch's self-attention only")
    for path in write_all(out, draw):
        print(f"{path}  {describe(path, maps)}")
    return 0
