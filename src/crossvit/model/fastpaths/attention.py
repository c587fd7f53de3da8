"""Attention kernels: which one runs for which case on which device.

- Short sequences on the CPU take two plain matmuls and a softmax instead of the flash kernel:
  in fp32 up to 64 keys (1.6-4x faster at the 5-50 tokens of the 28 px models), in bf16 up to
  256 keys (1.5x forward at 197 tokens without AMX), and in bf16 training at any length (2x
  forward+backward at 197). Measured on 2 AVX-512 cores; the bf16 rules apply only where oneDNN
  computes bf16 (elsewhere emulated bf16 matmuls lose to the flash kernel).
- bf16 inference on the CPU, when a batch's logits outgrow ~4 MiB, attends a few images at a
  time so that each block's logits stay in cache (`_attend_in_blocks`): 1.7x / 1.45x faster
  than the whole batch at once / the flash kernel at 197 tokens, 2.2x / 1.4x at 401; the whole
  model +4-8% img/s at batch 32. Only where oneDNN computes bf16 (it was measured there).
- One fp32 query on a GPU (the fusion's CLS agent) takes plain matmuls: the memory-efficient
  kernel leaves its parallelism over query blocks idle (34 us per call at batch 1 on an H200).
- Cross-attention's single query on the CPU folds the key projection into the query and moves
  the value projection after the weighted sum (`folded_cross_attention`): the same function as
  projecting every token, at a fraction of the cost. On a GPU it launches more, smaller kernels
  (607 against 499 per forward of crossvit_9_240, 0.86x timm's img/s), so it stays CPU-only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear import Linear, eager_cpu_inference
from .support import cpu_support

_LOGITS_BLOCK_BYTES = 4 << 20


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, mask_self: bool = False,
           dropout: float = 0.0, keep: bool = False) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention of (B, heads, N, D) tensors: (output, weights). The weights
    (B, heads, Nq, Nk) are computed explicitly and returned, with their graph, when `keep` is set;
    else they are None and the fastest kernel we know for the case runs. `scale`: of the logits
    (default D ** -0.5); `mask_self`: query i may not attend to key i."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    self_mask = torch.eye(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device) if mask_self else None
    if not keep and _blocks_pay(q, k, v, dropout):
        return _attend_in_blocks(q, k, v, scale, self_mask), None
    if keep or _explicit_pays(q, k, dropout):
        logits = q * scale @ k.transpose(-2, -1)
        if self_mask is not None:
            logits = logits.masked_fill(self_mask, float("-inf"))
        weights = logits.softmax(-1)
        dropped = F.dropout(weights, dropout) if dropout else weights
        return dropped @ v, weights if keep else None
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale,
                                         attn_mask=None if self_mask is None else ~self_mask)
    return out, None


def _explicit_pays(q: Tensor, k: Tensor, dropout: float) -> bool:
    if dropout:
        return False
    if q.device.type == "cuda":
        return q.dtype == torch.float32 and q.shape[-2] == 1
    if q.device.type != "cpu":
        return False
    if q.dtype == torch.bfloat16:  # measured where oneDNN computes bf16; emulated bf16 matmuls lose to the
        # flash kernel (AVX2 Zen 3, crossvit_9_240 batch 1: bmm 850 against 180 ms per forward)
        return cpu_support().onednn_bf16 and (k.shape[-2] <= 256 or q.requires_grad)
    return k.shape[-2] <= 64


def _blocks_pay(q: Tensor, k: Tensor, v: Tensor, dropout: float) -> bool:
    return (q.dtype == torch.bfloat16 and not dropout and eager_cpu_inference(q, k, v) and cpu_support().onednn_bf16
            and q.shape[:-1].numel() * k.shape[-2] * q.element_size() > _LOGITS_BLOCK_BYTES)


def _attend_in_blocks(q: Tensor, k: Tensor, v: Tensor, scale: float, self_mask: Tensor | None) -> Tensor:
    """attend() for inference, a few images at a time. The result is a (B, heads, N, D) view of
    a (B, N, heads, D) tensor, so that merging the heads after it copies nothing."""
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


def can_fold(k: nn.Module, v: nn.Module, x: Tensor) -> bool:
    """Whether cross-attention with these key and value layers may run folded on `x`: on the
    CPU, with plain linear layers (a quantized or swapped-in one only promises to be called)."""
    return x.device.type == "cpu" and type(k) in (nn.Linear, Linear) and type(v) in (nn.Linear, Linear)


def folded_cross_attention(q: Tensor, k: nn.Linear, v: nn.Linear, agent: Tensor, others: Tensor,
                           dropout: float = 0.0) -> tuple[Tensor, Tensor]:
    """One query per image over [agent || others] without projecting the keys and values:
    (output (B, 1, C) before the output projection, weights (B, heads, 1 + N)). `q`: the query
    (B, heads, D), already scaled; `agent` (B, 1, C), `others` (B, N, C): normalised tokens."""
    b, h, d = q.shape
    c = agent.shape[-1]
    # q . (W_k x + b_k) = (q W_k) . x + q . b_k
    q_k = torch.einsum("bhd,hdc->bhc", q, k.weight.view(h, d, c))
    logits = torch.cat([(q_k * agent).sum(-1, keepdim=True), q_k @ others.transpose(1, 2)], dim=-1)
    if k.bias is not None:  # the same for every key, so it cancels in the softmax; kept so
        # that b_k takes part in the graph (DDP insists that every parameter does)
        logits = logits + (q * k.bias.view(h, d)).sum(-1, keepdim=True)
    weights = logits.softmax(-1)
    dropped = F.dropout(weights, dropout) if dropout else weights
    # sum_j w_j (W_v x_j + b_v) = W_v (sum_j w_j x_j) + (sum_j w_j) b_v
    mixed = dropped[..., :1] * agent + dropped[..., 1:] @ others  # (B, heads, C)
    out = torch.einsum("bhc,hdc->bhd", mixed, v.weight.view(h, d, c))
    if v.bias is not None:
        out = out + dropped.sum(-1, keepdim=True) * v.bias.view(h, d)
    return out.reshape(b, 1, c), weights
