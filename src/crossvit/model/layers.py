"""Building blocks shared by the branches and the fusion schemes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import conv3_layout, convstem_layout, layout_grid, t2t_layout


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


# oneDNN's linear kernel puts the bias (and GELU) inside the matmul and keeps the weights in
# its own blocked layout. Measured on 2 AVX-512 cores against F.linear: bf16 1.4-1.5x faster;
# fp32 1.05-1.2x faster, except for 128 input features over many rows (the small branch at
# batch 32), where it is slower. fp32 results are bit-identical. It has no autograd formula
# (wrapping it in one did not speed training up) and tracers (ONNX, torch.export,
# torch.compile) do not know it: they all get F.linear.
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _eager_cpu_inference(x: Tensor, *params: Tensor) -> bool:
    """True when `x` is on the CPU, no gradient is wanted and no tracer is watching, so that a
    kernel without autograd formula, or a loop whose length depends on the batch, may run."""
    return (x.device.type == "cpu" and not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params)))
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def _fused_kernel_allowed(x: Tensor, layer: nn.Module) -> bool:
    return (_ONEDNN_LINEAR and type(layer) is nn.Linear and type(layer.weight) is nn.Parameter
            and _eager_cpu_inference(x, layer.weight))


class DerivedCache:
    """Base of the caches a module keeps as a plain attribute (tensors derived from its weights):
    deep copies and pickles of the module (EMA, quantization, torch.save) start with an empty
    cache rather than trying to copy it."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict) -> DerivedCache:
        return type(self)()

    def __reduce__(self):
        return (type(self), ())


def weight_key(weight: Tensor) -> tuple[int, int]:
    """Changes whenever `weight` does: in place (its version) or replaced (its storage).
    Inference tensors (made under torch.inference_mode) cannot change and have no version."""
    return weight.data_ptr(), 0 if weight.is_inference() else weight._version


class _PackedWeight(DerivedCache):
    """A layer's weight in oneDNN's layout."""

    __slots__ = ("key", "tensor")

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tensor: Tensor | None = None


def _packed_weight(layer: nn.Linear, dtype: torch.dtype, rows: int) -> Tensor:
    """The layer's weight in `dtype`, in oneDNN's layout, cached until the weight changes."""
    weight = layer.weight
    key = (*weight_key(weight), dtype, rows > 1)
    cache = layer.__dict__.get("_onednn_packed")
    if cache is None:
        cache = layer._onednn_packed = _PackedWeight()  # a plain attribute: not a buffer, never saved
    if cache.key != key:
        cache.key, cache.tensor = key, torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), rows)
    return cache.tensor


def forget_packed_weights(module: nn.Module) -> None:
    """Drop the cached oneDNN copies in `module`. Some in-place updates change a weight without
    bumping its version (fused optimizers, writes through `.data`), so the cache cannot see them;
    CrossViT.train() / eval() call this, so that every switch to inference starts afresh."""
    for layer in module.modules():
        layer.__dict__.pop("_onednn_packed", None)


def run_linear(layer: nn.Module, x: Tensor, gelu: bool = False) -> Tensor:
    """layer(x), then GELU if asked, through the fused CPU kernel when nothing needs gradients
    and it pays. Any other module in the linear's place (a quantized one, say) is simply called."""
    if _fused_kernel_allowed(x, layer):
        rows = x.numel() // x.shape[-1]
        autocast = torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
        if dtype == torch.bfloat16 or (dtype == torch.float32 and (layer.in_features >= 256 or rows <= 4096)):
            weight, bias = _packed_weight(layer, dtype, rows), layer.bias
            bias = None if bias is None else bias.to(dtype)
            return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "gelu" if gelu else "none", [],
                                                      "none" if gelu else "")
    out = layer(x)
    return F.gelu(out) if gelu else out


