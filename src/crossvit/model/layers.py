"""Building blocks shared by the branches and the fusion schemes."""

from __future__ import annotations


import torch.nn.functional as F
from torch import Tensor, nn

from .config import conv3_layout


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
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, N, C) -> (B, heads, N, C // heads)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, D) -> (B, N, heads * D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def attend(module: nn.Module, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Scaled dot-product attention of (B, heads, N, D) tensors. The fused kernel, unless
    `module.keep_attention` is set: then the weights are computed explicitly and kept in
    `module.attention` (B, heads, Nq, Nk) for visualisation."""
    if module.keep_attention:
        weights = (q * q.shape[-1] ** -0.5 @ k.transpose(-2, -1)).softmax(-1)
        module.attention = weights.detach()
        return weights @ v
    return F.scaled_dot_product_attention(q, k, v, dropout_p=module.attn_drop if module.training else 0.0)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.keep_attention = False
        self.attention: Tensor | None = None
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj_drop(self.proj(merge_heads(attend(self, q, k, v))))


class Block(nn.Module):
    """Pre-norm transformer block: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: float, eps: float) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim, eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = layer_norm(dim, eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Tokenizer(nn.Module):
    """Image -> patch tokens (B, grid*grid, dim): one strided convolution ('linear'), or the
    three-convolution stem of the dagger models ('conv3')."""

    def __init__(self, kind: str, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if kind == "linear":
            self.proj: nn.Module = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        else:
            widths = [in_chans, dim // 4, dim // 2, dim]
            layers: list[nn.Module] = []
            for i, (kernel, stride, padding) in enumerate(conv3_layout(patch_size)):
                if i:
                    layers.append(nn.ReLU(inplace=True))
                layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel, stride, padding))
            self.proj = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def projection(dim_in: int, dim_out: int, eps: float) -> nn.Sequential:
    """LN -> GELU -> Linear: the f and g maps that move a token between branch widths."""
    return nn.Sequential(layer_norm(dim_in, eps), nn.GELU(), nn.Linear(dim_in, dim_out))


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


