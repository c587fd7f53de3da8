"""`crossvit info CHECKPOINT`: what a checkpoint file holds and which model it fits."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a checkpoint: its layout, architecture and metadata")
    p.add_argument("checkpoint", help="a .safetensors or .pth file (ours, the authors' release or timm's)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..model.checkpoint import read_checkpoint

    stored = read_checkpoint(args.checkpoint)
    info = {
        "file": stored.origin,
        "layout": stored.layout,
        "tensors": len(stored.state),
        "params": sum(v.numel() for v in stored.state.values()),
        "config": stored.config.to_dict() if stored.config else None,
        "meta": stored.meta or None,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['file']}: {info['layout']} layout, {info['tensors']} tensors, {info['params']:,} values")
    if stored.config is None:
        print("  no architecture recorded: load it with create_model(NAME, checkpoint=...)")
    else:
        c = stored.config
        print(f"  {c.num_branches} branches, K={c.num_encoders}, fusion={c.fusion}, {c.num_classes} classes, "
              f"{c.img_size} px, {c.in_chans} channels")
        for i, b in enumerate(c.branches):
            print(f"  branch {i}: patch {b.patch_size} at {b.img_size} px, dim {b.dim}, depth {b.depth}, "
                  f"{b.num_heads} heads, {b.tokenizer} tokenizer")
    if stored.meta.get("name"):
        print(f"  model: {stored.meta['name']}")
    return 0
