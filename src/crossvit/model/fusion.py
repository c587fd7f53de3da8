"""The five ways of mixing the branches that the paper compares (its Table 6).

Every scheme is a module `forward(xs) -> xs` over the list of per-branch token tensors,
each (B, 1 + patches, width) with the branch's CLS token (or its stand-in) first.

Where the paper leaves a choice open, for all-attention, class-token and pairwise fusion:
tokens meet in the width of the widest branch (the primary L-branch), f^i / g^i are the
LN -> GELU -> Linear maps into and out of that width (the identity for a branch already that
wide), the attention of all-attention uses the heads of that branch, and pairwise fusion
meets on that branch's patch grid (bilinear resampling). With these choices the paper's
CrossViT-S ordering of cost holds: all-attention > cross-attention > pairwise > class-token > none.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from collections.abc import Sequence
from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import CrossViTError
from .config import BranchConfig, CrossViTConfig
from .fastpaths import Linear, can_fold, folded_cross_attention
from .layers import (DropPath, Projection, SelfAttention, attention_of, layer_norm, merge_heads, resize_tokens,
                     split_heads)


class CrossAttention(nn.Module):
    """The first token asks all tokens: y = x_0 + DropPath(MCA(LN(x))), cost linear in tokens.

    Called as `layer(agent, others)` with the agent (B, 1, C) and the tokens it asks besides
    itself (B, N, C), so that they are never concatenated. On the CPU the key and value
    projections fold into the single query (`_folded`, see fastpaths/attention.py): the same
    result as projecting every token (`_projected`), at a fraction of the cost.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 drop_path: float, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.keep_attention = False
        self.attention: Tensor | None = None
        # False: project every token, as the paper's cost model (and its MAC counts) assume
        self.fold_query = True
        self.norm = layer_norm(dim, eps)
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.k = Linear(dim, dim, bias=qkv_bias)
        self.v = Linear(dim, dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, agent: Tensor, others: Tensor) -> Tensor:
        if self.fold_query and can_fold(self.k, self.v, agent):
            out = self._folded(agent, others)
        else:
            out = self._projected(agent, others)
        return agent + self.drop_path(self.proj_drop(self.proj(out)))

    def _projected(self, agent: Tensor, others: Tensor) -> Tensor:
        normed = self.norm(torch.cat([agent, others], dim=1))
        q = split_heads(self.q(normed[:, :1]), self.num_heads)
        k = split_heads(self.k(normed), self.num_heads)
        v = split_heads(self.v(normed), self.num_heads)
        return merge_heads(attention_of(self, q, k, v))

    def _folded(self, agent: Tensor, others: Tensor) -> Tensor:
        b, _, c = agent.shape
        h = self.num_heads
        agent_n = self.norm(agent)  # LayerNorm is per token: no need to concatenate
        q = self.q(agent_n).view(b, h, c // h) * (c // h) ** -0.5
        dropout = self.attn_drop if self.training else 0.0
        out, weights = folded_cross_attention(q, self.k, self.v, agent_n, self.norm(others), dropout)
        if self.keep_attention:
            self.attention = (weights if self.keep_attention == "graph" else weights.detach()).unsqueeze(2)
        return out


@contextmanager
def projected_cross_attention(model: nn.Module):
    """Within the block, cross-attention projects every token, as the paper counts its cost."""
    layers = [m for m in model.modules() if isinstance(m, CrossAttention)]
    before = [m.fold_query for m in layers]
    for m in layers:
        m.fold_query = False
    try:
        yield model
    finally:
        for m, fold in zip(layers, before):
            m.fold_query = fold


class CrossAttentionFusion(nn.Module):
    """The paper's fusion. Branch i's CLS, projected into the width of branch j = i+1 (cyclic:
    with two branches, each other), queries [itself || patches of j] through `fusion_layers`
    cross-attention layers, and is projected back to replace branch i's CLS. All branches
    read the same pre-fusion states."""

    def __init__(self, config: CrossViTConfig, drop_path: float) -> None:
        super().__init__()
        dims = [b.dim for b in config.branches]
        n, eps = len(dims), config.layer_norm_eps
        self.project = nn.ModuleList(Projection(dims[i], dims[(i + 1) % n], eps) for i in range(n))
        self.attend = nn.ModuleList(
            nn.ModuleList(
                CrossAttention(dims[(i + 1) % n], config.branches[(i + 1) % n].num_heads, config.qkv_bias,
                               config.attn_drop_rate, config.drop_rate, drop_path, eps)
                for _ in range(config.fusion_layers)
            )
            for i in range(n)
        )
        self.revert = nn.ModuleList(Projection(dims[(i + 1) % n], dims[i], eps) for i in range(n))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        n = len(xs)
        outs = []
        for i in range(n):
            other_patches = xs[(i + 1) % n][:, 1:]
            agent = self.project[i](xs[i][:, :1])
            for layer in self.attend[i]:
                agent = layer(agent, other_patches)
            outs.append(torch.cat([self.revert[i](agent), xs[i][:, 1:]], dim=1))
        return outs


class _CommonWidth(nn.Module):
    """f^i into and g^i out of the width of the widest branch, shared by the schemes below."""

    def __init__(self, config: CrossViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dims = [b.dim for b in config.branches]
        self.primary = max(range(len(dims)), key=lambda i: dims[i])
        width, eps = dims[self.primary], config.layer_norm_eps
        self.width = width
        self.align = nn.ModuleList(nn.Identity() if d == width else Projection(d, width, eps) for d in dims)
        self.revert = nn.ModuleList(nn.Identity() if d == width else Projection(width, d, eps) for d in dims)


class AllAttentionFusion(_CommonWidth):
    """Eq. 2: every token of every branch attends to every other: o = y + MSA(LN(y)) over
    y = [f^1(x^1) || f^2(x^2) ...]; quadratic in the total number of tokens."""

    def __init__(self, config: CrossViTConfig, drop_path: float) -> None:
        super().__init__(config, drop_path)
        heads = config.branches[self.primary].num_heads
        self.norms = nn.ModuleList(layer_norm(self.width, config.layer_norm_eps) for _ in range(config.fusion_layers))
        self.attns = nn.ModuleList(
            SelfAttention(self.width, heads, config.qkv_bias, config.attn_drop_rate, config.drop_rate)
            for _ in range(config.fusion_layers)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        lengths = [x.shape[1] for x in xs]
        y = torch.cat([align(x) for align, x in zip(self.align, xs)], dim=1)
        for norm, attn in zip(self.norms, self.attns):
            y = y + self.drop_path(attn(norm(y)))
        return [revert(part) for revert, part in zip(self.revert, y.split(lengths, dim=1))]


class ClassTokenFusion(_CommonWidth):
    """Eq. 3: the CLS tokens are summed in the common width; each branch gets the sum back."""

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        shared = torch.stack([align(x[:, :1]) for align, x in zip(self.align, xs)]).sum(0)
        return [torch.cat([revert(shared), x[:, 1:]], dim=1) for revert, x in zip(self.revert, xs)]


class PairwiseFusion(_CommonWidth):
    """Eq. 4: CLS tokens are summed as in class-token fusion; patch tokens are summed
    position by position after resampling every grid to the primary branch's grid, then
    resampled back to each branch's grid."""

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        # the grids are read off the tokens, so that any input size (dynamic_img_size) fuses
        grids = [math.isqrt(x.shape[1] - 1) for x in xs]
        common = grids[self.primary]
        shared_cls = torch.stack([align(x[:, :1]) for align, x in zip(self.align, xs)]).sum(0)
        shared_patches = torch.stack(
            [resize_tokens(align(x[:, 1:]), grid, common) for align, x, grid in zip(self.align, xs, grids)]
        ).sum(0)
        return [
            torch.cat([revert(shared_cls), revert(resize_tokens(shared_patches, common, grid))], dim=1)
            for revert, grid in zip(self.revert, grids)
        ]


class NoFusion(nn.Module):
    """The branches never meet; only their logits are averaged."""

    def __init__(self, config: CrossViTConfig, drop_path: float) -> None:
        super().__init__()

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return xs


FUSION_SCHEMES: dict[str, Callable[[CrossViTConfig, float], nn.Module]] = {
    "cross_attention": CrossAttentionFusion,
    "all_attention": AllAttentionFusion,
    "class_token": ClassTokenFusion,
    "pairwise": PairwiseFusion,
    "none": NoFusion,
}


def build_fusion(config: CrossViTConfig, drop_path: float) -> nn.Module:
    return FUSION_SCHEMES[config.fusion](config, drop_path)


def fusion_module(scheme: str, dims: Sequence[int], num_heads: Sequence[int], layers: int = 1, qkv_bias: bool = True,
                  drop_path: float = 0.0, eps: float = 1e-6) -> nn.Module:
    """A fusion scheme on its own, to mix token sets of any widths outside a CrossViT (text and
    image tokens, say): forward(xs) takes a list of (B, 1 + N_i, dims[i]) tensors, each with a
    summary token first, and returns them fused, same shapes. Pairwise fusion needs square grids
    of patch tokens; the others take any N_i. `num_heads[i]`: heads of attention in branch i's
    width (cross-attention attends in the width of the next branch)."""
    if scheme not in FUSION_SCHEMES:
        raise CrossViTError(f"unknown fusion {scheme!r}; choose one of {', '.join(FUSION_SCHEMES)}")
    if len(dims) != len(num_heads) or len(dims) < 2:
        raise CrossViTError(f"give a width and a head count for each of two or more token sets; got dims={list(dims)}, "
                            f"num_heads={list(num_heads)}")
    # the schemes read only widths, heads, layers and the norms' epsilon of a config
    branches = tuple(BranchConfig(patch_size=1, img_size=1, dim=d, depth=1, num_heads=h) for d, h in zip(dims, num_heads))
    config = CrossViTConfig(branches=branches, img_size=1, fusion=scheme, fusion_layers=layers, qkv_bias=qkv_bias,
                            layer_norm_eps=eps)
    return FUSION_SCHEMES[scheme](config, drop_path)
