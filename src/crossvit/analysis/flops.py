"""Counting a model's multiply-accumulates (the paper's "FLOPs") on the real network.

torch's FlopCounterMode counts 2 FLOPs per MAC, and has no formula for the fused CPU
attention kernel that F.scaled_dot_product_attention dispatches to, nor for oneDNN's fused
linear that our inference path uses, so it would silently leave out those matmuls; we
register both formulas here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..model.fusion import projected_cross_attention


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _onednn_linear_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    rows = 1
    for d in input_shape[:-1]:
        rows *= d
    return 2 * rows * weight_shape[0] * weight_shape[1]


_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_attention_flops
if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    _EXTRA_FORMULAS[torch.ops.mkldnn._linear_pointwise] = _onednn_linear_flops


def count_macs(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on `inputs` (all images of the batch), as the
    paper counts them: cross-attention projects every token (we run a folded form that does not)."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    with counter, torch.no_grad(), projected_cross_attention(model):
        model(inputs)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_macs(model: nn.Module) -> int:
    """MACs per image at the model's own input size."""
    c, size = model.config.in_chans, model.config.img_size
    was_training = model.training
    model.eval()
    try:
        return count_macs(model, torch.zeros(1, c, size, size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
