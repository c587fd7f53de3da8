"""CPU speed of int8 dynamic quantization (`crossvit quantize`) against fp32.

Times crossvit_9_240 (random weights: the speed does not depend on them) at batch 32 on 2
threads, the models taking turns round by round so that a busy spell of a shared machine hits
them alike, and prints img/s (min and median) and the speed-up; the issue's target is 1.8x.

--alternatives also times the two other int8 routes that torch 2.14 offers without
torch.compile, which we measured slower than fp32 and so did not take: torchao's
Int8DynamicActivationInt8WeightConfig (if torchao is installed) and int8 matrix products
(`torch._int_mm`) with the activation quantization written out in PyTorch.

    python benchmarks/quantize_speed.py [--model crossvit_9_240] [--batch-size 32] [--rounds 10] [--alternatives]
"""

from __future__ import annotations

import argparse
import copy
from typing import Callable

import torch
from torch import Tensor, nn

import crossvit
from crossvit.analysis.benchmark import compare_speed, format_speeds
from crossvit.deploy.export import random_images
from crossvit.deploy.quantize import quantize_model


class IntMatmulLinear(nn.Module):
    """int8 x int8 -> int32 products, with per-row activation scales computed in plain PyTorch."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.scale = weight.abs().amax(1).clamp(min=1e-12) / 127
        self.weight_t = (weight / self.scale[:, None]).round().to(torch.int8).t().contiguous()
        self.bias = linear.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        x_scale = rows.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        products = torch._int_mm((rows / x_scale).round().to(torch.int8), self.weight_t)
        return torch.addcmul(self.bias, products, x_scale * self.scale).reshape(*x.shape[:-1], -1)


class Called(nn.Module):
    """Calls the layer it holds: hides a torchao Linear from the model's fused fp32 path, which
    takes any plain nn.Linear's weight straight to oneDNN."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for attr, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, attr, make(child))
    return model


def alternatives(model: nn.Module) -> dict[str, nn.Module]:
    found = {"int_mm": replace_linears(model, IntMatmulLinear)}
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        print("torchao is not installed: leaving it out")
    else:
        torchao_model = copy.deepcopy(model)
        quantize_(torchao_model, Int8DynamicActivationInt8WeightConfig())
        found["torchao"] = replace_linears(torchao_model, Called)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crossvit_9_240")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alternatives", action="store_true", help="also time torchao and torch._int_mm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = crossvit.create_model(args.model).eval()
    models = {"fp32": model, **(alternatives(model) if args.alternatives else {}), "int8": quantize_model(model)}
    images = random_images(model, args.batch_size)
    with torch.inference_mode():
        reference = model(images)
        for name, candidate in models.items():
            diff = (candidate(images) - reference).abs().max().item()
            print(f"{name:>7}: max |logit difference| from fp32 {diff:.3g}")
    print(f"{args.model}, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}, "
          f"quantized engine {torch.backends.quantized.engine}")
    print(format_speeds(compare_speed(models, images, args.rounds)))


if __name__ == "__main__":
    main()