class Mlp(nn.Module):
    """Linear -> GELU -> Linear; the GELU runs inside fc1's kernel where run_linear fuses it."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.drop(run_linear(self.fc1, x, gelu=True))
        return self.drop(run_linear(self.fc2, hidden))


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, N, C) -> (B, heads, N, C // heads)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, D) -> (B, N, heads * D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def attend(module: nn.Module, q: Tensor, k: Tensor, v: Tensor, scale: float | None = None,
           mask_self: bool = False) -> Tensor:
    """Scaled dot-product attention of (B, heads, N, D) tensors. With `module.keep_attention`
    set, the weights are computed explicitly and kept in `module.attention` (B, heads, Nq, Nk)
    for visualisation; otherwise the fastest kernel we know for the case runs. `scale`: of the
    logits (default D ** -0.5); `mask_self`: query i may not attend to key i."""
    dropout = module.attn_drop if module.training else 0.0
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    self_mask = torch.eye(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device) if mask_self else None
    if (q.dtype == torch.bfloat16 and not module.keep_attention and not dropout and _eager_cpu_inference(q, k, v)
            and q.shape[:-1].numel() * k.shape[-2] * q.element_size() > _LOGITS_BLOCK_BYTES):
        return _attend_in_blocks(q, k, v, scale, self_mask)
    # On the CPU the flash kernel loses to two plain matmuls for short sequences: in fp32 up to
    # 64 keys (1.6-4x at the 5-50 tokens of the 28 px models), in bf16 without AMX up to 256 keys
    # (1.5x forward at 197 tokens) and in training at any length (2x forward+backward at 197).
    short = k.shape[-2] <= (256 if q.dtype == torch.bfloat16 else 64)
    # On a GPU in fp32, a single query (the fusion's CLS agent) leaves the memory-efficient kernel's
    # parallelism over blocks of queries idle: 34 us per call at batch 1 (H200), and the whole
    # graphed forward 10% faster in the plain form, level at batch 32. In bf16 the flash kernel
    # does not suffer so: the plain form lost 8% at batch 32 there.
    explicit = not dropout and (
        (q.device.type == "cpu" and (short or (q.dtype == torch.bfloat16 and q.requires_grad)))
        or (q.device.type == "cuda" and q.dtype == torch.float32 and q.shape[-2] == 1))
    if module.keep_attention or explicit:
        logits = q * scale @ k.transpose(-2, -1)
        if self_mask is not None:
            logits = logits.masked_fill(self_mask, float("-inf"))
        weights = logits.softmax(-1)
        if module.keep_attention:
            module.attention = weights.detach()
        return weights @ v
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale,
                                          attn_mask=None if self_mask is None else ~self_mask)


# bf16 inference on the CPU, when a batch's attention logits outgrow the cache, computes
# attention a few images at a time, so that each block's logits (about 4 MiB) stay in cache
# between the two matmuls and the softmax. Batch 32, 2 cores, against the whole batch at once /
# the flash kernel: 1.7x / 1.45x faster at 197 tokens, 2.2x / 1.4x at 401 (whole model: +4-8%
# img/s). In fp32 the flash kernel does as well (4 heads) or up to 10% worse (8-12 heads) and
# smaller batches lose from blocks, so both keep the kernels below.
_LOGITS_BLOCK_BYTES = 4 << 20


def _attend_in_blocks(q: Tensor, k: Tensor, v: Tensor, scale: float, self_mask: Tensor | None) -> Tensor:
    """attend() for inference. The result is a (B, heads, N, D) view of a (B, N, heads, D)
    tensor, so that merge_heads() after it copies nothing."""
    batch, heads, n = q.shape[:3]
    per_block = max(1, _LOGITS_BLOCK_BYTES // (heads * n * k.shape[-2] * q.element_size()))
    blocks = math.ceil(batch / per_block)
    step = math.ceil(batch / blocks)  # blocks of equal size: 4 images as 2 + 2, not 3 + 1
    out = None
    for start in range(0, batch, step):
        logits = q[start:start + step] * scale @ k[start:start + step].transpose(-2, -1)
        if self_mask is not None:
            logits = logits.masked_fill(self_mask, float("-inf"))
        block = logits.softmax(-1) @ v[start:start + step]
        if out is None:
            out = block.new_empty(batch, n, heads, block.shape[-1])
        out[start:start + step] = block.transpose(1, 2)
    return out.transpose(1, 2)


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
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = run_linear(self.qkv, x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.locality:
            out = attend(self, q * self.scale, k, v, scale=1.0, mask_self=True)  # kernels take a float scale
        else:
            out = attend(self, q, k, v)
        return self.proj_drop(run_linear(self.proj, merge_heads(out)))


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
        self.linear = nn.Linear(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        s, (h, w) = self.patch_size // 2, x.shape[-2:]
        padded = F.pad(x, (s, s, s, s))
        shifted = [padded[..., s + dy:s + dy + h, s + dx:s + dx + w] for dy, dx in ((-s, -s), (-s, s), (s, -s), (s, s))]
        # (B, 5C, H, W) -> (B, grid * grid, 5C * p * p), channel-major within a patch; plain
        # reshapes rather than F.unfold, so that every exporter knows them
        views = torch.cat([x, *shifted], dim=1)
        b, c, p, g = views.shape[0], views.shape[1], self.patch_size, h // self.patch_size
        patches = views[..., :g * p, :g * p].reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        return run_linear(self.linear, self.norm(patches))


class TokenTransformer(nn.Module):
    """One re-structuring layer of Tokens-to-Token: pre-norm single-head self-attention whose
    q, k and v narrow the unfolded patch width `in_dim` to `dim`, then an MLP of ratio 1.
    The attention's input is wider than its output, so it cannot be the shortcut; as in
    T2T-ViT the value vectors are."""

    def __init__(self, in_dim: int, dim: int, eps: float) -> None:
        super().__init__()
        self.dim = dim
        self.norm1 = layer_norm(in_dim, eps)
        self.qkv = nn.Linear(in_dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = layer_norm(dim, eps)
        self.mlp = Mlp(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        # (B, N, 3 * dim) -> three (B, 1 head, N, dim)
        q, k, v = run_linear(self.qkv, self.norm1(x)).view(b, n, 3, 1, self.dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1 / sqrt(dim): the width of q and k
        x = v.reshape(b, n, self.dim) + run_linear(self.proj, out.reshape(b, n, self.dim))
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
        self.project = nn.Linear(widths[-1], dim)

    def forward(self, x: Tensor) -> Tensor:
        b, (h, w) = x.shape[0], x.shape[-2:]
        for i, (split, window) in enumerate(zip(self.splits, self.layout)):
            if i:  # tokens (B, h*w, C) back onto their (B, C, h, w) map
                x = self.layers[i - 1](x).transpose(1, 2).reshape(b, -1, h, w)
            x = split(x).transpose(1, 2)  # (B, C*k*k, L) -> (B, L, C*k*k)
            h, w = layout_grid(h, [window]), layout_grid(w, [window])
        return run_linear(self.project, x)


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
        super().__init__(layer_norm(dim_in, eps), nn.GELU(), nn.Linear(dim_in, dim_out))

    def forward(self, x: Tensor) -> Tensor:
        return run_linear(self[2], self[1](self[0](x)))


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


