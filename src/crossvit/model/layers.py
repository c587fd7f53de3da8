"""Building blocks shared by the branches and the fusion schemes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import conv3_layout, convstem_layout, layout_grid, t2t_layout
from .fastpaths import Linear, attend


def layer_norm(dim: int, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=eps)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (fc1 applies the GELU, so that a fused kernel can)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, activation="gelu")
        self.fc2 = Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.fc1(x))))


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, N, C) -> (B, heads, N, C // heads)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, D) -> (B, N, heads * D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def attention_of(module: nn.Module, q: Tensor, k: Tensor, v: Tensor, scale: float | None = None,
                 mask_self: bool = False) -> Tensor:
    """fastpaths.attend() for an attention layer: its dropout while training; with
    `module.keep_attention` set, the weights are kept in `module.attention` (B, heads, Nq, Nk)."""
    keep = module.keep_attention
    out, weights = attend(q, k, v, scale, mask_self, module.attn_drop if module.training else 0.0, keep=bool(keep))
    if keep:
        module.attention = weights if keep == "graph" else weights.detach()
    return out


class SelfAttention(nn.Module):
    """Multi-head self-attention; with `locality` (LSA), a learned temperature and no attention
    of a token to itself, which sharpens attention on small datasets."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 locality: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.locality = locality
        if locality:  # the logit scale, starting at the usual 1 / sqrt(head width)
            self.scale = nn.Parameter(torch.tensor((dim // num_heads) ** -0.5))
        self.attn_drop = attn_drop
        self.keep_attention = False
        self.attention: Tensor | None = None
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.locality:
            out = attention_of(self, q * self.scale, k, v, scale=1.0, mask_self=True)  # kernels take a float scale
        else:
            out = attention_of(self, q, k, v)
        return self.proj_drop(self.proj(merge_heads(out)))


class Block(nn.Module):
    """Pre-norm transformer block: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: float, eps: float, locality: bool = False) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim, eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias, attn_drop, drop, locality)
        self.norm2 = layer_norm(dim, eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ShiftedPatches(nn.Module):
    """Shifted patch tokenization (Lee, Lee, Song 2021, "Vision Transformer for Small-Size
    Datasets"): the image and four copies shifted by half a patch diagonally are cut into patches
    together, so each token also sees the borders of its neighbours; the patch vector is
    layer-normalised, then projected. Costs only the tokenizer; meant for small images."""

    def __init__(self, patch_size: int, in_chans: int, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size = patch_size
        width = 5 * in_chans * patch_size * patch_size
        self.norm = nn.LayerNorm(width, eps=eps)
        self.linear = Linear(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        s, (h, w) = self.patch_size // 2, x.shape[-2:]
        padded = F.pad(x, (s, s, s, s))
        shifted = [padded[..., s + dy:s + dy + h, s + dx:s + dx + w] for dy, dx in ((-s, -s), (-s, s), (s, -s), (s, s))]
        # (B, 5C, H, W) -> (B, grid * grid, 5C * p * p), channel-major within a patch; plain
        # reshapes rather than F.unfold, so that every exporter knows them
        views = torch.cat([x, *shifted], dim=1)
        b, c, p, g = views.shape[0], views.shape[1], self.patch_size, h // self.patch_size
        patches = views[..., :g * p, :g * p].reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        return self.linear(self.norm(patches))


class TokenTransformer(nn.Module):
    """One re-structuring layer of Tokens-to-Token: pre-norm single-head self-attention whose
    q, k and v narrow the unfolded patch width `in_dim` to `dim`, then an MLP of ratio 1.
    The attention's input is wider than its output, so it cannot be the shortcut; as in
    T2T-ViT the value vectors are."""

    def __init__(self, in_dim: int, dim: int, eps: float) -> None:
        super().__init__()
        self.dim = dim
        self.norm1 = layer_norm(in_dim, eps)
        self.qkv = Linear(in_dim, 3 * dim, bias=False)
        self.proj = Linear(dim, dim)
        self.norm2 = layer_norm(dim, eps)
        self.mlp = Mlp(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        # (B, N, 3 * dim) -> three (B, 1 head, N, dim)
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, 1, self.dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1 / sqrt(dim): the width of q and k
        x = v.reshape(b, n, self.dim) + self.proj(out.reshape(b, n, self.dim))
        return x + self.mlp(self.norm2(x))


class TokensToToken(nn.Module):
    """The Tokens-to-Token tokenizer (Yuan et al. 2021, "Tokens-to-Token ViT"), CrossViT-18+T2T's:
    a soft split (overlapping patches as tokens, nn.Unfold), then per further split a token
    transformer layer, the tokens put back on their 2-D map and split again; a Linear takes the
    last tokens to the branch width. Overlapping windows let each token see its neighbours'
    pixels, and the attention mixes tokens before they are merged."""

    def __init__(self, patch_size: int, in_chans: int, dim: int, t2t_dim: int = 64, eps: float = 1e-6) -> None:
        super().__init__()
        self.layout = tuple(t2t_layout(patch_size))
        self.splits = nn.ModuleList(nn.Unfold(kernel, padding=padding, stride=stride)
                                    for kernel, stride, padding in self.layout)
        # token width after each split: the first unfolds the image's channels, later ones t2t_dim
        widths = [(in_chans if i == 0 else t2t_dim) * kernel * kernel for i, (kernel, _, _) in enumerate(self.layout)]
        self.layers = nn.ModuleList(TokenTransformer(width, t2t_dim, eps) for width in widths[:-1])
        self.project = Linear(widths[-1], dim)

    def forward(self, x: Tensor) -> Tensor:
        b, (h, w) = x.shape[0], x.shape[-2:]
        for i, (split, window) in enumerate(zip(self.splits, self.layout)):
            if i:  # tokens (B, h*w, C) back onto their (B, C, h, w) map
                x = self.layers[i - 1](x).transpose(1, 2).reshape(b, -1, h, w)
            x = split(x).transpose(1, 2)  # (B, C*k*k, L) -> (B, L, C*k*k)
            h, w = layout_grid(h, [window]), layout_grid(w, [window])
        return self.project(x)


class Tokenizer(nn.Module):
    """Image -> patch tokens (B, grid*grid, dim): one strided convolution ('linear'), the
    three-convolution stem of the dagger models ('conv3'), shifted patches ('shifted'),
    Tokens-to-Token ('t2t'), or a stem of stride-2 convolutions ('convstem')."""

    def __init__(self, kind: str, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if kind == "linear":
            self.proj: nn.Module = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        elif kind == "shifted":
            self.proj = ShiftedPatches(patch_size, in_chans, dim)
        elif kind == "t2t":
            self.proj = TokensToToken(patch_size, in_chans, dim)
        elif kind == "convstem":
            self.proj = conv_stem(patch_size, in_chans, dim)
        else:
            widths = [in_chans, dim // 4, dim // 2, dim]
            layers: list[nn.Module] = []
            for i, (kernel, stride, padding) in enumerate(conv3_layout(patch_size)):
                if i:
                    layers.append(nn.ReLU(inplace=True))
                layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel, stride, padding))
            self.proj = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.proj, (ShiftedPatches, TokensToToken)):
            return self.proj(x)
        return self.proj(x).flatten(2).transpose(1, 2)


def conv_stem(patch_size: int, in_chans: int, dim: int) -> nn.Sequential:
    """3x3 stride-2 convolutions, each with BatchNorm and ReLU, widths doubling up to `dim`,
    then a 1x1 convolution (Xiao et al. 2021): a patch's token sees its neighbours' pixels."""
    layout = convstem_layout(patch_size)
    widths = [in_chans] + [dim >> (len(layout) - 1 - i) for i in range(len(layout))]
    layers: list[nn.Module] = []
    for i, (kernel, stride, padding) in enumerate(layout):
        layers += [nn.Conv2d(widths[i], widths[i + 1], kernel, stride, padding, bias=False),
                   nn.BatchNorm2d(widths[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Conv2d(dim, dim, 1))


class Projection(nn.Sequential):
    """LN -> GELU -> Linear: the f and g maps that move a token between branch widths
    (a Sequential, so its parameters keep the released names 0.* and 2.*)."""

    def __init__(self, dim_in: int, dim_out: int, eps: float) -> None:
        super().__init__(layer_norm(dim_in, eps), nn.GELU(), Linear(dim_in, dim_out))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal Linear weights, zero biases, unit LayerNorms; convolutions keep
    PyTorch's defaults (the released models were trained from this init)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def resize_tokens(x: Tensor, grid: int, size: int, mode: str = "bilinear") -> Tensor:
    """Resample (B, grid*grid, C) patch tokens to (B, size*size, C) on the 2-D grid."""
    if grid == size:
        return x
    b, _, c = x.shape
    image = x.transpose(1, 2).reshape(b, c, grid, grid)
    image = F.interpolate(image, size=(size, size), mode=mode, align_corners=False)
    return image.flatten(2).transpose(1, 2)


