"""bf16 inference without autocast's casts: the model's bf16 "twin".

Under bf16 autocast every linear casts its fp32 weight, bias and input to bf16 on every call,
and LayerNorm and the residual adds run in fp32 between them. On a GPU at batch 32 or less
these extra kernels, not the arithmetic, set the pace: a bf16 forward ran slower than an fp32
one. So for inference under bf16 autocast a CrossViT runs a bf16 copy of itself (its "twin")
with autocast off: one kernel per linear, and bf16 activations throughout, as in a model
converted with `.to(torch.bfloat16)`. The copy is derived state: rebuilt when a weight changes
(in place, by `load_state_dict`, or by `.to()`), dropped by `train()` / `eval()` and
`reset_classifier`, never saved, deep-copied or pickled. On the CPU it runs only where oneDNN
computes bf16 (its fused bf16 linear is what makes the copy pay); elsewhere autocast runs as usual.
Measured: 5-7% more img/s for crossvit_15_240 at batch 32 on 2 Zen 5 cores; on an H200, bf16
inference 1.41-1.43x timm's img/s at batch 32 (autocast alone was slower than fp32).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from .linear import DerivedCache, weight_key
from .support import cpu_support

# Modules whose bf16 copy we know to compute the same function: PyTorch's own and this
# package's. A model holding others (int8 layers, say) keeps running under autocast.
_KNOWN_MODULES = ("torch.nn.", "crossvit.model.")

T = TypeVar("T")


class _Twin(DerivedCache):
    """The cached bf16 copy and the weights it was made from."""

    __slots__ = ("key", "module", "sources")

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.module: nn.Module | None = None
        self.sources: list[Tensor] = []


def _version_key(tensors: list[Tensor]) -> tuple:
    return tuple(weight_key(t) for t in tensors)


def _make_twin(model: nn.Module) -> nn.Module | None:
    if any(not type(m).__module__.startswith(_KNOWN_MODULES) for m in model.modules()):
        return None
    memo: dict[int, object] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            low = t.detach().to(torch.bfloat16)
            memo[id(t)] = nn.Parameter(low, requires_grad=False) if isinstance(t, nn.Parameter) else low
    twin = copy.deepcopy(model, memo)
    twin.bf16_twin_enabled = False  # it is the twin
    return twin


def bf16_twin(model: nn.Module, x: Tensor | Sequence[Tensor]) -> nn.Module | None:
    """The model's bf16 copy when `x` (a batch, or one per branch) is about to go through it for
    inference under bf16 autocast (eval mode, no gradient, nothing tracing or keeping
    attention); else None."""
    device = (x[0] if isinstance(x, (list, tuple)) else x).device.type
    if (torch.compiler.is_compiling() or torch.jit.is_tracing() or model.training or not model.bf16_twin_enabled
            or torch.is_grad_enabled() or device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device)
            or torch.get_autocast_dtype(device) != torch.bfloat16 or model.__dict__.get("_keeps_attention")
            or (device == "cpu" and not cpu_support().onednn_bf16)):
        return None
    cache = model.__dict__.get("_bf16_twin")
    if cache is None:
        cache = model.__dict__["_bf16_twin"] = _Twin()
    if cache.key is None or cache.key != _version_key(cache.sources):
        cache.sources = [*model.parameters(), *model.buffers()]
        cache.module = _make_twin(model)
        cache.key = _version_key(cache.sources)
    return cache.module


def forget_bf16_twin(model: nn.Module) -> None:
    model.__dict__.pop("_bf16_twin", None)


def run_in_bf16(method: Callable[[Tensor], T], x: Tensor | Sequence[Tensor]) -> T:
    """A twin's `method` on `x` in bf16, with autocast off so that nothing is cast back."""
    if isinstance(x, (list, tuple)):
        with torch.autocast(x[0].device.type, enabled=False):
            return method([t.to(torch.bfloat16) for t in x])
    with torch.autocast(x.device.type, enabled=False):
        return method(x.to(torch.bfloat16))
