"""Int8 dynamic quantization of a CrossViT's Linear layers, for CPU inference.

Weights are stored as int8 with one scale per output channel; activations are quantized on
the fly, per call, to uint8 with one scale and zero point for the whole input tensor (so an
image's logits move slightly with the rest of its batch). The matrix products run in
FBGEMM's int8 kernels (`torch.ops.quantized.linear_dynamic`), which fuse the activation
quantization and the rescaling into the product. Of the eager int8 routes in torch 2.14 it
is the one we found faster than fp32 on x86: torchao's `Int8DynamicActivationInt8WeightConfig`
and a plain `torch._int_mm` with the quantization written out in PyTorch were both slower than
fp32 without torch.compile (`benchmarks/quantize_speed.py --alternatives` times all three).

The quantized model is saved as our safetensors file holding the int8 weights and scales as
ordinary tensors, with the config and `quantization` in its metadata; `load_quantized`
rebuilds it from that, so loading runs no pickle at all.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from typing import Iterator

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..model.checkpoint import StoredCheckpoint, read_checkpoint, save_checkpoint
from ..model.crossvit import CrossViT
from ..model.fastpaths.linear import activate
from ..model.registry import ModelMeta

QUANTIZATION = "int8-dynamic"


def _reduce_range() -> bool:
    # Without VNNI, FBGEMM sums pairs of uint8 x int8 products in int16, which 8-bit activations
    # can overflow; 7-bit ones cannot. With VNNI the sums are int32 and all 8 bits are kept.
    return not getattr(torch.cpu, "_is_vnni_supported", lambda: False)()


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights (per-output-channel scales) and dynamically quantized inputs."""

    def __init__(self, weight_int8: Tensor, weight_scale: Tensor, bias: Tensor | None,
                 activation: str | None = None) -> None:
        super().__init__()
        self.activation = activation  # the replaced layer's (an MLP's first layer applies GELU)
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():
            # Quantized dtypes are marked for removal in a later torch; FBGEMM's kernels still need them in 2.14.
            warnings.simplefilter("ignore", UserWarning)
            weight = torch._make_per_channel_quantized_tensor(weight_int8, weight_scale.double(), zero_points, 0)
        self._packed = torch.ops.quantized.linear_prepack(weight, bias)  # FBGEMM's layout; not saved
        self._reduce_range = _reduce_range()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Symmetric per-output-channel int8: scale = max |w| / 127 of each row."""
        weight = linear.weight.detach().float().cpu()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        weight_int8 = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu().clone()
        return cls(weight_int8, scale, bias, getattr(linear, "activation", None))

    def forward(self, x: Tensor) -> Tensor:
        return activate(torch.ops.quantized.linear_dynamic(x, self._packed, self._reduce_range), self.activation)

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{act}"


def _linears(model: CrossViT) -> Iterator[tuple[str, nn.Module, str, nn.Linear]]:
    """(name, parent, attribute, layer) of every Linear but the classifier heads: those take one
    vector per image, so int8 would save nothing there and only add error to the logits."""
    for parent_name, parent in list(model.named_modules()):
        for attr, child in list(parent.named_children()):
            name = f"{parent_name}.{attr}" if parent_name else attr
            if isinstance(child, nn.Linear) and not name.startswith("heads."):
                yield name, parent, attr, child


def quantize_model(model: CrossViT) -> CrossViT:
    """An int8 copy of `model` for CPU inference (the model itself is left as it is)."""
    quantized = copy.deepcopy(model).float().cpu()
    for _, parent, attr, linear in _linears(quantized):
        setattr(parent, attr, Int8Linear.from_linear(linear))
    return quantized.eval()


def is_quantized(stored: StoredCheckpoint) -> bool:
    return stored.meta.get("quantization") == QUANTIZATION


def save_quantized(model: CrossViT, path: str | os.PathLike) -> None:
    """Save a `quantize_model` result as safetensors (atomically)."""
    save_checkpoint(model, path, meta={"quantization": QUANTIZATION})


def load_quantized(path: str | os.PathLike | StoredCheckpoint) -> CrossViT:
    """Rebuild a model saved by `save_quantized`; on the same CPU its outputs equal the saved model's."""
    stored = path if isinstance(path, StoredCheckpoint) else read_checkpoint(path)
    if not is_quantized(stored) or stored.config is None:
        raise CheckpointError(f"{stored.origin} is not an int8 model saved by `crossvit quantize`; "
                              "quantize it first: crossvit quantize CHECKPOINT")
    model = CrossViT(stored.config)
    c, size = stored.config.in_chans, stored.config.img_size
    has_meta = bool(stored.meta.get("name"))
    model.meta = ModelMeta.from_dict(stored.meta) if has_meta else ModelMeta("crossvit_custom", (c, size, size))
    for name, parent, attr, linear in _linears(model):
        prefix = f"{name}."
        try:
            layer = Int8Linear(stored.state[prefix + "weight_int8"], stored.state[prefix + "weight_scale"],
                               stored.state.get(prefix + "bias"), getattr(linear, "activation", None))
        except KeyError as e:
            raise CheckpointError(f"{stored.origin} lacks {e.args[0]}: a truncated or edited int8 model?") from None
        setattr(parent, attr, layer)
    try:
        model.load_state_dict(stored.state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{stored.origin} does not fit its own config: {str(e).splitlines()[0]}") from None
    return model.eval()


def compare_accuracy(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, data: str | None = None,
                     dataset: str | None = None, model_name: str | None = None, batch_size: int = 256,
                     limit: int | None = None) -> tuple[dict, dict]:
    """`evaluate_checkpoint` reports of a checkpoint and of its int8 copy, on the same images: by
    default the data the fp32 checkpoint was trained on (the int8 file does not record it)."""
    from ..inference import evaluate_checkpoint  # which loads int8 files through this module

    with tempfile.TemporaryDirectory() as scratch:  # eval.json and confusion.png are not wanted here
        fp32 = evaluate_checkpoint(str(fp32_path), data, dataset, model_name, batch_size, limit=limit, output=scratch)
        int8 = evaluate_checkpoint(str(int8_path), fp32["path"], fp32["dataset"], None, batch_size, limit=limit,
                                   output=scratch)
    return fp32, int8
