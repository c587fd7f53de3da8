"""The table `crossvit models` prints: every registered variant, with params and GMACs counted
on the real network beside the paper's and timm's numbers."""

from __future__ import annotations

import torch

from ..model import CrossViT, get_variant
from .flops import count_macs, count_params


def describe(name: str) -> dict:
    """One variant's row: its architecture in brief, params and GMACs counted on the model, and
    the published numbers (None where there are none)."""
    variant = get_variant(name)
    config, meta = variant.config, variant.meta
    with torch.device("meta"):  # counting needs shapes, not values: skip the weight init
        model = CrossViT(config).eval()
        macs = count_macs(model, torch.zeros(1, config.in_chans, config.img_size, config.img_size))
    return {
        "name": name,
        "official_name": meta.official_name,
        "input_size": list(meta.input_size),
        "branches": [f"{b.patch_size}px/{b.img_size} d{b.dim} x{b.depth}" for b in config.branches],
        "tokenizer": config.branches[0].tokenizer,
        "num_classes": config.num_classes,
        "params": count_params(model),
        "gmacs": round(macs / 1e9, 3),
        "paper_params_m": meta.paper_params_m,
        "paper_gflops": meta.paper_gflops,
        "paper_top1": meta.paper_top1,
        "timm_top1": meta.timm_top1,
    }


def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def format_table(rows: list[dict]) -> str:
    """`describe` rows as an aligned text table, with a note on what is counted."""
    header = ["model", "authors' name", "input", "params", "GMACs", "paper M", "paper GFLOPs", "paper top-1", "timm top-1"]
    body = [[
        r["name"], _cell(r["official_name"]), "x".join(map(str, r["input_size"])), f"{r['params']:,}",
        f"{r['gmacs']:.2f}", _cell(r["paper_params_m"]), _cell(r["paper_gflops"]), _cell(r["paper_top1"]),
        _cell(r["timm_top1"]),
    ] for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = ("GMACs: multiply-accumulates of one forward pass, attention matmuls included, counted on the model "
             "(the paper calls them FLOPs).\nThe paper's params for Ti/S/B/15 leave out the position embeddings.")
    return "\n".join(lines) + "\n\n" + notes
