"""Where each branch's CLS token looks: attention maps read out of a CrossViT's attention layers.

`attention_maps(model, image)` returns (heads, grid, grid) arrays, one CLS token's attention
weights over one branch's patches laid out on that branch's patch grid, named:

    encoder{k}_self_branch{b}                 last block of branch b in encoder k, over its own patches
    encoder{k}_fusion{l}_branch{i}_over_branch{j}
                                              fusion layer l of encoder k: branch i's CLS over branch j's
                                              patches (cross-attention: j = i+1 cyclically;
                                              all-attention: every other branch)
    branch{b}_rollout                         attention rollout through every block of branch b (one "head")

The weight the CLS token gives itself (and, in all-attention, other tokens) is left out, so a map
sums to less than 1: what is left is how much the token reads from the patches.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import Tensor

from ..errors import CrossViTError
from ..model.crossvit import CrossViT

FUSIONS_WITH_ATTENTION = ("cross_attention", "all_attention")


def rollout(attentions: list[Tensor]) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) through layers given in order, each (heads, N, N).

    Each layer: average the heads, add the identity for the residual connection that carries a
    token past the attention, renormalise the rows, then chain the layers by matrix product.
    Row q of the (N, N) result: how much of token q's last state comes from each input token.
    """
    flow = torch.eye(attentions[0].shape[-1], dtype=torch.float64, device=attentions[0].device)
    for weights in attentions:
        mixed = weights.double().mean(0) + torch.eye(weights.shape[-1], dtype=torch.float64, device=weights.device)
        flow = (mixed / mixed.sum(-1, keepdim=True)) @ flow
    return flow


def query_branch(name: str) -> int:
    """The branch whose CLS token asks the question in map `name` (the first branch it names)."""
    return int(re.search(r"branch(\d+)", name).group(1))


def attention_maps(model: CrossViT, image: Tensor, with_rollout: bool = False) -> dict[str, np.ndarray]:
    """Run one preprocessed image, (C, H, W) or (1, C, H, W), and read its attention maps (see the
    module's docstring). Puts the model in eval mode and leaves `keep_attention` off."""
    if not model.config.cls_token:
        raise CrossViTError("attention maps need a CLS token to ask where the model looks; "
                            "this model was built with cls_token=False")
    x = image if image.ndim == 4 else image.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise CrossViTError(f"attention_maps takes one image, (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    model.eval()
    model.keep_attention(True)
    try:
        with torch.inference_mode():
            model(x.to(next(model.parameters()).device))
        return _read_maps(model, with_rollout)
    finally:
        model.keep_attention(False)


def _read_maps(model: CrossViT, with_rollout: bool) -> dict[str, np.ndarray]:
    grids, n = model.grids, len(model.grids)

    def on_grid(weights: Tensor, branch: int) -> np.ndarray:  # (heads, g*g) -> (heads, g, g)
        g = grids[branch]
        return weights.reshape(weights.shape[0], g, g).float().cpu().numpy()

    maps: dict[str, np.ndarray] = {}
    for k, encoder in enumerate(model.encoders):
        for b, blocks in enumerate(encoder.branches):
            if len(blocks):
                maps[f"encoder{k}_self_branch{b}"] = on_grid(blocks[-1].attn.attention[0, :, 0, 1:], b)
        if model.config.fusion == "cross_attention":
            # Branch i's CLS (projected) is the only query; its keys are [itself || patches of j].
            for i, layers in enumerate(encoder.fusion.attend):
                j = (i + 1) % n
                for depth, layer in enumerate(layers):
                    maps[f"encoder{k}_fusion{depth}_branch{i}_over_branch{j}"] = on_grid(layer.attention[0, :, 0, 1:], j)
        elif model.config.fusion == "all_attention":
            # One sequence of every branch's tokens, each branch's CLS first: find the CLS rows and patch spans.
            starts = np.cumsum([0] + [1 + g * g for g in grids]).tolist()
            for depth, attn in enumerate(encoder.fusion.attns):
                for i in range(n):
                    row = attn.attention[0, :, starts[i]]
                    for j in range(n):
                        if j != i:
                            patches = row[:, starts[j] + 1:starts[j + 1]]
                            maps[f"encoder{k}_fusion{depth}_branch{i}_over_branch{j}"] = on_grid(patches, j)
    if with_rollout:
        for b in range(n):
            layers = [block.attn.attention[0] for encoder in model.encoders for block in encoder.branches[b]]
            if layers:
                maps[f"branch{b}_rollout"] = on_grid(rollout(layers)[0, 1:].unsqueeze(0), b)
    return maps
