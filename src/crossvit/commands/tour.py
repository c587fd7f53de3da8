"""`crossvit tour`: the model library at work in a few seconds on a CPU.

It builds a published variant and a small one, runs them, saves a checkpoint that rebuilds
itself, and shows what the paper's fusion schemes cost.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tour", help="build, run, save and reload CrossViTs (a quick tour of the library)")
    p.add_argument("--output", default="runs/tour", help="where to write the tour's checkpoint (default: runs/tour)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.flops import count_params, model_macs
    from ..model.checkpoint import save_checkpoint
    from ..model.factory import create_model

    torch.manual_seed(0)
    out = Path(args.output)

    model = create_model("crossvit_9_240").eval()
    images = torch.randn(8, 3, 240, 240)
    with torch.inference_mode():
        start = time.perf_counter()
        logits = model(images)
        seconds = time.perf_counter() - start
        per_branch = model.branch_logits(model.forward_features(images))
    print(f"crossvit_9_240: {count_params(model):,} params, {model_macs(model) / 1e9:.2f} GMACs; "
          f"a batch of 8 at 240 px -> logits {tuple(logits.shape)} in {seconds * 1000:.0f} ms "
          f"({8 / seconds:.1f} img/s on {torch.get_num_threads()} threads)")
    print(f"  per-branch heads: {[tuple(b.shape) for b in per_branch]}, averaged into the logits")

    path = save_checkpoint(model, out / "crossvit_9_240.safetensors")
    rebuilt = create_model(checkpoint=path).eval()
    with torch.inference_mode():
        same = torch.equal(rebuilt(images), logits)
    print(f"  saved to {path} and rebuilt from the file alone: identical logits = {same}")

    bigger = create_model("crossvit_9_240", img_size=408).eval()
    print(f"  the same architecture at 408 px: branch inputs {[b.img_size for b in bigger.config.branches]}, "
          f"grids {bigger.grids}, {model_macs(bigger) / 1e9:.2f} GMACs")

    print("\nFusion schemes of the paper's Table 6, on crossvit_small_240 (GMACs / M params):")
    for fusion in ("none", "class_token", "pairwise", "cross_attention", "all_attention"):
        m = create_model("crossvit_small_240", fusion=fusion)
        print(f"  {fusion:16s} {model_macs(m) / 1e9:5.2f} / {count_params(m) / 1e6:5.2f}")

    small = create_model("crossvit_micro_28")
    print(f"\ncrossvit_micro_28 for Fashion-MNIST: {count_params(small):,} params, "
          f"{model_macs(small) / 1e6:.0f} MMACs per 28x28 grey image, {small.num_classes} classes")
    three = create_model("crossvit_micro_32", patch_size=(4, 8, 16), img_size=32, dim=(64, 128, 128),
                         depth=(1, 2, 2), num_heads=(2, 4, 4), mlp_ratio=3.0, tokenizer="linear")
    loss = three(torch.randn(4, 3, 32, 32)).logsumexp(-1).mean()
    loss.backward()
    print(f"a three-branch CrossViT (patches 4/8/16): {count_params(three):,} params, forward and backward ran")
    return 0
