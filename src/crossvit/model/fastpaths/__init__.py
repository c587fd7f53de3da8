"""Every speed path of the model, in one place; the model files use plain layers.

| path | where | when it runs | measured gain |
|---|---|---|---|
| oneDNN fused linear (`Linear`) | linear.py | CPU inference, no tracer, torch has the operators; bf16 where oneDNN computes bf16, fp32 where it pays on this CPU | bf16 1.4-1.5x per layer, fp32 1.05-1.2x (AVX-512) |
| bf16 twin (`bf16_twin`) | twin.py | eval under bf16 autocast, no gradient; CUDA, or a CPU where oneDNN computes bf16 | H200 1.4x timm's img/s; Zen 5 +5-7% |
| explicit attention | attention.py | short sequences on the CPU, one fp32 query on CUDA | 1.5-4x per call |
| attention in blocks | attention.py | CPU bf16 inference with > 4 MiB of logits, where oneDNN computes bf16 | +4-8% whole model |
| folded cross-attention | attention.py | cross-attention on the CPU with plain linear layers | a fraction of the projections |

Every path asks `cpu_support()` (support.py) before it runs and otherwise falls back to plain
PyTorch with the same outputs within the dtype's tolerance. `CROSSVIT_CPU=generic` switches
them all off as on a CPU without native bf16 or oneDNN's operators; `CROSSVIT_CPU=avx2` acts as
an AVX2 CPU (oneDNN in fp32 only).
"""

from .attention import attend, can_fold, folded_cross_attention
from .linear import DerivedCache, Linear, forget_packed_weights, weight_key
from .support import ENV_VAR, CpuSupport, cpu_support, detected, simulate_cpu
from .twin import bf16_twin, forget_bf16_twin, run_in_bf16

__all__ = ["ENV_VAR", "CpuSupport", "DerivedCache", "Linear", "attend", "bf16_twin", "can_fold", "cpu_support",
           "detected", "folded_cross_attention", "forget_bf16_twin", "forget_packed_weights", "run_in_bf16",
           "simulate_cpu", "weight_key"]
